"""Steady camera streams on the preview engine (``sprint_demo.steady``): an unchanged picture answered with the
stream's last made frame and no model work, never when any other input changed, a frame made anyway after the
refresh bound, the off switch, the API untouched, the frame counts; and the steadiness blend (0: exactly no blend;
above 0: the start latent is the lerp of the picture's and the previous frame's latents)."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
import torch

from sprint_demo import inputs, settings
from sprint_demo.engine import load_engine
from sprint_demo.sketches import png_data_url
from sprint_demo.steady import alike, thumbnail
from sprint_demo.tools.scenes import Camera
from sprint_demo.web import messages
from sprint_demo.web.api_handlers import ApiHandlers
from sprint_demo.web.handlers import FrameMaker

LONG_SIDE = 256  # small frames: fast; the skip rule does not depend on the size
SESSION = "camera:test"
VALUES = dict(prompt="an oil painting", mode="image", strength=0.5, steps=1, seed=7, guidance_scale=4.5,
              control_strength=1.0, decoder="full", steadiness=0.0)


@pytest.fixture()
def engine():
    engine = load_engine("preview", device="cpu", warmup=False, max_batch_size=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def still():
    """Frames of a still scene with sensor-like noise (no two equal)."""
    camera = Camera(320, 240, seed=4)
    return [camera.frame(i) for i in range(4)]


def request(engine, picture, skip: bool = True, **changes):
    return inputs.camera_request(picture, **(VALUES | changes), long_side=LONG_SIDE,
                                 edge_map=engine.photo_to_control_map, skip_unchanged=skip)


def no_model_work(engine):
    """Fails the test if the model runs (the denoiser or a decoder)."""
    error = AssertionError("model work for a frame that should have been skipped")
    return mock.patch.object(engine.renderer.pipe, "denoise", side_effect=error)


def test_noise_is_alike_and_a_one_pixel_pan_is_not():
    """The threshold between the two (figures in docs/PERFORMANCE.md): sensor noise at twice the usual level stays
    within it, a pan of one pixel at the capture size does not."""
    noisy = Camera(512, 384, noise=6.0, seed=1)
    first = thumbnail(noisy.frame(0))
    assert all(alike(first, thumbnail(noisy.frame(i))) for i in range(1, 8))
    pan = Camera(512, 384, pan=1.0, seed=1, frames=4)
    assert not alike(thumbnail(pan.frame(0)), thumbnail(pan.frame(1)))


def test_an_unchanged_picture_gets_the_last_frame_without_model_work(engine, still):
    made = engine.render(request(engine, still[0]), session=SESSION)
    assert not made.skipped
    with no_model_work(engine):
        again = engine.render(request(engine, still[1]), session=SESSION)
    assert again.skipped and again.image.tobytes() == made.image.tobytes()
    assert messages.CAMERA_UNCHANGED in messages.readout(again)
    assert engine.frame_counts == {"made": 1, "reused": 0, "skipped": 1}
    other = engine.render(request(engine, still[2]), session="camera:other")  # another stream: its own frame
    assert not other.skipped


@pytest.mark.parametrize("change", [
    {"prompt": "a watercolour"}, {"seed": 8}, {"strength": 0.6}, {"steps": 2}, {"mode": "edges"},
    {"decoder": "tiny"}, {"guidance_scale": 5.0}, {"steadiness": 0.5},
], ids=lambda change: next(iter(change)))
def test_a_change_of_any_other_input_makes_a_frame(engine, still, change):
    engine.render(request(engine, still[0]), session=SESSION)
    changed = engine.render(request(engine, still[1], **change), session=SESSION)
    assert not changed.skipped and engine.frame_counts["made"] == 2 and engine.frame_counts["skipped"] == 0


def test_a_frame_is_made_after_the_refresh_bound_and_after_a_stop(engine, still):
    now = [100.0]
    engine.steady.clock = lambda: now[0]
    engine.render(request(engine, still[0]), session=SESSION)
    now[0] += settings.SKIP_REFRESH_S - 0.01
    assert engine.render(request(engine, still[1]), session=SESSION).skipped
    now[0] += 0.01
    assert not engine.render(request(engine, still[2]), session=SESSION).skipped  # the bound: made
    assert engine.render(request(engine, still[3]), session=SESSION).skipped  # counted from the new frame
    engine.cancel(SESSION)  # Stop: the next frame starts afresh
    assert not engine.render(request(engine, still[0]), session=SESSION).skipped
    assert engine.frame_counts == {"made": 3, "reused": 0, "skipped": 2}


def test_the_off_switch(engine, still, monkeypatch):
    monkeypatch.setattr(settings, "CAMERA_SKIP_UNCHANGED", False)
    first = inputs.camera_request(still[0], **VALUES, long_side=LONG_SIDE, edge_map=engine.photo_to_control_map)
    assert first.thumbnail is None
    engine.render(first, session=SESSION)
    assert not engine.render(request(engine, still[1], skip=False), session=SESSION).skipped
    assert engine.frame_counts["skipped"] == 0


def test_the_api_and_requests_without_a_thumbnail_are_never_skipped(engine, still):
    api = ApiHandlers(FrameMaker(engine))
    for picture in still[:2]:
        engine.render(inputs.image_request(picture, "a fox", 0.5, 1, 3, 4.5, LONG_SIDE), session=SESSION)
        api.image_to_image(png_data_url(picture), "a fox", 0.5, 1, 3, 4.5)
    stats = api.engine_stats()
    assert stats["frames"] == {"made": 4, "reused": 0, "skipped": 0}


def test_steadiness_zero_is_exactly_no_blend(engine, still):
    """Steadiness 0 with a previous frame present runs the frame without it: the same pixels, one encode."""
    plain = request(engine, still[0], skip=False)
    with_previous = replace(plain, previous_image=still[1].resize((plain.width, plain.height)), previous_key="x")
    pixels = engine.render(plain).image.tobytes()
    engine.clear_caches()
    vae = engine.renderer.pipe.vae
    with mock.patch.object(vae, "encode", wraps=vae.encode) as encode:
        assert engine.render(with_previous).image.tobytes() == pixels
    assert encode.call_count == 1


def test_steadiness_blends_the_previous_frame_into_the_start_latent(engine, still):
    """The start latent of a frame with steadiness s is lerp(picture latent, previous frame's latent, s): the
    previous frame is the stream's last made frame, handed over by the engine (same size only)."""
    first = engine.render(request(engine, still[0], skip=False, steadiness=0.5), session=SESSION)
    second = request(engine, still[1], skip=False, steadiness=0.5)
    assert second.previous_image is None  # the boundary knows no history: the engine fills it in
    renderer, seen = engine.renderer, {}
    real_sample = renderer.pipe.sample

    def sample(*args, **kwargs):
        seen["image"] = kwargs["image"].clone()
        return real_sample(*args, **kwargs)

    with mock.patch.object(renderer.pipe, "sample", side_effect=sample):
        engine.render(second, session=SESSION)
    height, width = second.height, second.width
    vae = renderer.autoencoder("full")
    picture = renderer.picture_latents(second, height, width, vae)
    previous = renderer.pipe.prepare_image_latents(first.image, height, width, vae=vae)
    assert torch.equal(seen["image"], torch.lerp(picture, previous, 0.5))
    assert not torch.equal(seen["image"], picture)


def test_steadiness_is_checked_and_edges_mode_has_none(engine, still):
    for bad in (-0.1, settings.MAX_STEADINESS + 0.01, "much", float("nan")):
        with pytest.raises(inputs.InputError, match="steadiness"):
            request(engine, still[0], steadiness=bad)
    assert request(engine, still[0], mode="edges", steadiness=0.5).steadiness == 0.0
    assert request(engine, still[0], steadiness="0.25").steadiness == 0.25


def test_a_moving_scene_makes_every_frame(engine):
    pan = Camera(320, 240, pan=4.0, seed=2, frames=4)
    frames = [engine.render(request(engine, pan.frame(i)), session=SESSION) for i in range(3)]
    assert not any(frame.skipped for frame in frames)
    assert np.abs(np.asarray(frames[0].image, float) - np.asarray(frames[2].image, float)).mean() > 0
