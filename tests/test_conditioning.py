"""sprint_demo.conditioning: control maps from sketches and photos, and the example assets."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from sprint_demo import conditioning, settings
from sprint_demo.conditioning import photo_to_control_map, sketch_to_control_map
from sprint_demo.inputs import clean_prompt, decode_image, is_blank

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


@pytest.mark.parametrize("thickness", [1, 2, 3, 4])
def test_single_stroke_lights_exactly_around_the_stroke(stroke_sketch, thickness):
    sketch, stroke = stroke_sketch
    white = mask(sketch_to_control_map(sketch, thickness, (1024, 1024)))
    # distance of every pixel to the nearest stroke pixel
    distance = cv2.distanceTransform((~stroke).astype(np.uint8), cv2.DIST_L2, 5)
    assert white[stroke].all()  # the stroke itself is white
    assert white[distance <= 4].all()  # and a solid band around it
    reach = BLUR_REACH + (thickness - 1) + 1  # blur reach + dilation radius (+1 for the distance metric)
    assert not white[distance > reach].any()  # nothing lights up away from the stroke
    rows = np.flatnonzero(white.any(axis=1))
    assert abs((rows[0] + rows[-1]) / 2 - 501) <= 1  # centred on the stroke


def test_thicker_setting_gives_strictly_more_white(stroke_sketch):
    counts = [mask(sketch_to_control_map(stroke_sketch[0], t, (1024, 1024))).sum()
              for t in range(settings.MIN_THICKNESS, settings.MAX_THICKNESS + 1)]
    assert all(a < b for a, b in itertools.pairwise(counts)), counts


def test_light_grey_and_transparent_pixels_are_paper():
    sketch = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    sketch.paste((200, 200, 200, 255), (0, 0, 512, 100))  # light grey: lighter than SKETCH_INK_LEVEL
    assert not np.asarray(sketch_to_control_map(sketch, 2, (512, 512))).any()
    sketch.paste((0, 0, 0, 255), (100, 300, 400, 303))
    assert mask(sketch_to_control_map(sketch, 2, (512, 512)))[301, 250]


def test_aspect_ratio_is_letterboxed_not_stretched():
    sketch = Image.new("L", (2048, 1024), 0)  # all ink, 2:1
    white = mask(sketch_to_control_map(sketch, 1, (1024, 1024)))
    rows = np.flatnonzero(white.any(axis=1))
    assert (rows[0], rows[-1]) == (256, 767)  # content 1024x512, centred; margins black
    assert white[256:768].all()
    tall = Image.new("L", (100, 400), 255)
    tall.paste(0, (45, 0, 55, 400))  # a vertical bar down the middle of a 1:4 sketch
    white = mask(sketch_to_control_map(tall, 1, (512, 512)))
    columns = np.flatnonzero(white.any(axis=0))
    assert columns.min() > 192 and columns.max() < 320  # content is 128 px wide, centred at 256


def test_tiny_and_extreme_inputs():
    dot = Image.new("L", (1, 1), 0)
    assert mask(sketch_to_control_map(dot, 1, (256, 256))).all()  # one ink pixel scaled to the whole frame
    strip = Image.new("L", (4096, 64), 255)
    strip.paste(0, (0, 30, 4096, 34))
    out = mask(sketch_to_control_map(strip, 2, (1024, 1024)))
    assert out.any() and not out[:400].any() and not out[-400:].any()


def test_deterministic(stroke_sketch):
    a = sketch_to_control_map(stroke_sketch[0], 3, (768, 512))
    b = sketch_to_control_map(stroke_sketch[0].copy(), 3, (768, 512))
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_only_the_strokes_box_is_filtered_and_the_map_is_the_whole_frame_recipe(monkeypatch):
    """What keeps a 1024 px sketch map cheap: the blur runs on the strokes' bounding box plus a margin, not on the
    frame, and the result is still exactly the recipe applied to the whole frame."""
    sketch = white_canvas()
    sketch.paste((0, 0, 0), (100, 120, 160, 124))  # a short stroke near a corner
    blurred_shapes = []
    real_blur = cv2.GaussianBlur
    monkeypatch.setattr(cv2, "GaussianBlur",
                        lambda src, *args, **kwargs: blurred_shapes.append(src.shape)
                        or real_blur(src, *args, **kwargs))
    out = np.asarray(sketch_to_control_map(sketch, 3, (1024, 1024)))[..., 0]
    (shape,) = blurred_shapes
    assert shape[0] * shape[1] < 0.02 * 1024 * 1024, shape
    monkeypatch.undo()
    ink = np.where(np.asarray(sketch.convert("L")) < settings.SKETCH_INK_LEVEL, 255, 0).astype(np.uint8)
    whole = cv2.GaussianBlur(ink, (0, 0), settings.CONTROL_BLUR_SIGMA)
    _, whole = cv2.threshold(whole, settings.CONTROL_BLUR_THRESHOLD, 255, cv2.THRESH_BINARY)
    whole = cv2.dilate(whole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))  # thickness 3: a 5 px disc
    assert np.array_equal(out, whole)


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


def test_photo_map_size_letterbox_and_thickness(classical):
    photo = synthetic_shapes()  # 4:3 into a square: 128 px black bands above and below at 1024
    maps = [mask(photo_to_control_map(photo, t, (1024, 1024), detector=classical)) for t in (1, 2, 3, 4)]
    for white in maps:
        assert white.shape == (1024, 1024)
        assert not white[:128].any() and not white[-128:].any()
    counts = [white.sum() for white in maps]
    assert all(a < b for a, b in itertools.pairwise(counts)), counts


def test_photo_map_on_the_example_photo_detects_once_at_the_content_size_and_is_deterministic(classical):
    photo = decode_image((ASSETS / "example_photo.jpg").read_bytes(), what="photo")
    seen = []

    class Recording(conditioning.ClassicalEdgeDetector):
        def __call__(self, rgb):
            seen.append(rgb.shape)
            return super().__call__(rgb)

    first = photo_to_control_map(photo, 2, (1024, 1024), detector=Recording())
    assert seen == [(768, 1024, 3)]  # one detector pass, on the letterboxed content, not the padded frame
    white = mask(first)
    assert 0.02 < white.mean() < 0.5
    assert white[128:896].any(axis=1).sum() > 300  # edges over much of the picture's height
    again = photo_to_control_map(photo, 2, (1024, 1024), detector=classical)
    assert np.array_equal(np.asarray(first), np.asarray(again))


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


@pytest.mark.slow
def test_hed_path_with_random_weights_from_a_local_folder(tmp_path, monkeypatch):
    """The real HED code path: HEDdetector.from_pretrained on a folder, ControlNetHED_Apache2, NMS (random weights:
    only shapes and plumbing are checked; ~10 s, mostly importing torch)."""
    import torch

    hed = conditioning._import_hed_module()
    import sys

    assert "controlnet_aux" not in sys.modules or hasattr(sys.modules["controlnet_aux"], "HEDdetector")
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
