"""Sketches and photos -> HED scribble control maps: white lines on black, what the HED ControlNets were trained on.

Both functions return an **RGB** PIL image of exactly the requested ``size`` (width, height), every pixel 0 or
255 and the three channels equal: the ControlNet pipeline VAE-encodes a 3-channel image, so the map is handed
over ready to use (the single-channel map costs well under a millisecond to expand). They take clean values (a
PIL image, a thickness and size in range): the boundary (``sprint_demo.inputs``, ``Engine.photo_to_control_map``)
checks them once. ``to_rgb`` is the one conversion of any PIL mode to RGB, shared with the input decoding.

The recipe is NVlabs' scribble map (``get_scribble_map`` in ``tools/controlnet/utils.py``, called by
``app/sana_controlnet_pipeline.py`` for the HED demo ``app/app_sana_controlnet_hed.py``; read, not copied: this
is our own code). NVlabs sends drawn sketches and uploads alike through it: soft HED edges at the run size's short
side -> thin-line non-maximum suppression (``settings.HED_NMS_THRESHOLD``, ``settings.HED_NMS_SIGMA``) -> Gaussian
blur (sigma ``settings.CONTROL_BLUR_SIGMA``) -> values above ``settings.CONTROL_BLUR_THRESHOLD`` become 255 ->
thickness ``t`` (``_thickness``): 0 erodes with a 4x4 square, 1 leaves the lines as they are, t > 1 dilates with a
``t // 2`` square (so 2 and 3 change nothing and 4 dilates by a 2x2 square). The thin lines come out 11-13 px
across at any frame size (a 1-2 px ridge spread by the blur), whatever the width of what was drawn.

Sketch path (``sketch_to_control_map``, milliseconds at 1024 px): pixels darker than ``settings.SKETCH_INK_LEVEL``
are ink. No HED net runs (seconds on a CPU, and it need not be there): the thin-line step takes each stroke's centre
line directly, the ridge of the ink's distance to the paper (``_centre_lines``). That is what HED followed by the
NMS gives for a pen stroke, a ridge one or two pixels wide along its middle, and it holds for every brush width;
the NMS's value threshold (127 on HED's soft scale) has nothing to select on binary ink, where it would drop every
stroke narrower than about 5 px. Then blur, threshold and thickness as above. One difference remains: HED
outlines a stroke much wider than its own blur (its two sides become two lines), where this path draws one line
along the middle. A blank sketch (or ``None``) gives an all-black map. A sketch whose aspect ratio differs from
``size`` (only an API caller can send one: the canvas sends the frame's own size) is **letterboxed**: scaled to
fit inside ``size`` and centred, the margins black (= "no line here"), so nothing drawn is cut off; everything
runs at the output resolution, so line widths are in output pixels whatever the input size.

Photo path (``photo_to_control_map``): the photo is brought to ``size`` (centre-cropped to its aspect ratio, a few
pixels when ``size`` comes from ``inputs.fit_size``, then resized: the frame runs at the photo's own aspect ratio,
as NVlabs runs it), an edge detector gives the lines at that size, then the same finishing steps.
``load_hed_detector()`` picks the detector once per process (``settings.HED_DETECTOR``):

* ``"hed"`` detector: ``controlnet_aux.hed.HEDdetector.from_pretrained(settings.HED_ANNOTATOR_ID)`` (a hub repo
  or a local folder holding ``settings.HED_ANNOTATOR_FILE``), run with the frame's short side as its detect
  resolution (rounded to a multiple of 64, as the annotator does); its soft edges go through the NMS.
* ``"classical"`` detector, the offline stand-in that needs no weights: Canny on a bilateral-filtered grey
  image, thresholds set from the image's own gradient statistics. Canny already thins its lines (its own
  non-maximum suppression plus hysteresis), so the HED NMS step is skipped for it (blurring a 1-pixel line
  with sigma 3 drops its peak to ~34, below the NMS threshold of 127, and would erase every edge). Its maps are
  not HED scribbles: ``ClassicalEdgeDetector.reason`` says why it is in use, and the engine tells the user
  whenever it makes a map for a model other than the preview (``Engine.edges_fallback``).

``settings.HED_DETECTOR = "auto"`` (the default) uses HED when its weights are on disk or the hub answers, and
otherwise falls back to the classical detector with a logged warning; ``"hed"`` raises when HED cannot load.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import socket
import sys
import threading
from typing import Protocol
from urllib.parse import urlparse

import cv2
import numpy as np
from PIL import Image, ImageOps

from . import settings

logger = logging.getLogger(__name__)

__all__ = ["ClassicalEdgeDetector", "EdgeDetector", "HedEdgeDetector", "load_hed_detector", "photo_to_control_map",
           "sketch_to_control_map", "to_rgb"]


# --- Shared steps -----------------------------------------------------------------------------------------
def _letterbox(src_w: int, src_h: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Fit (src_w, src_h) inside size keeping the aspect ratio -> (content_w, content_h, left, top)."""
    out_w, out_h = size
    scale = min(out_w / src_w, out_h / src_h)
    content_w = min(out_w, max(1, round(src_w * scale)))
    content_h = min(out_h, max(1, round(src_h * scale)))
    return content_w, content_h, (out_w - content_w) // 2, (out_h - content_h) // 2


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    if array.shape[1] == width and array.shape[0] == height:
        return array
    shrinking = width * height < array.shape[0] * array.shape[1]
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _thickness(binary: np.ndarray, thickness: int) -> np.ndarray:
    """NVlabs' thickness step on a 0/255 line map: 0 erodes with a 4x4 square, 1 keeps it, t > 1 dilates with a
    ``t // 2`` square (OpenCV's default anchor, the kernel's centre, as there)."""
    if thickness == 0:
        return cv2.erode(binary, np.ones((4, 4), np.uint8))
    side = thickness // 2
    return cv2.dilate(binary, np.ones((side, side), np.uint8)) if side > 1 else binary


def _finish(lines: np.ndarray, thickness: int) -> np.ndarray:
    """Thin white lines (H, W) uint8 -> blur, threshold (> CONTROL_BLUR_THRESHOLD -> 255), thickness.

    Only the bounding box of the lines plus a margin wider than the blur kernel and the dilation is filtered:
    everything farther away stays 0 anyway, and inside the margin only zeros get reflected at the box edge, so
    the result equals filtering the whole frame (a typical sketch covers a fraction of the canvas)."""
    out = np.zeros_like(lines)
    x, y, w, h = cv2.boundingRect(lines)  # box around the nonzero pixels
    if w == 0 or h == 0:
        return out
    sigma = settings.CONTROL_BLUR_SIGMA
    margin = int(np.ceil(4 * sigma)) + thickness + 4  # > the blur kernel radius (3 sigma for 8-bit) + dilation
    top, left = max(0, y - margin), max(0, x - margin)
    bottom, right = min(lines.shape[0], y + h + margin), min(lines.shape[1], x + w + margin)
    blurred = cv2.GaussianBlur(lines[top:bottom, left:right], (0, 0), sigma)
    _, binary = cv2.threshold(blurred, settings.CONTROL_BLUR_THRESHOLD, 255, cv2.THRESH_BINARY)  # > thr -> 255
    out[top:bottom, left:right] = _thickness(binary, thickness)
    return out


# the four directions the thin-line NMS looks along: (before, after) neighbour offsets (dy, dx)
_DIRECTIONS = (((0, -1), (0, 1)), ((-1, 0), (1, 0)), ((-1, -1), (1, 1)), ((-1, 1), (1, -1)))


def _ridge(values: np.ndarray, where: np.ndarray, quantum: float | None = None) -> np.ndarray:
    """The pixels of ``where`` (H, W, nonzero = a candidate) at which ``values`` (H, W) is a maximum along at least
    one of the four directions (horizontal, vertical, two diagonals) and strictly above one of the two neighbours
    there -> (H, W) uint8 0/255. The outermost pixels must not be candidates (callers pad the maps by one pixel),
    so every candidate has its eight neighbours. Only the candidates are looked at (a sketch's ink is a few
    percent of the frame). ``quantum``: values are compared rounded to multiples of it."""
    out = np.zeros(values.shape, dtype=np.uint8)
    points = cv2.findNonZero(where)  # x, y of each candidate; None when there are none
    if points is None:
        return out
    points = points.reshape(-1, 2)
    width = values.shape[1]
    flat = values.ravel()
    at = points[:, 1].astype(np.intp) * width + points[:, 0]  # flat index of each candidate

    def look(offset: int) -> np.ndarray:
        found = flat[at + offset]
        return found if quantum is None else np.round(found / quantum)

    centre = look(0)
    ridge = np.zeros(len(at), dtype=bool)
    for (ay, ax), (by, bx) in _DIRECTIONS:
        before, after = look(ay * width + ax), look(by * width + bx)
        ridge |= (centre >= before) & (centre >= after) & ((centre > before) | (centre > after))
    out.ravel()[at[ridge]] = 255
    return out


def _thin_line_nms(soft: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    """Soft edges (H, W) uint8 -> 1-pixel ridges (0/255): keep a pixel of the blurred map that is a maximum
    along at least one of the four directions (horizontal, vertical, two diagonals) and above `threshold`.

    Same idea as controlnet-aux / NVlabs ``util.nms`` (four line-shaped dilations compared with ``==``), written
    here with neighbour look-ups, with one change: the pixel must also be strictly above one of the two
    neighbours. With ``==`` alone, every pixel of a straight axis-aligned band counts as a "maximum" along the
    band (its neighbours there are equal), so such a band came through whole instead of as a thin line. On real
    HED maps, whose values vary along each line, the two versions agree almost everywhere. The image edge repeats
    itself (the border pixels' missing neighbours equal them)."""
    blurred = cv2.GaussianBlur(soft.astype(np.float32), (0, 0), sigma)
    padded = cv2.copyMakeBorder(blurred, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    above = np.zeros(padded.shape, dtype=np.uint8)
    above[1:-1, 1:-1] = blurred > threshold
    return _ridge(padded, above)[1:-1, 1:-1]


def _centre_lines(ink: np.ndarray) -> np.ndarray:
    """Ink (H, W) 0/255 -> the centre line of every stroke (0/255), by the thin-line NMS with the ink's distance to
    the paper as the soft edge map: that distance blurred as the NMS blurs (``settings.HED_NMS_SIGMA``), and the ink
    pixels at which it is a ridge (``_ridge``). A stroke of any width becomes a line one or two pixels wide along its
    middle, as HED and the NMS make of a pen stroke, and it ends where the ink ends. Where the NMS keeps values
    above a threshold, this keeps pixels on or next to the ink: the ink is certain, and HED's threshold (127 on its
    soft scale) has nothing to select here (next to: a one-pixel stroke's ridge may be two pixels wide, as a wider
    stroke's is). The distance rises towards the middle of a stroke of any width (blurred ink alone goes
    flat across strokes wider than the blur, and the ridge is lost there); the blur smooths the steps a pixel grid
    leaves in it, which would otherwise make ridges beside the middle. Computed on the ink's bounding box with two
    pixels of paper around it, the blur taking paper beyond it: the same as on the whole frame, where beyond the
    frame's edge counts as paper (a ridge pixel next to the ink but beyond the frame's edge is dropped)."""
    out = np.zeros_like(ink)
    x, y, w, h = cv2.boundingRect(ink)
    if w == 0 or h == 0:
        return out
    box = cv2.copyMakeBorder(ink[y:y + h, x:x + w], 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=0)
    distance = cv2.distanceTransform(box, cv2.DIST_L2, cv2.DIST_MASK_3)  # 0 on paper, rising towards the middle
    soft = cv2.GaussianBlur(distance, (0, 0), settings.HED_NMS_SIGMA, borderType=cv2.BORDER_CONSTANT)  # paper
    near_ink = cv2.dilate(box, np.ones((3, 3), np.uint8))  # inside the box's paper ring, off its edge
    # compared in steps of 1/1024 px: a stroke's two middle rows tie exactly, not by the last float bit (which moves
    # with the box's size and made the ridge differ between the box and the whole frame)
    ridge = _ridge(soft, near_ink, quantum=1 / 1024)  # box row / column i is the frame's y - 2 + i / x - 2 + i
    top, left = max(0, y - 1), max(0, x - 1)
    bottom, right = min(ink.shape[0], y + h + 1), min(ink.shape[1], x + w + 1)
    out[top:bottom, left:right] = ridge[top - y + 2:bottom - y + 2, left - x + 2:right - x + 2]
    return out


def _to_map(lines: np.ndarray | None, size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """Place the content-sized line map in a black frame of `size` -> RGB PIL image."""
    out_w, out_h = size
    frame = np.zeros((out_h, out_w), dtype=np.uint8)
    if lines is not None:
        content_w, content_h, left, top = box
        frame[top: top + content_h, left: left + content_w] = lines
    grey = Image.fromarray(frame, "L")
    return Image.merge("RGB", (grey, grey, grey))  # the cheapest way to 3 equal channels (< 1 ms at 1024 px)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: transparency composited on white, 16/32-bit grey scaled (not clipped) to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # PIL's convert("L") clips these at 255 instead of scaling. PNG/TIFF decoders give 16-bit grey as
        # I;16 or I with values 0..65535, so 65535 is white for both.
        grey = np.asarray(image, dtype=np.float64).clip(0, 65535) / 257.0
        return Image.fromarray(np.round(grey).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        grey = np.nan_to_num(np.asarray(image, dtype=np.float64)).clip(0, 255)  # float greys are 0..255 in PIL
        return Image.fromarray(np.round(grey).astype(np.uint8), "L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "L", "RGB", "1") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema() == (255, 255):  # opaque (a browser canvas's PNG): nothing to composite
            return rgba.convert("RGB")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


# --- Sketches ---------------------------------------------------------------------------------------------
def sketch_to_control_map(sketch: Image.Image | None, thickness: int, size: tuple[int, int]) -> Image.Image:
    """Dark strokes on light paper -> white lines on black, RGB, exactly `size` (width, height); see module doc."""
    if sketch is None:
        return _to_map(None, size, (0, 0, 0, 0))
    grey = np.asarray(to_rgb(sketch).convert("L"))  # (H, W) uint8, transparent = white
    box = _letterbox(grey.shape[1], grey.shape[0], size)
    # ink (grey < SKETCH_INK_LEVEL) -> 255, paper -> 0: THRESH_BINARY_INV sends values > thr to 0. Thresholded
    # before resizing: shrinking first would average a thin stroke into grey paper and lose it.
    _, ink = cv2.threshold(grey, settings.SKETCH_INK_LEVEL - 1, 255, cv2.THRESH_BINARY_INV)
    if (box[0], box[1]) != (ink.shape[1], ink.shape[0]):
        shrinking = box[0] * box[1] < ink.size
        ink = _resize(ink, box[0], box[1])
        # shrinking: any ink in a pixel's area keeps it (strokes stay connected); enlarging: the smooth outline
        _, ink = cv2.threshold(ink, 0 if shrinking else 127, 255, cv2.THRESH_BINARY)
    return _to_map(_finish(_centre_lines(ink), thickness), size, box)


# --- Photos -----------------------------------------------------------------------------------------------
class EdgeDetector(Protocol):
    name: str  # shown in logs / the UI: which detector made the map
    needs_nms: bool  # True for soft edge maps (HED), False when the detector already gives thin binary lines

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) uint8 edge map (soft or binary), same size."""
        ...

    def to(self, device) -> EdgeDetector:
        """Run on ``device`` (the engine's); a detector without a network ignores it."""
        ...


class ClassicalEdgeDetector:
    """Offline stand-in without weights: Canny on a bilateral-filtered grey image, automatic thresholds.
    ``reason``: why it is in use instead of HED (chosen, or HED could not load)."""

    name = "classical (Canny, offline fallback)"
    needs_nms = False

    def __init__(self, reason: str = "chosen by SPRINT_HED_DETECTOR=classical") -> None:
        self.reason = reason
    # Tuning constants of the algorithm (not user settings). Gradients are Sobel 3x3 L2 magnitudes of 8-bit
    # grey (0..~1440); a 10-level step edge gives ~40.
    EDGE_PERCENTILE = 90  # the strongest 10% of gradients seed edges ...
    MIN_HIGH, MAX_HIGH = 40.0, 400.0  # ... within these bounds (flat images: no noise edges; busy: some edges)
    LOW_RATIO = 0.5  # hysteresis: weaker pixels join an edge connected to a strong one

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        smooth = cv2.bilateralFilter(grey, 7, 50, 5)  # flattens texture and noise, keeps object outlines
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
        magnitude = cv2.magnitude(gx, gy)
        high = float(np.clip(np.percentile(magnitude[::2, ::2], self.EDGE_PERCENTILE), self.MIN_HIGH, self.MAX_HIGH))
        return cv2.Canny(smooth, self.LOW_RATIO * high, high, L2gradient=True)

    def to(self, device) -> ClassicalEdgeDetector:
        return self  # OpenCV on the host: nothing to move

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class HedEdgeDetector:
    """Soft HED edges from controlnet-aux's ``ControlNetHED_Apache2`` network (RGB input, 0..255)."""

    name = "hed"
    needs_nms = True

    def __init__(self, net: object, source: str = "") -> None:
        self.net = net  # a ControlNetHED_Apache2 module
        self.source = source  # where the weights came from, for logs

    def to(self, device) -> HedEdgeDetector:
        self.net.to(device)  # a no-op when the net is there already
        return self

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        h, w = rgb.shape[:2]
        # the detect resolution is the frame's short side (NVlabs passes the run size's), each side rounded to a
        # multiple of 64 as the annotator's resize does
        det_h, det_w = (max(64, round(side / 64) * 64) for side in (h, w))
        image = _resize(rgb, det_w, det_h)
        weight = next(self.net.parameters())  # the net may live on a GPU, in half precision
        with torch.inference_mode():
            x = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(weight.device, weight.dtype)
            x = x.permute(2, 0, 1)[None]  # (1, 3, H, W), RGB 0..255: the net subtracts its own mean
            sides = [F.interpolate(p.float(), size=(det_h, det_w), mode="bilinear", align_corners=False)
                     for p in self.net(x)]  # 5 x (1, 1, H, W) side outputs at 1, 1/2 .. 1/16 scale
            edge = torch.sigmoid(torch.cat(sides, dim=1).mean(dim=1))[0]  # (H, W) in 0..1
            soft = (edge * 255.0).clamp(0, 255).to(torch.uint8).cpu().numpy()
        return cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} from {self.source!r}>"


HED_PACKAGE_ALIAS = "_sprint_demo_controlnet_aux"  # controlnet-aux's folder, imported under this name


def _import_hed_module():
    """controlnet-aux's ``hed`` module, without running the package's ``__init__``, which imports all twenty of its
    detectors (seconds of start-up: docs/PERFORMANCE.md, "Importing the HED annotator").

    Python's documented recipe for importing a source file directly (importlib's "Importing a source file
    directly"): the package's folder gets a module spec under a private name, ``HED_PACKAGE_ALIAS``, whose
    ``__init__`` is not executed, registered as that name; ``hed`` and the ``util`` it imports relatively
    (``from ..util import``) then load as its submodules. ``controlnet_aux`` itself is never touched, so a later
    ``import controlnet_aux`` anywhere gets the complete package (tests/test_conditioning.py checks both)."""
    if HED_PACKAGE_ALIAS not in sys.modules:
        found = importlib.util.find_spec("controlnet_aux")
        if found is None or not found.submodule_search_locations:
            raise ImportError("controlnet-aux is not installed")
        alias = importlib.util.spec_from_file_location(
            HED_PACKAGE_ALIAS, found.origin, submodule_search_locations=list(found.submodule_search_locations))
        sys.modules[HED_PACKAGE_ALIAS] = importlib.util.module_from_spec(alias)  # __path__ set, __init__ not run
    return importlib.import_module(f"{HED_PACKAGE_ALIAS}.hed")


def _hub_reachable() -> bool:
    """Whether the hub host accepts a TCP connection (fails in milliseconds offline; downloads retry ~25 s)."""
    if any(os.getenv(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let the download try
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=settings.HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _load_hed() -> HedEdgeDetector:
    """HEDdetector.from_pretrained(settings.HED_ANNOTATOR_ID): a local folder, the hub cache, or a download."""
    source, filename = settings.HED_ANNOTATOR_ID, settings.HED_ANNOTATOR_FILE
    if os.path.isdir(source):
        local_only = True
        if not os.path.isfile(os.path.join(source, filename)):
            raise FileNotFoundError(f"{filename} not found in {source}")
    else:
        from huggingface_hub import try_to_load_from_cache

        local_only = isinstance(try_to_load_from_cache(source, filename), str)
        if not local_only and not _hub_reachable():
            raise ConnectionError(f"the hub is unreachable and {source}/{filename} is not in the local cache")
    hed = _import_hed_module()
    detector = hed.HEDdetector.from_pretrained(source, filename=filename, local_files_only=local_only)
    return HedEdgeDetector(detector.netNetwork, source=f"{source}/{filename}")


_detector_lock = threading.Lock()
_detectors: dict[str, EdgeDetector] = {}


def load_hed_detector(mode: str | None = None) -> EdgeDetector:
    """The photo edge detector for `mode` (default settings.HED_DETECTOR: auto | hed | classical), loaded once
    per process. "auto" falls back to the classical detector, with a warning, when HED weights cannot load."""
    mode = settings.HED_DETECTOR if mode is None else mode
    if mode not in ("auto", "hed", "classical"):
        raise ValueError(f"SPRINT_HED_DETECTOR must be auto, hed or classical, got {mode!r}")
    with _detector_lock:
        if mode not in _detectors:
            if mode == "classical":
                detector: EdgeDetector = ClassicalEdgeDetector()
                logger.info("photo edges: classical Canny detector (chosen by SPRINT_HED_DETECTOR)")
            elif mode == "hed":
                detector = _load_hed()  # no fallback: the operator asked for HED
                logger.info("photo edges: HED from %s", detector.source)
            else:
                try:
                    detector = _load_hed()
                    logger.info("photo edges: HED from %s", detector.source)
                except Exception as error:  # noqa: BLE001 - offline, missing file, bad checkpoint, no package
                    reason = (f"the HED annotator ({settings.HED_ANNOTATOR_ID}/{settings.HED_ANNOTATOR_FILE}) could "
                              f"not load: {type(error).__name__}: {error}")
                    detector = ClassicalEdgeDetector(reason)
                    logger.warning("photo edges: %s; using the classical Canny fallback, which needs no weights",
                                   reason)
            _detectors[mode] = detector
        return _detectors[mode]


def photo_to_control_map(photo: Image.Image, thickness: int, size: tuple[int, int],
                         detector: EdgeDetector | None = None) -> Image.Image:
    """A photo -> edge lines (white on black), RGB, exactly `size` (width, height): the photo centre-cropped to
    that aspect ratio and resized, no letterbox; see module doc."""
    width, height = size
    rgb = np.asarray(ImageOps.fit(to_rgb(photo), size, Image.Resampling.LANCZOS))  # (height, width, 3) uint8
    detector = load_hed_detector() if detector is None else detector
    edges = detector(rgb)  # (height, width) uint8
    if detector.needs_nms:
        edges = _thin_line_nms(edges, settings.HED_NMS_THRESHOLD, settings.HED_NMS_SIGMA)
    return _to_map(_finish(edges, thickness), size, (width, height, 0, 0))
