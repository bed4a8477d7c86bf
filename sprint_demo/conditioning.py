"""Sketches and photos -> HED-style control maps: white lines on black, what HED ControlNets were trained on.

Both functions return an **RGB** PIL image of exactly the requested ``size`` (width, height), every pixel 0 or
255 and the three channels equal: the ControlNet pipeline VAE-encodes a 3-channel image, so the map is handed
over ready to use (the single-channel map costs well under a millisecond to expand). They take clean values (a
PIL image, a thickness and size in range): the boundary (``sprint_demo.inputs``, ``Engine.photo_to_control_map``)
checks them once. ``to_rgb`` is the one conversion of any PIL mode to RGB, shared with the input decoding.

The recipe follows NVlabs ``tools/controlnet/utils.py`` (``get_scribble_map``) and ``app/app_sana_controlnet_hed.py``
(read, not copied; this is our own code): soft edges -> thin-line non-maximum suppression -> Gaussian blur
(sigma ``settings.CONTROL_BLUR_SIGMA``) -> values above ``settings.CONTROL_BLUR_THRESHOLD`` become 255 ->
dilation by thickness. Two deliberate differences:

* Thickness: NVlabs dilates with a ``thickness // 2`` square kernel, so thickness 2 and 3 change nothing. Here
  thickness ``t`` dilates with a (2t-1)-pixel disc: 1 = the bare recipe, and every step up gives strictly
  thicker lines, which is what a slider promises.
* Aspect ratio: when the input's aspect ratio differs from ``size`` it is **letterboxed**: scaled to fit inside
  ``size`` and centred, the margins black (= "no line here", the model fills them freely). Nothing the user
  drew is cut off, which a centre crop would do. All processing happens at the output resolution, so line
  widths are in output pixels whatever the input size.

Sketch path (``sketch_to_control_map``, a few ms at 1024 px): the strokes are already lines, so no detector
runs: pixels darker than ``settings.SKETCH_INK_LEVEL`` are ink, then blur / threshold / dilate as above. A
blank sketch (or ``None``) gives an all-black map.

Photo path (``photo_to_control_map``): an edge detector gives the lines, then the same finishing steps.
``load_hed_detector()`` picks the detector once per process (``settings.HED_DETECTOR``):

* ``"hed"`` detector: ``controlnet_aux.hed.HEDdetector.from_pretrained(settings.HED_ANNOTATOR_ID)`` (a hub repo
  or a local folder holding ``settings.HED_ANNOTATOR_FILE``); its soft edges go through NMS
  (``settings.HED_NMS_THRESHOLD``, ``settings.HED_NMS_SIGMA``) as in NVlabs.
* ``"classical"`` detector, the offline fallback that needs no weights: Canny on a bilateral-filtered grey
  image, thresholds set from the image's own gradient statistics. Canny already thins its lines (its own
  non-maximum suppression plus hysteresis), so the HED NMS step is skipped for it (blurring a 1-pixel line
  with sigma 3 drops its peak to ~34, below the NMS threshold of 127, and would erase every edge).

``settings.HED_DETECTOR = "auto"`` (the default) uses HED when its weights are on disk or the hub answers, and
otherwise falls back to the classical detector with a logged warning; ``detector.name`` says which is active.
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
from PIL import Image

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


def _finish(lines: np.ndarray, thickness: int) -> np.ndarray:
    """Thin white lines (H, W) uint8 -> blur, threshold (> CONTROL_BLUR_THRESHOLD -> 255), dilate by thickness.

    Only the bounding box of the lines plus a margin wider than the blur kernel and the dilation is filtered:
    everything farther away stays 0 anyway, and inside the margin only zeros get reflected at the box edge, so
    the result equals filtering the whole frame (a typical sketch covers a fraction of the canvas)."""
    out = np.zeros_like(lines)
    x, y, w, h = cv2.boundingRect(lines)  # box around the nonzero pixels
    if w == 0 or h == 0:
        return out
    sigma = settings.CONTROL_BLUR_SIGMA
    margin = int(np.ceil(4 * sigma)) + 2 * thickness + 2  # > the blur kernel radius (3 sigma for 8-bit) + dilation
    top, left = max(0, y - margin), max(0, x - margin)
    bottom, right = min(lines.shape[0], y + h + margin), min(lines.shape[1], x + w + margin)
    blurred = cv2.GaussianBlur(lines[top:bottom, left:right], (0, 0), sigma)
    _, binary = cv2.threshold(blurred, settings.CONTROL_BLUR_THRESHOLD, 255, cv2.THRESH_BINARY)  # > thr -> 255
    if thickness > 1:
        side = 2 * thickness - 1  # thickness 2 -> 3 px disc, 4 -> 7 px: strictly thicker per step
        binary = cv2.dilate(binary, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    out[top:bottom, left:right] = binary
    return out


def _thin_line_nms(soft: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    """Soft edges (H, W) uint8 -> 1-pixel ridges (0/255): keep a pixel of the blurred map that is a maximum
    along at least one of the four directions (horizontal, vertical, two diagonals) and above `threshold`.

    Same idea as controlnet-aux / NVlabs ``util.nms`` (four line-shaped dilations compared with ``==``), written
    here with shifted views, with one change: the pixel must also be strictly above one of the two neighbours.
    With ``==`` alone, every pixel of a straight axis-aligned band counts as a "maximum" along the band (its
    neighbours there are equal), so such a band came through whole instead of as a thin line. On real HED maps,
    whose values vary along each line, the two versions agree almost everywhere."""
    blurred = cv2.GaussianBlur(soft.astype(np.float32), (0, 0), sigma)
    padded = np.pad(blurred, 1, mode="edge")
    h, w = blurred.shape

    def view(dy: int, dx: int) -> np.ndarray:  # the neighbour at (dy, dx) of every pixel, (H, W)
        return padded[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]

    ridge = np.zeros((h, w), dtype=bool)
    for (ay, ax), (by, bx) in (((0, -1), (0, 1)), ((-1, 0), (1, 0)), ((-1, -1), (1, 1)), ((-1, 1), (1, -1))):
        before, after = view(ay, ax), view(by, bx)
        ridge |= (blurred >= before) & (blurred >= after) & ((blurred > before) | (blurred > after))
    return np.where(ridge & (blurred > threshold), 255, 0).astype(np.uint8)


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
    return _to_map(_finish(ink, thickness), size, box)


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
    """Offline fallback without weights: Canny on a bilateral-filtered grey image, automatic thresholds."""

    name = "classical (Canny, offline fallback)"
    needs_nms = False
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
        # short side to HED_DETECT_RESOLUTION (multiples of 64, as controlnet-aux does), without blowing a long
        # thin image up past max(resolution, its own long side)
        res = settings.HED_DETECT_RESOLUTION
        scale = min(res / min(h, w), max(res, h, w) / max(h, w))
        det_h, det_w = (max(64, round(side * scale / 64) * 64) for side in (h, w))
        image = _resize(rgb, det_w, det_h)
        weight = next(self.net.parameters())  # the net may live on a GPU, in half precision
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image)).to(weight.device, weight.dtype)
            x = x.permute(2, 0, 1)[None]  # (1, 3, H, W), RGB 0..255: the net subtracts its own mean
            sides = [F.interpolate(p.float(), size=(det_h, det_w), mode="bilinear", align_corners=False)
                     for p in self.net(x)]  # 5 x (1, 1, H, W) side outputs at 1, 1/2 .. 1/16 scale
            edge = torch.sigmoid(torch.cat(sides, dim=1).mean(dim=1))[0]  # (H, W) in 0..1
            soft = (edge * 255.0).clamp(0, 255).to(torch.uint8).cpu().numpy()
        return cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} from {self.source!r}>"


def _import_hed_module():
    """Import ``controlnet_aux.hed`` without running ``controlnet_aux/__init__.py``.

    Importing a submodule normally runs its package's ``__init__`` first, and controlnet-aux's imports all
    twenty detectors (about 20 s on 2 cores, versus ~7 s for torch + hed). When the package is not imported yet,
    a bare package module (its __init__ not executed) stands in while ``hed`` and ``util`` load, and is removed
    again afterwards, so a later ``import controlnet_aux`` elsewhere gets the complete package.
    """
    if "controlnet_aux" in sys.modules:
        return importlib.import_module("controlnet_aux.hed")
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None:
        raise ImportError("controlnet-aux is not installed")
    stub = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    sys.modules["controlnet_aux"] = stub
    try:
        return importlib.import_module("controlnet_aux.hed")
    finally:
        for name in ("controlnet_aux.hed", "controlnet_aux.util", "controlnet_aux"):
            sys.modules.pop(name, None)


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
                    detector = ClassicalEdgeDetector()
                    logger.warning("photo edges: HED weights (%s/%s) unavailable (%s: %s); using the classical "
                                   "Canny fallback, which needs no weights", settings.HED_ANNOTATOR_ID,
                                   settings.HED_ANNOTATOR_FILE, type(error).__name__, error)
            _detectors[mode] = detector
        return _detectors[mode]


def photo_to_control_map(photo: Image.Image, thickness: int, size: tuple[int, int],
                         detector: EdgeDetector | None = None) -> Image.Image:
    """A photo -> edge lines (white on black), RGB, exactly `size` (width, height), letterboxed; see module doc."""
    rgb = np.asarray(to_rgb(photo))  # (H, W, 3) uint8
    detector = load_hed_detector() if detector is None else detector
    box = _letterbox(rgb.shape[1], rgb.shape[0], size)
    rgb = _resize(rgb, box[0], box[1])
    edges = detector(rgb)  # (h, w) uint8 at the content size
    if detector.needs_nms:
        edges = _thin_line_nms(edges, settings.HED_NMS_THRESHOLD, settings.HED_NMS_SIGMA)
    return _to_map(_finish(edges, thickness), size, box)
