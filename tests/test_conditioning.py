"""sprint_demo.conditioning: control maps from sketches and photos, and the example assets."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from sprint_demo import conditioning, settings, sketches
from sprint_demo.conditioning import photo_to_control_map, sketch_to_control_map
from sprint_demo.inputs import clean_prompt, decode_image, fit_size, is_blank

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BLUR_REACH = 9  # OpenCV's 8-bit Gaussian kernel for sigma 3 has radius 9: nothing spreads farther


def white_canvas(size=(1024, 1024)) -> Image.Image:
    return Image.new("RGB", size, "white")


def mask(image: Image.Image) -> np.ndarray:
    """RGB control map -> (H, W) bool of white pixels, after checking it is binary with equal channels."""
    array = np.asarray(image)
    assert image.mode == "RGB" and array.ndim == 3
    assert set(np.unique(array).tolist()) <= {0, 255}
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])
    return array[..., 0] == 255


@pytest.fixture
def stroke_sketch() -> tuple[Image.Image, np.ndarray]:
    """A 3-pixel black horizontal stroke on white, and its (H, W) bool mask."""
    sketch = white_canvas()
    sketch.paste((0, 0, 0), (300, 500, 700, 503))
    return sketch, np.asarray(sketch)[..., 0] < 128


@pytest.fixture
def classical(monkeypatch) -> conditioning.EdgeDetector:
    return conditioning.ClassicalEdgeDetector()


# --- sketch_to_control_map ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1024, 1024), (512, 768), (768, 512), (256, 256), (2048, 256)])
def test_sketch_map_size_and_mode(size, stroke_sketch):
    out = sketch_to_control_map(stroke_sketch[0], 2, size)
    assert out.size == size
    assert mask(out).any()


@pytest.mark.parametrize("blank", [None, white_canvas(), Image.new("RGBA", (800, 600), (0, 0, 0, 0)),
                                   Image.new("L", (300, 900), 250)])
def test_blank_sketch_gives_all_black(blank):
    out = sketch_to_control_map(blank, 4, (512, 512))
    assert out.size == (512, 512) and not np.asarray(out).any()


def test_jpeg_noise_and_specks_give_all_black():
    noisy = np.full((512, 512, 3), 248, np.uint8)
    noisy += np.random.default_rng(0).integers(0, 8, noisy.shape, np.uint8)
    assert not np.asarray(sketch_to_control_map(Image.fromarray(noisy), 2, (512, 512))).any()


# --- NVlabs' recipe, written here with plain OpenCV calls (NVlabs tools/controlnet/utils.py get_scribble_map and
# the annotator's nms), as the reference the app's maps are measured against ------------------------------------
def nvlabs_nms(soft: np.ndarray, threshold: int, sigma: float) -> np.ndarray:
    """The annotator's thin-line NMS: a pixel of the blurred map equal to its dilation along any of four lines."""
    blurred = cv2.GaussianBlur(soft.astype(np.float32), (0, 0), sigma)
    kept = np.zeros_like(blurred)
    for kernel in ([[0, 0, 0], [1, 1, 1], [0, 0, 0]], [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
                   [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0], [1, 0, 0]]):
        np.putmask(kept, cv2.dilate(blurred, np.array(kernel, np.uint8)) == blurred, blurred)
    return np.where(kept > threshold, 255, 0).astype(np.uint8)


def nvlabs_scribble(soft: np.ndarray, thickness: int) -> np.ndarray:
    """get_scribble_map after its detector: nms(map, 127, 3.0), blur sigma 3, > 4 -> 255, then the thickness."""
    lines = cv2.GaussianBlur(nvlabs_nms(soft, 127, 3.0), (0, 0), 3.0)
    lines = np.where(lines > 4, 255, 0).astype(np.uint8)
    if thickness == 0:
        return cv2.erode(lines, np.ones((4, 4), np.uint8))
    if thickness > 1:
        return cv2.dilate(lines, np.ones((thickness // 2, thickness // 2), np.uint8))
    return lines


def old_disc_map(ink: np.ndarray, thickness: int) -> np.ndarray:
    """What this app made of a sketch before: the ink blurred and thresholded, no thinning, then a (2t-1) disc."""
    lines = np.where(cv2.GaussianBlur(ink, (0, 0), 3.0) > 4, 255, 0).astype(np.uint8)
    side = 2 * thickness - 1
    return cv2.dilate(lines, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))) if thickness > 1 else lines


def ink_of(sketch: Image.Image) -> np.ndarray:
    return np.where(np.asarray(sketch.convert("L")) < settings.SKETCH_INK_LEVEL, 255, 0).astype(np.uint8)


def line_width(white: np.ndarray, columns: slice) -> float:
    """The median run length of white pixels down each column in ``columns`` that crosses the line once: the
    line's width measured across a mostly horizontal stroke."""
    runs = [len(rows) for rows in (np.flatnonzero(column) for column in white[:, columns].T)
            if len(rows) and rows[-1] - rows[0] + 1 == len(rows)]
    assert len(runs) > 100
    return float(np.median(runs))


def drawn_line(width: int) -> Image.Image:
    """``sketches.stroke_sketch(1024, 1)``'s stroke (a straight line at 34 degrees) drawn with the given width."""
    sketch = white_canvas()
    ImageDraw.Draw(sketch).line([(0, 341), (512, 0)], fill="black", width=width)
    return sketch


MIDDLE = slice(100, 400)  # columns away from both ends of that stroke


@pytest.mark.parametrize("thickness", [1, 2, 3, 4])
def test_a_drawn_stroke_s_lines_are_as_wide_as_nvlabs_recipe_makes_them(thickness):
    """The typical stroke drawing's stroke (``stroke_sketch``, 8 px wide at 1024), its map measured across the line
    against NVlabs' recipe on the same stroke. The stroke's ink stands in for HED's soft edges in the reference:
    at 8 px it is wide enough for the NMS's threshold of 127 (its blurred peak is ~209), and it is tilted, so that
    the annotator's equality test does not keep a whole band (it would on an axis-aligned one)."""
    sketch = sketches.stroke_sketch(1024, 1)
    reference = line_width(nvlabs_scribble(ink_of(sketch), thickness) > 0, MIDDLE)
    ours = line_width(mask(sketch_to_control_map(sketch, thickness, (1024, 1024))), MIDDLE)
    assert abs(ours - reference) <= 1, (ours, reference)
    assert 14 <= reference <= 18  # ~13 px across the line (11 down a column of a horizontal one), 16-17 down a column


@pytest.mark.parametrize("thickness", [1, 2, 3, 4])
def test_the_old_disc_dilation_fails_that_comparison(thickness):
    """The map this app made before (no thinning, a (2t-1) disc) is wider than NVlabs' by far more than a pixel."""
    sketch = sketches.stroke_sketch(1024, 1)
    reference = line_width(nvlabs_scribble(ink_of(sketch), thickness) > 0, MIDDLE)
    old = line_width(old_disc_map(ink_of(sketch), thickness) > 0, MIDDLE)
    assert old - reference > 4, (old, reference)


def test_the_line_width_does_not_depend_on_the_brush():
    """HED and the NMS make a 1-2 px ridge of a pen stroke whatever its width, so the map's lines are as wide for a
    fine brush as for a broad one; the reference agrees where the ink is wide enough for its threshold."""
    widths = {brush: line_width(mask(sketch_to_control_map(drawn_line(brush), 1, (1024, 1024))), MIDDLE)
              for brush in (1, 2, 4, 8, 16, 32)}
    assert max(widths.values()) - min(widths.values()) <= 1, widths
    for brush in (8, 16):
        assert abs(widths[brush] - line_width(nvlabs_scribble(ink_of(drawn_line(brush)), 1) > 0, MIDDLE)) <= 1
    # a thin stroke's blurred ink peaks under the NMS's 127: the recipe on bare ink drops it, where HED would not
    assert not nvlabs_scribble(ink_of(drawn_line(2)), 1).any()


def test_thickness_is_nvlabs_half_thickness_square():
    """1, 2 and 3 give the same map (a ``t // 2`` square of side 1 changes nothing); 4 dilates it by a 2x2 square;
    0 (NVlabs' training range starts there) erodes with a 4x4 square."""
    sketch = sketches.stroke_sketch(1024, 3)
    maps = {t: np.asarray(sketch_to_control_map(sketch, t, (1024, 1024)))[..., 0]
            for t in range(settings.MIN_THICKNESS, settings.MAX_THICKNESS + 1)}
    assert (settings.MIN_THICKNESS, settings.DEFAULT_THICKNESS, settings.MAX_THICKNESS) == (1, 2, 4)  # NVlabs' demo
    assert np.array_equal(maps[1], maps[2]) and np.array_equal(maps[1], maps[3])
    assert np.array_equal(maps[4], cv2.dilate(maps[1], np.ones((2, 2), np.uint8)))
    lines = conditioning._centre_lines(ink_of(sketch))
    assert np.array_equal(conditioning._finish(lines, 1), maps[1])
    assert np.array_equal(conditioning._finish(lines, 0), cv2.erode(maps[1], np.ones((4, 4), np.uint8)))


def test_single_stroke_is_a_band_around_its_middle(stroke_sketch):
    """A 3 px horizontal stroke (rows 500-502): its middle row, spread by the blur to 11 rows, at every thickness
    up to 3 (4: one row more), and nothing beyond the blur's reach of the stroke."""
    sketch, stroke = stroke_sketch
    for thickness, rows in ((1, (496, 506)), (3, (496, 506)), (4, (496, 507))):
        white = mask(sketch_to_control_map(sketch, thickness, (1024, 1024)))
        assert (np.flatnonzero(white[:, 500])[[0, -1]] == rows).all()
        assert white[rows[0]:rows[1] + 1, 320:680].all()
        distance = cv2.distanceTransform((~stroke).astype(np.uint8), cv2.DIST_L2, 5)
        assert not white[distance > BLUR_REACH + 1].any()


def test_centre_lines_of_strokes():
    """The thinning step alone: a stroke's middle row (two rows for an even width), ending where the ink ends."""
    ink = np.zeros((64, 200), np.uint8)
    ink[10:15, 20:180] = 255  # 5 px: one middle row
    ink[40:44, 20:180] = 255  # 4 px: two middle rows
    lines = conditioning._centre_lines(ink) > 0
    middle = lines[:, 40:160]
    assert np.flatnonzero(middle.any(axis=1)).tolist() == [12, 41, 42] and middle[[12, 41, 42]].all()
    assert not lines[cv2.dilate(ink, np.ones((3, 3), np.uint8)) == 0].any()  # on the ink or next to it
    assert not conditioning._centre_lines(np.zeros((8, 8), np.uint8)).any()


def test_light_grey_and_transparent_pixels_are_paper():
    sketch = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    sketch.paste((200, 200, 200, 255), (0, 0, 512, 100))  # light grey: lighter than SKETCH_INK_LEVEL
    assert not np.asarray(sketch_to_control_map(sketch, 2, (512, 512))).any()
    sketch.paste((0, 0, 0, 255), (100, 300, 400, 303))
    assert mask(sketch_to_control_map(sketch, 2, (512, 512)))[301, 250]


def test_a_sketch_of_another_aspect_ratio_is_letterboxed_not_stretched():
    """Only an API caller can send one (the canvas sends the frame's size): it fits inside the frame, centred."""
    wide = Image.new("L", (2048, 1024), 255)
    wide.paste(0, (0, 508, 2048, 516))  # a line across the middle of a 2:1 sketch
    white = mask(sketch_to_control_map(wide, 1, (1024, 1024)))
    rows = np.flatnonzero(white.any(axis=1))
    assert 490 < rows[0] and rows[-1] < 530 and abs((rows[0] + rows[-1]) / 2 - 511.5) <= 1  # content 1024x512
    assert white[:, 8:1016].any(axis=0).all()  # across the whole width: scaled, not cropped
    tall = Image.new("L", (100, 400), 255)
    tall.paste(0, (45, 0, 55, 400))  # a vertical bar down the middle of a 1:4 sketch
    white = mask(sketch_to_control_map(tall, 1, (512, 512)))
    columns = np.flatnonzero(white.any(axis=0))
    assert columns.min() > 192 and columns.max() < 320  # content is 128 px wide, centred at 256
    assert white[8:504].any(axis=1).all()


def test_tiny_and_extreme_inputs():
    dot = Image.new("L", (1, 1), 0)  # one ink pixel scaled to the whole frame: a filled square, thinned
    white = mask(sketch_to_control_map(dot, 1, (256, 256)))
    assert white[128, 128] and white.mean() < 0.5
    strip = Image.new("L", (4096, 64), 255)
    strip.paste(0, (0, 30, 4096, 34))
    out = mask(sketch_to_control_map(strip, 2, (1024, 1024)))
    assert out.any() and not out[:400].any() and not out[-400:].any()


def test_deterministic(stroke_sketch):
    a = sketch_to_control_map(stroke_sketch[0], 3, (768, 512))
    b = sketch_to_control_map(stroke_sketch[0].copy(), 3, (768, 512))
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_only_the_strokes_box_is_filtered_and_the_map_is_the_whole_frame_recipe(monkeypatch):
    """What keeps a 1024 px sketch map cheap: the thinning and the blur run on the strokes' bounding box (plus a
    margin), not on the frame, and the result is still exactly the recipe applied to the whole frame."""
    sketch = white_canvas()
    sketch.paste((0, 0, 0), (100, 120, 160, 124))  # a short stroke near a corner
    shapes = []
    real_blur, real_distance = cv2.GaussianBlur, cv2.distanceTransform
    monkeypatch.setattr(cv2, "GaussianBlur", lambda src, *a, **k: shapes.append(src.shape) or real_blur(src, *a, **k))
    monkeypatch.setattr(cv2, "distanceTransform",
                        lambda src, *a, **k: shapes.append(src.shape) or real_distance(src, *a, **k))
    out = np.asarray(sketch_to_control_map(sketch, 4, (1024, 1024)))[..., 0]
    assert len(shapes) == 3 and all(h * w < 0.02 * 1024 * 1024 for h, w in shapes), shapes
    # the same steps on the whole frame: every box the size of the frame
    monkeypatch.undo()
    monkeypatch.setattr(cv2, "boundingRect", lambda image: (0, 0, image.shape[1], image.shape[0]))
    whole = np.asarray(sketch_to_control_map(sketch, 4, (1024, 1024)))[..., 0]
    assert np.array_equal(out, whole) and out.any()


# --- photo_to_control_map ----------------------------------------------------------------------------------
def synthetic_shapes(size=(640, 480)) -> Image.Image:
    photo = Image.new("RGB", size, (90, 140, 200))
    draw = ImageDraw.Draw(photo)
    draw.rectangle([100, 100, 300, 350], fill=(200, 60, 40))
    draw.ellipse([380, 120, 560, 300], fill=(240, 220, 80))
    return photo


def test_offline_fallback_is_classical_and_logged(monkeypatch, caplog):
    monkeypatch.setattr(conditioning, "_detectors", {})
    monkeypatch.setattr(conditioning, "_hub_reachable", lambda: False)
    monkeypatch.setattr(settings, "HED_ANNOTATOR_ID", "sprint-demo-tests/not-a-cached-annotator")
    imports = []  # offline, the HED package is not even imported (seconds), let alone a download tried
    monkeypatch.setattr(conditioning, "_import_hed_module", lambda: imports.append(1))
    with caplog.at_level(logging.WARNING, logger="sprint_demo.conditioning"):
        detector = conditioning.load_hed_detector("auto")
    assert detector.name.startswith("classical") and not detector.needs_nms
    assert "classical Canny fallback" in caplog.text and "not-a-cached-annotator" in caplog.text
    assert imports == []
    assert conditioning.load_hed_detector("auto") is detector  # one per process
    with pytest.raises(ConnectionError):
        conditioning.load_hed_detector("hed")  # asked for HED explicitly: no silent fallback
    with pytest.raises(ValueError, match="auto, hed or classical"):
        conditioning.load_hed_detector("sobel")


def test_photo_map_finds_the_shapes(classical):
    photo = synthetic_shapes()
    white = mask(photo_to_control_map(photo, 1, (640, 480), detector=classical))
    assert 0.01 < white.mean() < 0.4
    # the rectangle's left edge (x=100, y 100..350) is a line; the middle of flat regions is not
    assert white[150:300, 95:106].any(axis=1).all()
    assert not white[200:250, 180:220].any()  # inside the red rectangle
    assert not white[400:470, 20:80].any()  # plain background
    assert not white[:, :60].any()  # no edges invented at the image border


def test_photo_map_runs_at_the_photo_s_aspect_ratio_without_letterbox(classical):
    """At ``inputs.fit_size`` the map is the photo's own frame, edge to edge; a square size crops the photo's sides
    (no black bands, and nothing squashed); thickness as for sketches."""
    photo = synthetic_shapes()  # 640x480 (4:3)
    size = fit_size(*photo.size, 1024)
    assert size == (1024, 768)
    maps = {t: mask(photo_to_control_map(photo, t, size, detector=classical)) for t in (1, 2, 3, 4)}
    white = maps[1]
    assert white.shape == (768, 1024)
    assert white[240:560, 150:171].any(axis=1).all()  # the rectangle's left edge, x 100 * 1.6, over its height
    assert white[160:200].any() and white[560:600].any()  # its top and bottom edges (y 100 and 350, * 1.6)
    assert np.array_equal(maps[1], maps[2]) and np.array_equal(maps[1], maps[3])
    assert maps[4].sum() > maps[1].sum()
    square = mask(photo_to_control_map(photo, 1, (768, 768), detector=classical))
    # the middle 480x480 of the photo (x 80..560) at 1.6x: the rectangle's left edge near x (100 - 80) * 1.6
    assert square[240:560, 24:42].any(axis=1).all()
    assert square[:100].any() or square[-100:].any() or square[:, :100].any()  # content reaches the frame's sides


def test_photo_map_on_the_example_photo_detects_once_at_the_frame_size_and_is_deterministic(classical):
    photo = decode_image((ASSETS / "example_photo.jpg").read_bytes(), what="photo")
    seen = []

    class Recording(conditioning.ClassicalEdgeDetector):
        def __call__(self, rgb):
            seen.append(rgb.shape)
            return super().__call__(rgb)

    first = photo_to_control_map(photo, 2, (1024, 768), detector=Recording())
    assert seen == [(768, 1024, 3)]  # one detector pass, on the frame itself
    white = mask(first)
    assert 0.02 < white.mean() < 0.5
    assert white.any(axis=1).sum() > 300  # edges over much of the picture's height
    again = photo_to_control_map(photo, 2, (1024, 768), detector=classical)
    assert np.array_equal(np.asarray(first), np.asarray(again))


@pytest.mark.parametrize(("frame", "detected"), [((1024, 768), (768, 1024)), ((1024, 736), (768, 1024)),
                                                 ((512, 384), (384, 512)), ((768, 1024), (1024, 768)),
                                                 ((1024, 1024), (1024, 1024))])
def test_hed_sees_the_frame_at_its_short_side_rounded_to_64(frame, detected):
    """The detect resolution is the run size's short side (NVlabs passes ``hw.min()``), each side rounded to a
    multiple of 64 as the annotator's resize does; the soft edges come back at the frame's size."""
    import torch

    seen = []

    class Net(torch.nn.Module):  # HED's shape: five side outputs, the k-th at 1 / 2**k of the input
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return [torch.zeros(1, 1, x.shape[2] >> k, x.shape[3] >> k) for k in range(5)]

    width, height = frame
    soft = conditioning.HedEdgeDetector(Net())(np.zeros((height, width, 3), np.uint8))
    assert seen == [detected] and soft.shape == (height, width)


def test_flat_photo_gives_no_edges(classical):
    flat = Image.new("RGB", (512, 512), (120, 130, 140))
    assert not np.asarray(photo_to_control_map(flat, 2, (512, 512), detector=classical)).any()


def test_thin_line_nms():
    soft = np.zeros((64, 64), np.uint8)
    profile = (255 * np.exp(-((np.arange(64) - 32.0) ** 2) / (2 * 4.0**2))).astype(np.uint8)
    soft[:] = profile  # a soft vertical ridge at x=32, peak 255
    thin = conditioning._thin_line_nms(soft, settings.HED_NMS_THRESHOLD, settings.HED_NMS_SIGMA)
    columns = np.flatnonzero(thin.any(axis=0))
    assert columns.tolist() == [32] and thin[:, 32].all()
    faint = (soft * 0.4).astype(np.uint8)  # peak ~100: below the threshold of 127 after the blur
    assert not conditioning._thin_line_nms(faint, settings.HED_NMS_THRESHOLD, settings.HED_NMS_SIGMA).any()


class FakeSoftDetector:
    """A stand-in for HED: soft edges (needs NMS) as a blurred Canny, so the NMS branch runs without torch."""

    name = "fake-soft"
    needs_nms = True

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        edges = cv2.dilate(cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 50, 100), np.ones((3, 3), np.uint8))
        soft = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), 2.0) * 4  # ridges a few px wide, peak 255
        return soft.clip(0, 255).astype(np.uint8)


def test_soft_detector_goes_through_nms():
    white = mask(photo_to_control_map(synthetic_shapes(), 1, (640, 480), detector=FakeSoftDetector()))
    assert white[150:300, 95:106].any(axis=1).all() and not white[200:250, 180:220].any()


def test_the_hed_module_loads_alone_and_leaves_controlnet_aux_whole():
    """``_import_hed_module`` loads controlnet-aux's ``hed`` (and the ``util`` it needs) under the private alias,
    without the package's ``__init__`` and its other detectors; ``import controlnet_aux`` afterwards is the whole
    package. In a fresh process: this one may have imported either already."""
    code = (
        "import sys; from sprint_demo import conditioning as c; hed = c._import_hed_module(); "
        "alias = c.HED_PACKAGE_ALIAS; loaded = sorted(m for m in sys.modules if m.startswith(alias)); "
        "assert loaded == [alias, alias + '.hed', alias + '.util'], loaded; "
        "assert not any(m.split('.')[0] == 'controlnet_aux' for m in sys.modules); "
        "assert c._import_hed_module() is hed and hasattr(hed, 'HEDdetector'); "
        "import controlnet_aux; assert hasattr(controlnet_aux, 'HEDdetector'); "
        "assert 'controlnet_aux.dwpose' in sys.modules; "
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.slow
def test_hed_path_with_random_weights_from_a_local_folder(tmp_path, monkeypatch):
    """The real HED code path: HEDdetector.from_pretrained on a folder, ControlNetHED_Apache2, NMS (random weights:
    only shapes and plumbing are checked; ~10 s, mostly importing torch)."""
    import torch

    hed = conditioning._import_hed_module()
    torch.manual_seed(0)
    torch.save(hed.ControlNetHED_Apache2().state_dict(), tmp_path / settings.HED_ANNOTATOR_FILE)
    monkeypatch.setattr(settings, "HED_ANNOTATOR_ID", str(tmp_path))
    monkeypatch.setattr(conditioning, "_detectors", {})
    detector = conditioning.load_hed_detector("hed")
    assert detector.name == "hed" and detector.needs_nms and str(tmp_path) in detector.source
    soft = detector(np.asarray(synthetic_shapes((320, 240))))
    assert soft.shape == (240, 320) and soft.dtype == np.uint8
    out = photo_to_control_map(synthetic_shapes((320, 240)), 2, (256, 256), detector=detector)
    assert out.size == (256, 256)
    mask(out)


# --- assets ------------------------------------------------------------------------------------------------
def load_examples() -> list[dict]:
    return json.loads((ASSETS / "examples.json").read_text())


def test_example_sketches():
    examples = load_examples()
    assert 4 <= len(examples) <= 6
    for example in examples:
        assert set(example) == {"file", "prompt"}
        path = ASSETS / example["file"]
        assert path.suffix == ".png" and path.stat().st_size < 60_000
        sketch = decode_image(path.read_bytes())
        assert sketch.size == (1024, 1024) and not is_blank(sketch)
        grey = np.asarray(sketch.convert("L"))
        assert grey.min() == 0 and np.median(grey) == 255  # black strokes on white paper
        assert clean_prompt(example["prompt"]) == (example["prompt"], ())
        assert mask(sketch_to_control_map(sketch, 2, (1024, 1024))).mean() > 0.01


def test_example_photo():
    (entry,) = json.loads((ASSETS / "photo_examples.json").read_text())
    photo = decode_image((ASSETS / entry["file"]).read_bytes(), what="photo")
    assert photo.size == (1024, 768) and clean_prompt(entry["prompt"])[0] == entry["prompt"]


def test_assets_are_what_the_script_draws(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_examples", ASSETS / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for name in ["examples.json", "photo_examples.json"]:
        assert (tmp_path / name).read_text() == (ASSETS / name).read_text()
    for example in load_examples():
        fresh, committed = (np.asarray(Image.open(d / example["file"])) for d in (tmp_path, ASSETS))
        assert np.array_equal(fresh, committed), example["file"]
    fresh, committed = (np.asarray(Image.open(d / "example_photo.jpg"), dtype=np.int16) for d in (tmp_path, ASSETS))
    assert np.abs(fresh - committed).mean() < 1.0  # JPEG codecs may differ by a level here and there
