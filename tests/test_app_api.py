"""The served app through its public API (gradio_client), plus app.py's command line.

The app runs in this process on the real preview engine (``create_demo(load_engine("preview"))``), launched once
per module on a free loopback port.

Image comparison: the app serves ``ui.encode_frame(frame.image)`` (JPEG at ``settings.JPEG_QUALITY``, a
deterministic encoder) as a file that Gradio passes through unchanged, so the API image is compared with the
engine's own frame encoded the same way, pixel for pixel, with no tolerance.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import support  # noqa: E402  (tests/support.py: live_app)

from sprint_demo import settings  # noqa: E402
from sprint_demo.sketches import png_data_url, stroke_sketch  # noqa: E402
from sprint_demo.web.canvas import sketch_value  # noqa: E402
from sprint_demo.web.handlers import encode_frame  # noqa: E402
from sprint_demo.web.messages import CAMERA_UNCHANGED, readout  # noqa: E402
from sprint_demo.web.ui import aspect_size  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# decoder, then the style and travel parameters, last: positional calls written before they existed still work
SKETCH_PARAMS = ["sketch", "prompt", "steps", "seed", "guidance_scale", "control_strength", "thickness", "decoder",
                 "style", "style_scale"]
TEXT_PARAMS = ["prompt", "steps", "seed", "guidance_scale", "width", "height", "decoder", "style", "style_scale",
               "prompt_b", "blend", "seed_b", "seed_blend"]
IMAGE_PARAMS = ["image", "prompt", "strength", "steps", "seed", "guidance_scale", "decoder", "style", "style_scale"]


@pytest.fixture(scope="module")
def live_app():
    with support.live_app() as app:
        yield app


@pytest.fixture(scope="module")
def client(live_app):
    url, _engine, _demo = live_app
    client = Client(url, verbose=False, analytics_enabled=False)
    yield client
    client.close()


def _pixels(path_or_image) -> np.ndarray:
    if isinstance(path_or_image, (bytes, bytearray)):
        path_or_image = io.BytesIO(path_or_image)
    with Image.open(path_or_image) as image:
        return np.asarray(image.convert("RGB")).copy()


# --- API shape ----------------------------------------------------------------------------------------------
def test_named_endpoints_and_parameter_names(client):
    api = client.view_api(return_format="dict", print_info=False)
    endpoints = api["named_endpoints"]
    assert set(endpoints) == {"/sketch_to_image", "/text_to_image", "/image_to_image"}, list(endpoints)
    assert [p["parameter_name"] for p in endpoints["/sketch_to_image"]["parameters"]] == SKETCH_PARAMS
    assert [p["parameter_name"] for p in endpoints["/text_to_image"]["parameters"]] == TEXT_PARAMS
    assert [p["parameter_name"] for p in endpoints["/image_to_image"]["parameters"]] == IMAGE_PARAMS
    for name in endpoints:
        returns = endpoints[name]["returns"]
        assert [r["component"] for r in returns] == ["Image", "Markdown"], returns
        # every parameter but the picture of /image_to_image has a default, so callers pass only what they change
        assert [p["parameter_name"] for p in endpoints[name]["parameters"] if not p["parameter_has_default"]] == (
            ["image"] if name == "/image_to_image" else []), name


def test_the_api_s_frames_default_to_the_authors_2_steps(client):
    """Every endpoint's steps default to ``settings.DEFAULT_STEPS`` (2, diffusers' and NVlabs' default): an API
    frame is a frame a user keeps, never a draft."""
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    defaults = {name: {p["parameter_name"]: p["parameter_default"] for p in endpoint["parameters"]}["steps"]
                for name, endpoint in endpoints.items()}
    assert defaults == dict.fromkeys(endpoints, settings.DEFAULT_STEPS) and settings.DEFAULT_STEPS == 2


# --- Frames -------------------------------------------------------------------------------------------------
def test_sketch_to_image_equals_the_engine_frame(client, live_app):
    _url, engine, _demo = live_app
    sketch = png_data_url(stroke_sketch(engine.size, 4))
    args = dict(sketch=sketch, prompt="a round window in a brick wall", steps=2, seed=5, guidance_scale=3.5,
                control_strength=0.8, thickness=3)
    path, latency = client.predict(**args, api_name="/sketch_to_image")
    served = _pixels(path)
    assert served.shape == (engine.size, engine.size, 3)
    assert "ms** total" in latency and "denoise" in latency
    frame = support.sketch_frame(engine, **args)
    expected = _pixels(encode_frame(frame.image))
    assert np.array_equal(served, expected), np.abs(served.astype(int) - expected).max()
    # and the sketch matters: the same call without it is a different image
    blank_path, _ = client.predict(**{**args, "sketch": ""}, api_name="/sketch_to_image")
    assert np.abs(_pixels(blank_path).astype(int) - served).mean() > 1.0


def test_text_to_image_has_the_requested_size(client, live_app):
    _url, engine, _demo = live_app
    width, height = settings.MIN_SIZE + 2 * settings.SIZE_MULTIPLE, settings.MIN_SIZE
    path, latency = client.predict(prompt="a lighthouse at dusk", seed=9, width=width, height=height,
                                   api_name="/text_to_image")
    served = _pixels(path)
    assert served.shape == (height, width, 3)
    frame = support.text_frame(engine, "a lighthouse at dusk", seed=9, width=width, height=height)
    assert np.array_equal(served, _pixels(encode_frame(frame.image)))
    assert "total" in latency


@pytest.mark.parametrize("api_name", ["/sketch_to_image", "/text_to_image"])
def test_the_tiny_decoder_through_the_api(client, live_app, api_name):
    """decoder="tiny" returns the tiny lane's frame and says so; a positional call without the decoder (as written
    before it existed) still gets the full lane."""
    _url, engine, _demo = live_app
    if api_name == "/sketch_to_image":
        args = [png_data_url(stroke_sketch(engine.size, 3)), "a kite", 1, 4, 4.5, 1.0, 2]
        frame = support.sketch_frame(engine, *args, decoder="tiny")
    else:
        args = ["a kite", 1, 4, 4.5, 256, 256]
        frame = support.text_frame(engine, *args, decoder="tiny")
    path, latency = client.predict(*args, "tiny", api_name=api_name)
    assert "decoder: tiny" in latency
    assert np.array_equal(_pixels(path), _pixels(encode_frame(frame.image)))
    old_path, old_latency = client.predict(*args, api_name=api_name)
    assert "decoder: full" in old_latency and not np.array_equal(_pixels(old_path), _pixels(path))


def test_style_and_travel_through_the_api_are_the_engine_frames(client, live_app):
    """``style`` and the travel parameters reach the frame; the positional call without them is the plain frame."""
    _url, engine, _demo = live_app
    args = ["a kite", 1, 4, 4.5, 256, 256, "full"]
    plain, _ = client.predict(*args, api_name="/text_to_image")
    styled, _ = client.predict(*args, "anime", api_name="/text_to_image")
    frame = support.text_frame(engine, *args, style="anime")
    assert np.array_equal(_pixels(styled), _pixels(encode_frame(frame.image)))
    assert not np.array_equal(_pixels(styled), _pixels(plain))
    travelled, _ = client.predict(*args, "none", 1, "a red boat", 1.0, 9, 1.0, api_name="/text_to_image")
    frame = support.text_frame(engine, "a red boat", 1, 9, 4.5, 256, 256, "full")
    assert np.array_equal(_pixels(travelled), _pixels(encode_frame(frame.image)))


def test_defaults_only_call_works(client, live_app):
    _url, engine, _demo = live_app
    path, _ = client.predict(prompt="a boat", api_name="/text_to_image")
    assert _pixels(path).shape == (engine.size, engine.size, 3)


# --- Errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api_name, bad, named", [
    ("/sketch_to_image", dict(steps=9), "steps"),
    ("/sketch_to_image", dict(sketch="data:image/png;base64,bm90IGFuIGltYWdl"), "sketch"),
    ("/sketch_to_image", dict(sketch="garbage, not a data URL"), "sketch"),
    ("/text_to_image", dict(width=300), "width"),
    ("/text_to_image", dict(decoder="huge"), "decoder must be one of full, tiny, got 'huge'"),
    ("/sketch_to_image", dict(decoder=""), "decoder"),
    ("/sketch_to_image", dict(style="vaporwave"), "style must be one of"),
    ("/text_to_image", dict(style="anime", style_scale=3), "style_scale"),
    ("/text_to_image", dict(prompt_b="a boat", blend=2), "blend"),
    ("/text_to_image", dict(seed_b=-1, seed_blend=0.5), "seed_b"),
    ("/image_to_image", dict(style=""), "style"),
])
def test_bad_input_is_a_clear_error_and_the_next_call_succeeds(client, live_app, api_name, bad, named):
    _url, engine, _demo = live_app
    good = dict(prompt="a kite", seed=3)
    if api_name == "/sketch_to_image":
        good["sketch"] = png_data_url(stroke_sketch(engine.size, 4))
    if api_name == "/image_to_image":
        good["image"] = png_data_url(stroke_sketch(engine.size, 4))
    with pytest.raises(AppError) as refused:
        client.predict(**{**good, **bad}, api_name=api_name)
    message = str(refused.value)
    assert named.lower() in message.lower() and "Traceback" not in message, message
    path, _ = client.predict(**good, api_name=api_name)
    assert _pixels(path).ndim == 3


# --- Pure helpers -------------------------------------------------------------------------------------------
def test_aspect_sizes_are_valid_frame_sizes():
    for aspect in settings.ASPECT_RATIOS:
        for long_side in (settings.PREVIEW_SIZE, settings.DEFAULT_SIZE):
            width, height = aspect_size(aspect, long_side)
            assert max(width, height) == long_side
            assert width % settings.SIZE_MULTIPLE == 0 and height % settings.SIZE_MULTIPLE == 0
            a, b = (int(x) for x in aspect.split(":"))
            assert abs(width / height - a / b) < 0.05


def test_the_readout_lists_the_stages_the_frame_ran_and_every_notice():
    class FakeFrame:  # only the fields the readout reads
        timings_ms = {"text_encode": 1.0, "input_prep": 2.0, "control_encode": 3.0, "image_encode": 5.0,
                      "denoise": 40.0, "decode": 50.0, "postprocess": 4.0, "total": 100.0}
        notices = ("prompt cut to 2000 characters",)
        reused = False
        skipped = False
        decoder = "tiny"
        batch_size = 1
        control_map = "a map"
        strength = 0.4

    text = readout(FakeFrame(), ("extra note",), markdown=True)
    assert text.startswith("**100 ms** total · decoder: tiny · strength 0.4") and "batch" not in text
    batched = FakeFrame()
    batched.batch_size = 3
    assert "batch of 3" in readout(batched)
    for stage in FakeFrame.timings_ms:
        assert stage in text
    assert "prompt cut" in text and "extra note" in text
    text_only = FakeFrame()
    text_only.control_map, text_only.strength = None, 1.0  # ran no control or picture stage: none is listed
    listed = readout(text_only)
    assert "input_prep 2.0" in listed and "image_encode" not in listed and "control_encode" not in listed
    assert "denoise 40.0" in listed and "image_encode 5.0" in text
    skipped = FakeFrame()
    skipped.skipped = True  # an unchanged camera picture: no stage ran, the readout says so
    assert readout(skipped).startswith(f"100 ms total · {CAMERA_UNCHANGED}") and "denoise" not in readout(skipped)


def test_every_failure_is_one_answer_for_server_functions_and_one_error_for_the_queue(caplog):
    """The two ways a failure reaches the user (web.handlers): a server function's answer and a queue event's
    gr.Error, both worded by messages.error_text; only a fault (not a bad value, not a full server) is logged."""
    import gradio as gr
    import torch

    from sprint_demo.frames import EngineBusy, Superseded
    from sprint_demo.inputs import InputError
    from sprint_demo.web import messages
    from sprint_demo.web.handlers import queue_error, server_answer

    assert server_answer(Superseded(), seq=3) == {"seq": 3, "dropped": True}
    assert server_answer(EngineBusy(), seq=4) == {"seq": 4, "busy": True}
    assert server_answer(InputError("steps must be an integer from 1 to 4, got 9")) == {
        "error": "steps must be an integer from 1 to 4, got 9"}
    assert not caplog.records
    fault = server_answer(RuntimeError("boom"), seq=5)
    assert fault == {"seq": 5, "error": "The model failed on this frame (RuntimeError: boom). Try again."}
    assert [record.levelname for record in caplog.records] == ["ERROR"]
    assert "ran out of memory" in server_answer(torch.OutOfMemoryError("CUDA out of memory"))["error"]
    raised = [queue_error(error) for error in (InputError("seed must be 0 or more"), EngineBusy(), RuntimeError("x"))]
    assert all(isinstance(error, gr.Error) for error in raised)
    assert [error.message for error in raised] == [
        "seed must be 0 or more", messages.BUSY, "The model failed on this frame (RuntimeError: x). Try again."]


def test_sketch_value_is_a_white_square_png_of_the_canvas_size():
    from sprint_demo.inputs import decode_image

    example = REPO / "assets" / "cat_face.png"
    image = decode_image(sketch_value(str(example), settings.PREVIEW_SIZE))
    assert image.size == (settings.PREVIEW_SIZE, settings.PREVIEW_SIZE)
    assert image.getpixel((0, 0)) == (255, 255, 255)


# --- app.py ---------------------------------------------------------------------------------------------------
def test_importing_app_has_no_side_effects():
    code = ("import sys, threading; import app; "
            "assert threading.active_count() == 1, threading.enumerate(); "
            "heavy = [m for m in ('torch', 'gradio', 'sprint_demo.engine', 'diffusers') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "assert app.parse_args([]).model == __import__('sprint_demo.settings').settings.MODEL; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_help_lists_every_flag():
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--model", "--controlnet", "--device", "--dtype", "--tiny-autoencoder", "--vae-lite", "--lora",
                 "--host", "--port", "--share"):
        assert flag in result.stdout


def test_parse_args_defaults_come_from_settings():
    import app

    args = app.parse_args([])
    assert (args.model, args.controlnet, args.port, args.share) == (settings.MODEL, settings.CONTROLNET,
                                                                    settings.PORT, False)
    assert (args.tiny_autoencoder, args.vae_lite) == (settings.TINY_AUTOENCODER, settings.VAE_LITE)
    assert args.host == (settings.SPACES_HOST if settings.ON_SPACES else settings.HOST)


@pytest.mark.slow
def test_a_model_that_fails_to_load_is_a_clear_message_and_non_zero_exit(tmp_path):
    missing = tmp_path / "no-such-model"
    result = subprocess.run([sys.executable, "app.py", "--model", str(missing)], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert str(missing) in result.stderr and "error: could not load model" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def test_readme_api_example_runs(live_app, capsys):
    import re

    url, _engine, _demo = live_app
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Using the API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert all(f'api_name="/{name}"' in code for name in ("sketch_to_image", "text_to_image", "image_to_image"))
    exec(compile(code.replace('"http://127.0.0.1:7860"', repr(url)), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.count(".jpg") == 3 and printed.count("total") == 3, printed


def test_zero_gpu_wraps_the_frame_functions_only_on_zero_gpu(monkeypatch):
    import types

    from sprint_demo.web import handlers

    def plain():
        return "frame"

    assert handlers.on_gpu(plain) is plain  # not on ZeroGPU: untouched, `spaces` never imported
    asked = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda duration: (lambda fn: asked.append(duration) or (lambda *a, **k: ("gpu", fn(*a, **k))))
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setattr(settings, "ZERO_GPU", True)
    assert handlers.on_gpu(plain)() == ("gpu", "frame")
    assert asked == [settings.ZERO_GPU_DURATION_S]


def test_the_engine_s_batch_counts_are_readable_but_undocumented(client, live_app):
    assert "/engine_stats" not in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    before = client.predict(api_name="/engine_stats")["batches"]
    client.predict(prompt="a count", seed=99, api_name="/text_to_image")
    after = client.predict(api_name="/engine_stats")["batches"]
    assert after.get("1", 0) == before.get("1", 0) + 1, (before, after)
