"""Step-adaptive by default: the frame a user keeps at ``settings.DEFAULT_STEPS`` (2, the authors' default), drafts
at ``settings.DRAFT_STEPS`` (1) whatever the Steps control says, the Camera tab's stream at ``CAMERA_STEPS`` (1)
and its snapshot at least ``DEFAULT_STEPS``. Checked through the handlers' server functions (the canvases' and the
camera's), the queue's final, the page's controls and the engine's own request defaults; the API's defaults are
checked on the served app in tests/test_app_api.py.

The step count a frame was made with is read from the request the engine was handed (a spy on ``Engine.render``),
and one draft's pixels are compared with the engine's 1-step frame, so the count is the one that ran.
"""

from __future__ import annotations

import inspect
import io
from contextlib import contextmanager
from unittest import mock

import browser as helpers  # tests/browser.py
import numpy as np
import pytest
import support  # tests/support.py
from diffusers import SanaSprintImg2ImgPipeline, SanaSprintPipeline
from PIL import Image

from sprint_demo import settings
from sprint_demo.sketches import png_data_url, stroke_sketch
from sprint_demo.web.camera_handlers import CAMERA_INPUTS, CameraHandlers
from sprint_demo.web.canvas_handlers import PAINT_INPUTS, SKETCH_INPUTS, CanvasHandlers, FinalAsked
from sprint_demo.web.handlers import FrameMaker
from sprint_demo.web.live import encode_jpeg


@pytest.fixture(scope="module")
def engine():
    return support.preview_engine()


@contextmanager
def steps_run(engine):
    """The step count of every request the engine is handed while inside."""
    seen: list[int] = []
    real = engine.render

    def spy(request, *args, **kwargs):
        seen.append(request.steps)
        return real(request, *args, **kwargs)

    with mock.patch.object(engine, "render", side_effect=spy):
        yield seen


def test_the_step_defaults():
    """Finals at the default of diffusers' pipelines (both of them), drafts and camera frames at 1."""
    for pipeline in (SanaSprintPipeline, SanaSprintImg2ImgPipeline):
        assert inspect.signature(pipeline.__call__).parameters["num_inference_steps"].default == 2
    assert settings.DEFAULT_STEPS == 2
    assert settings.DRAFT_STEPS == settings.CAMERA_STEPS == 1
    assert settings.MIN_STEPS <= settings.DRAFT_STEPS < settings.DEFAULT_STEPS <= settings.MAX_STEPS


@pytest.mark.parametrize("tab_kind", ["sketch", "paint"])
def test_canvas_drafts_run_one_step_whatever_the_steps_control_says_and_finals_run_its_steps(engine, tab_kind):
    draft, final = CanvasHandlers(FrameMaker(engine)).server_functions(tab_kind)
    picture = stroke_sketch(engine.size, 3)
    png = png_data_url(picture)
    names = SKETCH_INPUTS if tab_kind == "sketch" else PAINT_INPUTS
    defaults = dict(prompt="a kite", steps=settings.DEFAULT_STEPS, seed=4, guidance_scale=settings.DEFAULT_GUIDANCE,
                    control_strength=1.0, thickness=2, strength=0.5, edges=False)
    values = {name: defaults[name] for name in names}
    with steps_run(engine) as seen:
        assert "src" in final({"png": png, "inputs": values, "seq": 1, "tab": f"{tab_kind}-steps"})
        assert "src" in draft({"png": png, "inputs": values | {"steps": 3}, "seq": 2, "tab": f"{tab_kind}-steps"})
        assert "src" in final({"png": png, "inputs": values | {"steps": 3}, "seq": 3, "tab": f"{tab_kind}-steps"})
    assert seen == [settings.DEFAULT_STEPS, settings.DRAFT_STEPS, 3]


def test_a_draft_is_the_engine_s_one_step_frame(engine):
    draft, _final = CanvasHandlers(FrameMaker(engine)).server_functions("sketch")
    sketch = stroke_sketch(engine.size, 5)
    values = dict(zip(SKETCH_INPUTS, ["a boat", 4, 7, settings.DEFAULT_GUIDANCE, 1.0, 2]))  # the control says 4
    answer = draft({"png": png_data_url(sketch), "inputs": values, "seq": 1, "tab": "one-step"})
    decoder = settings.DRAFT_DECODER if engine.has_tiny_decoder else "full"
    one_step = support.sketch_frame(engine, sketch, "a boat", steps=1, seed=7, decoder=decoder).image
    four_steps = support.sketch_frame(engine, sketch, "a boat", steps=4, seed=7, decoder=decoder).image
    jpeg = np.asarray(Image.open(io.BytesIO(encode_jpeg(one_step, settings.DRAFT_JPEG_QUALITY))))
    shown = helpers.data_url_pixels(answer["src"])
    assert np.array_equal(shown, jpeg.astype(np.int16))
    assert np.abs(np.asarray(four_steps, dtype=np.int16) - shown).mean() > 1  # the count matters for the pixels


def test_the_queue_s_final_runs_the_steps_control_s_value(engine):
    handlers = CanvasHandlers(FrameMaker(engine))
    with steps_run(engine) as seen:
        handlers.sketch_final("", "a kite", settings.DEFAULT_STEPS, 4, settings.DEFAULT_GUIDANCE, 1.0, 2, None, "full",
                              FinalAsked(None, {"seq": 1, "tab": "queue-steps"}))
    assert seen == [settings.DEFAULT_STEPS]


def test_the_engine_s_own_defaults_are_the_finals(engine):
    with steps_run(engine) as seen:
        support.text_frame(engine, "a kite", width=256, height=256)
        support.sketch_frame(engine, None, "a kite")
        support.image_frame(engine, Image.new("RGB", (256, 256), "grey"), "a kite")
    assert seen == [settings.DEFAULT_STEPS] * 3


def test_the_page_s_steps_controls_start_at_the_defaults(engine):
    from gradio.components import Slider

    from sprint_demo.web.ui import create_demo

    demo = create_demo(engine)
    sliders = {block.elem_id: block for block in demo.blocks.values() if isinstance(block, Slider)}
    assert {name: sliders[name].value for name in ("steps", "paint_steps", "t2i_steps", "camera_steps")} == {
        "steps": settings.DEFAULT_STEPS, "paint_steps": settings.DEFAULT_STEPS, "t2i_steps": settings.DEFAULT_STEPS,
        "camera_steps": settings.CAMERA_STEPS}
    assert sliders["steps"].info == sliders["paint_steps"].info
    assert f"drafts while drawing run {settings.DRAFT_STEPS}" in sliders["steps"].info
    assert f"a snapshot runs at least {settings.DEFAULT_STEPS}" in sliders["camera_steps"].info
    assert sliders["t2i_steps"].info is None  # the Playground has no drafts


def test_camera_frames_run_the_steps_control_and_a_snapshot_at_least_the_finals(engine):
    fns = {fn.__name__: fn for fn in CameraHandlers(FrameMaker(engine)).server_functions()}
    image = png_data_url(Image.new("RGB", (320, 240), "teal"))

    def request(steps, **extra):
        values = dict(zip(CAMERA_INPUTS, ("a fox", "image", settings.DEFAULT_CAMERA_STRENGTH, steps, 3,
                                          settings.DEFAULT_GUIDANCE, 1.0, "full",
                                          settings.DEFAULT_STEADINESS)))
        return {"image": image, "inputs": values, "session": "steps", "captured_at": 1.0, **extra}

    with steps_run(engine) as seen:
        assert "src" in fns["camera_frame"](request(settings.CAMERA_STEPS, seq=1))
        assert "src" in fns["camera_snapshot"](request(settings.CAMERA_STEPS))
        assert "src" in fns["camera_snapshot"](request(3))
    assert seen == [settings.CAMERA_STEPS, settings.DEFAULT_STEPS, 3]
    assert "steps" in fns["camera_snapshot"](request("many"))["error"]
