"""The full lane (the DC-AE) draws exactly the pixels it drew before the tiny autoencoder lane was added: frames of
the preview model saved then as lossless PNGs (tests/data/full_lane_*.png) are rendered again and compared.

Regenerate the reference frames (only when a change is meant to alter the full lane's pixels) with
``PYTHONPATH=. python tests/test_full_lane_frames.py --write``. They are float32 CPU frames: a machine whose
CPU kernels round differently may need its own copy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sprint_demo.engine import Engine, load_engine
from sprint_demo.sketches import stroke_sketch

DATA = Path(__file__).resolve().parent / "data"
SIZE = 256
PROMPT = "a lighthouse on a cliff at sunset"
# name -> (sketch strokes or None for text-to-image, keyword arguments of the engine call)
FRAMES = {
    "full_lane_t2i_1step": (None, dict(steps=1, seed=11)),
    "full_lane_control_1step": (4, dict(steps=1, seed=12)),
    "full_lane_control_2step": (6, dict(steps=2, seed=13, control_strength=0.7)),
}


def full_lane_engine() -> Engine:
    engine = load_engine("preview", device="cpu", warmup=False)
    engine.size = SIZE
    return engine


def render(engine: Engine, name: str, **extra) -> Image.Image:
    strokes, kwargs = FRAMES[name]
    if strokes is None:
        return engine.text_to_image(PROMPT, width=SIZE, height=SIZE, **kwargs, **extra).image
    return engine.sketch_to_image(stroke_sketch(SIZE, strokes), PROMPT, **kwargs, **extra).image


@pytest.mark.parametrize("name", FRAMES)
def test_full_lane_frames_are_pixel_identical_to_the_saved_reference(name):
    reference = np.asarray(Image.open(DATA / f"{name}.png").convert("RGB"), dtype=np.int16)
    engine = full_lane_engine()
    for extra in ({}, {"decoder": "full"}):  # the default and the explicit choice are the same lane
        engine.clear_caches()
        frame = np.asarray(render(engine, name, **extra), dtype=np.int16)
        assert frame.shape == reference.shape
        difference = np.abs(frame - reference)
        assert difference.max() == 0, f"{name}: {np.count_nonzero(difference)} values differ, by up to " \
                                      f"{difference.max()} levels"


def write_reference_frames() -> None:
    engine = full_lane_engine()
    for name in FRAMES:
        render(engine, name).save(DATA / f"{name}.png", optimize=False)
        print(DATA / f"{name}.png")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: PYTHONPATH=. python tests/test_full_lane_frames.py --write")
    write_reference_frames()
