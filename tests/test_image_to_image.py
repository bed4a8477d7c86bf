"""Image-to-image in the engine and through ``/image_to_image``: continuous strength, the picture's aspect ratio,
cached picture latents, text-to-image at strength 1, and bad values refused by name; ``bench --mode img2img``.

Engine frames are compared exactly where both sides run in this process on the same tensors (the engine against
the pipeline class, strength 1 against text-to-image); the API's JPEG files against the engine's frames encoded by
the same encoder, also exactly.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import support  # noqa: E402

from sprint_demo import inputs, settings  # noqa: E402
from sprint_demo.engine import load_engine  # noqa: E402
from sprint_demo.inputs import InputError, fit_size  # noqa: E402
from sprint_demo.models.pipeline import (  # noqa: E402
    SanaSprintControlNetImg2ImgPipeline,
    continuous_strength_timesteps,
)
from sprint_demo.renderer import batch_key  # noqa: E402
from sprint_demo.sketches import png_data_url  # noqa: E402
from sprint_demo.tools import bench  # noqa: E402
from sprint_demo.web.handlers import encode_frame  # noqa: E402

IMAGE_PARAMS = ["image", "prompt", "strength", "steps", "seed", "guidance_scale", "decoder", "style", "style_scale"]


def painting(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """Coloured blocks with a dark outline: what a quick painting looks like."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), 255, np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, width - 60), rng.integers(0, height - 60)
        pixels[y:y + 60 + rng.integers(0, 80), x:x + 60 + rng.integers(0, 120)] = rng.integers(0, 255, 3)
    pixels[height // 2 - 2:height // 2 + 2, width // 8:width - width // 8] = 0
    return Image.fromarray(pixels)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


@pytest.fixture(scope="module")
def engine():
    engine = load_engine("preview", device="cpu", warmup=False, max_batch_size=1)
    yield engine
    engine.close()


# --- sizes and checks ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, long_side, expected", [
    ((640, 480), 512, (512, 384)),     # 4:3 kept exactly
    ((480, 640), 512, (384, 512)),     # portrait
    ((1920, 1080), 1024, (1024, 576)),  # 16:9 kept exactly
    ((1000, 1000), 512, (512, 512)),
    ((1000, 999), 512, (512, 512)),    # rounded to the multiple of 32
    ((4096, 64), 1024, (1024, 256)),   # more elongated than the sizes allow: the short side's minimum (cropped)
])
def test_the_frame_keeps_the_picture_s_aspect_ratio_on_multiples_of_32(size, long_side, expected):
    assert fit_size(*size, long_side) == expected
    assert inputs.fit_picture(Image.new("RGB", size), long_side).size == expected


@pytest.mark.parametrize("strength, named", [(0, "got 0"), (-0.1, "got -0.1"), (1.5, "got 1.5"),
                                              (float("nan"), "got nan"), ("strong", "got 'strong'"),
                                              (True, "got True")])
def test_a_strength_outside_zero_to_one_is_refused_naming_it(strength, named):
    with pytest.raises(InputError, match=r"strength must be a number in \(0, 1\], " + named):
        inputs.image_request(painting(), "a cat", strength, 1, 0, 4.5, 512)


def test_what_is_not_a_picture_is_refused_naming_it():
    with pytest.raises(InputError, match="image is not a PNG, JPEG, WEBP image"):
        inputs.image_request(b"GIF89a not really", "a cat", 0.5, 1, 0, 4.5, 512)
    with pytest.raises(InputError, match="image is empty"):
        inputs.image_request(None, "a cat", 0.5, 1, 0, 4.5, 512)


def test_strength_one_is_text_to_image_and_sets_no_picture():
    request = inputs.image_request(painting(), "a cat", 1.0, 1, 0, 4.5, 512)
    assert request.init_image is None and request.init_key is None and request.strength == 1.0
    assert request == inputs.text_request("a cat", 1, 0, 4.5, 512, 384)
    below = inputs.image_request(painting(), "a cat", 0.5, 1, 0, 4.5, 512)
    assert below.init_image.size == (512, 384) and below.init_key and below.strength == 0.5
    assert batch_key(below) != batch_key(inputs.image_request(painting(), "a cat", 0.6, 1, 0, 4.5, 512))
    assert "empty prompt: the image follows the picture alone" in inputs.image_request(
        painting(), "", 0.5, 1, 0, 4.5, 512).notices


def test_edges_read_the_painting_s_dark_lines_as_a_control_map():
    with_edges = inputs.image_request(painting(), "a cat", 0.5, 1, 0, 4.5, 512, edges=True)
    without = inputs.image_request(painting(), "a cat", 0.5, 1, 0, 4.5, 512)
    assert without.control_map is None and with_edges.control_map.size == (512, 384)
    assert np.asarray(with_edges.control_map).max() == 255  # the outline is a white line on black


# --- the engine -----------------------------------------------------------------------------------------------------
def test_the_engine_s_frame_equals_the_image_to_image_pipeline_with_the_continuous_schedule(engine):
    for strength, steps in ((0.3, 1), (0.7, 2), (0.55, 4)):
        frame = support.image_frame(engine, painting(), "a red barn", strength=strength, steps=steps, seed=5)
        pipe = SanaSprintControlNetImg2ImgPipeline(**{k: v for k, v in engine.renderer.pipe.components.items()})
        pipe.set_progress_bar_config(disable=True)
        expected = pipe(prompt="a red barn", image=inputs.fit_picture(painting(), engine.size), strength=strength,
                        num_inference_steps=steps, timesteps=continuous_strength_timesteps(strength, steps),
                        max_timesteps=None, intermediate_timesteps=None, height=384, width=512,
                        generator=torch.Generator().manual_seed(5), use_resolution_binning=False,
                        output_type="pil").images[0]
        assert np.array_equal(pixels(frame.image), pixels(expected)), (strength, steps)
        assert frame.strength == strength and frame.timings_ms["image_encode"] >= 0


def test_strength_one_gives_the_text_to_image_frame_whatever_the_picture(engine):
    first = support.image_frame(engine, painting(seed=1), "a lighthouse", strength=1.0, seed=3)
    other = support.image_frame(engine, painting(seed=2), "a lighthouse", strength=1.0, seed=3)
    text = support.text_frame(engine, "a lighthouse", seed=3, width=512, height=384)
    assert np.array_equal(pixels(first.image), pixels(text.image))
    assert np.array_equal(pixels(other.image), pixels(text.image))


def test_the_picture_s_latent_is_encoded_once_per_picture_and_lane(engine):
    engine.clear_caches()
    pipeline_class = type(engine.renderer.pipe)
    real = pipeline_class.prepare_image_latents
    with mock.patch.object(pipeline_class, "prepare_image_latents", autospec=True, side_effect=real) as encode:
        support.image_frame(engine, painting(seed=4), "a cat", strength=0.5, seed=1)
        support.image_frame(engine, painting(seed=4), "a dog", strength=0.5, seed=2)  # same picture: cached
        support.image_frame(engine, painting(seed=4), "a dog", strength=0.5, seed=2, decoder="tiny")  # other lane
        support.image_frame(engine, painting(seed=5), "a dog", strength=0.5, seed=2)  # other picture
    # every frame's start passes its cached latent through prepare_image_latents (a tensor: nothing to encode); the
    # pictures themselves are encoded three times
    pictures = [call.args[1] for call in encode.call_args_list]
    assert sum(isinstance(picture, Image.Image) for picture in pictures) == 3
    assert sum(isinstance(picture, torch.Tensor) for picture in pictures) == 4


# --- the API ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served():
    with support.live_app() as (url, engine, demo):
        client = Client(url, verbose=False, analytics_enabled=False)
        yield client, engine
        client.close()


def _api_pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return pixels(image)


def test_the_endpoint_s_parameters_and_defaults(served):
    client, _engine = served
    endpoint = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/image_to_image"]
    parameters = {p["parameter_name"]: p for p in endpoint["parameters"]}
    assert list(parameters) == IMAGE_PARAMS
    assert parameters["strength"]["parameter_default"] == settings.DEFAULT_API_STRENGTH
    assert parameters["decoder"]["parameter_default"] == "full"
    assert parameters["style"]["parameter_default"] == settings.DEFAULT_STYLE
    assert parameters["style_scale"]["parameter_default"] == settings.DEFAULT_STYLE_SCALE


def test_at_one_step_the_image_moves_towards_the_strength_one_image_as_strength_grows(served):
    client, engine = served
    picture = png_data_url(painting())
    images = {}
    for strength in (0.3, 0.6, 1.0):
        path, latency = client.predict(picture, "a harbour at dawn", strength, 1, 9, settings.DEFAULT_GUIDANCE,
                                       api_name="/image_to_image")
        images[strength] = _api_pixels(path)
        assert images[strength].shape == (384, 512, 3)  # 640x480 kept its aspect ratio
        if strength < 1:
            assert f"strength {strength:g}" in latency and "image_encode" in latency
    distance = {s: np.abs(images[s] - images[1.0]).mean() for s in (0.3, 0.6)}
    assert distance[0.3] > distance[0.6] > 0, distance  # distinct, and closer to strength 1 as strength grows
    assert np.abs(images[0.3] - images[0.6]).mean() > 1.0
    # at 1.0 another picture gives the same image: the text-to-image frame, served by the same JPEG encoder
    other, _ = client.predict(png_data_url(painting(seed=9)), "a harbour at dawn", 1.0, 1, 9,
                              settings.DEFAULT_GUIDANCE, api_name="/image_to_image")
    assert np.array_equal(_api_pixels(other), images[1.0])
    text = support.text_frame(engine, "a harbour at dawn", steps=1, seed=9, width=512, height=384)
    with Image.open(io.BytesIO(encode_frame(text.image))) as expected:
        assert np.array_equal(pixels(expected), images[1.0])


@pytest.mark.parametrize("bad, named", [
    ({"strength": 0}, "strength"), ({"strength": 1.2}, "strength"), ({"strength": "NaN"}, "strength.*NaN"),
    ({"image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "image"), ({"image": ""}, "image is empty"),
    ({"steps": 9}, "steps"),
])
def test_bad_values_are_refused_by_name_and_the_server_keeps_serving(served, bad, named):
    client, _engine = served
    good = dict(image=png_data_url(painting()), prompt="a cat", strength=0.5, steps=1, seed=0,
                guidance_scale=settings.DEFAULT_GUIDANCE)
    with pytest.raises(AppError, match=named):
        client.predict(**{**good, **bad}, api_name="/image_to_image")
    path, _ = client.predict(**good, api_name="/image_to_image")
    assert _api_pixels(path).shape == (384, 512, 3)


# --- the benchmark -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_img2img_benchmark_times_each_strength_on_each_lane_with_a_new_painting_every_frame(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--model", "preview", "--size", "256", "--steps", "1", "--mode", "img2img", "--strength",
                       "0.3,0.8", "--decoder", "full,tiny", "--repeat", "2", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["mode"], r["decoder"], r["strength"]) for r in runs] == [
        ("img2img", decoder, strength) for decoder in ("full", "tiny") for strength in (0.3, 0.8)]
    for run in runs:
        stages = run["stages_ms"]
        assert set(stages) == set(settings.FRAME_STAGES) and run["height"] == run["width"] == 256
        assert stages["image_encode"] > 0.5 and stages["control_encode"] == 0  # a new painting, no control map
        assert run["model_ms"] > stages["image_encode"] and run["p90_total_ms"] >= run["total_ms"] > 0
    printed = capsys.readouterr().out
    assert "img2img s=0.3" in printed and "img2img s=0.8" in printed and "image_encode" in printed


def test_the_benchmark_summary_compares_each_strength_with_the_same_strength_and_counts_the_image_encode(tmp_path):
    def run(strength: float, total: float) -> dict:
        stages = dict.fromkeys(settings.FRAME_STAGES, 0.0) | {"image_encode": 20.0, "denoise": 10.0, "decode": 30.0}
        return {"mode": "img2img", "decoder": "full", "steps": 1, "strength": strength, "width": 256, "height": 256,
                "device": "cpu", "model": "preview", "stages_ms": stages, "model_ms": 60.0, "total_ms": total,
                "p90_total_ms": total}

    eager, faster = tmp_path / "eager.json", tmp_path / "faster.json"
    eager.write_text(json.dumps({"runs": [run(0.3, 100.0), run(0.8, 200.0)]}))
    faster.write_text(json.dumps({"runs": [run(0.3, 50.0), run(0.8, 100.0)]}))
    rows = [line.split() for line in bench.summarize([eager, faster]).splitlines()[2:]]
    # variant, mode, s=..., decoder, steps, encode, denoise, decode, model, total, p90, ratio
    assert [(r[0], r[2], r[5], r[-1]) for r in rows] == [
        ("eager", "s=0.3", "20.0", "1.00"), ("eager", "s=0.8", "20.0", "1.00"),
        ("faster", "s=0.3", "20.0", "2.00"), ("faster", "s=0.8", "20.0", "2.00")]


def test_the_benchmark_s_strengths_are_checked_and_default_to_the_ui_s():
    assert bench.parse_args(["--mode", "img2img"]).strength == [settings.DEFAULT_PAINT_STRENGTH]
    assert bench.parse_args(["--mode", "t2i,img2img", "--strength", "0.2,1"]).strength == [0.2, 1.0]
    for bad in ("0", "1.5", "strong"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--mode", "img2img", "--strength", bad])
