"""``SanaSprintControlNetImg2ImgPipeline`` against diffusers' ``SanaSprintImg2ImgPipeline``; the continuous strength.

Both pipelines share the tiny preview components (same process, same objects); outputs are compared with
``torch.equal``. diffusers' image-to-image refuses its own default ``intermediate_timesteps`` at any step count
but 2, so it is passed None there (ours drops the default by itself, as the text-to-image pipeline does). The
feature calls pass ``complex_human_instruction=None`` to both (a test convenience: the instruction is 1,674 byte
tokens on the preview); ``test_default_arguments_match_diffusers`` leaves it out on both sides.
"""

from __future__ import annotations

import math
import re

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import SanaSprintImg2ImgPipeline
from PIL import ImageDraw

from sprint_demo import SanaSprintControlNetImg2ImgPipeline
from sprint_demo.models.pipeline import (
    MAX_TIMESTEPS,
    TWO_STEP_INTERMEDIATE_TIMESTEPS,
    continuous_strength_timesteps,
)

PROMPT = "a red house by a lake"
SIZE = 64  # 2x2 latents: the preview transformer and DC-AE run in milliseconds
SEED = 7
BASE_COMPONENTS = ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")
OMIT = object()  # a keyword left out of the call, so the pipeline's own default applies


@pytest.fixture(scope="module")
def pipes(preview) -> tuple[SanaSprintControlNetImg2ImgPipeline, SanaSprintImg2ImgPipeline]:
    ours = SanaSprintControlNetImg2ImgPipeline(**preview.pipe.components)
    theirs = SanaSprintImg2ImgPipeline(**{name: getattr(ours, name) for name in BASE_COMPONENTS})
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def picture(width: int = SIZE, height: int = SIZE, shift: int = 0) -> PIL.Image.Image:
    """An input image: a coloured background with shapes (``shift`` moves them, for a second, different image)."""
    image = PIL.Image.new("RGB", (width, height), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle([width // 4 + shift, height // 3, width // 2 + shift, height - 8], fill=(200, 60, 40))
    draw.ellipse([width // 2, 4 + shift, width - 6, height // 3 + shift], fill=(250, 220, 80))
    return image


def sketch(width: int = SIZE, height: int = SIZE) -> PIL.Image.Image:
    """A control map: white lines on black."""
    image = PIL.Image.new("RGB", (width, height), "black")
    ImageDraw.Draw(image).line([(4, 4), (width - 8, height // 2)], fill="white", width=3)
    return image


def to_unit_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """PIL -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def call(pipe, image=None, strength: float = 0.6, steps: int = 2, seed: int | list[int] = SEED, **kwargs):
    """One image-to-image generation with the module's small defaults."""
    generator = [torch.Generator().manual_seed(s) for s in seed] if isinstance(seed, list) else (
        torch.Generator().manual_seed(seed))
    args = dict(prompt=PROMPT, image=picture() if image is None else image, strength=strength,
                num_inference_steps=steps, height=SIZE, width=SIZE, generator=generator, output_type="pt",
                use_resolution_binning=False, complex_human_instruction=None,
                intermediate_timesteps=TWO_STEP_INTERMEDIATE_TIMESTEPS if steps == 2 else None) | kwargs
    return pipe(**{k: v for k, v in args.items() if v is not OMIT})


def run_both(pipes, **kwargs):
    return [call(pipe, **kwargs) for pipe in pipes]


def same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, PIL.Image.Image):
        return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    return a.shape == b.shape and torch.equal(a, b)


class StepTimes:
    """A step callback that records the timestep of each step."""

    def __init__(self):
        self.times = []

    def __call__(self, pipe, step, timestep, tensors):
        self.times.append(float(timestep))
        return {}


# --- Bit for bit with diffusers (no control image, timesteps=None) --------------------------------------

@pytest.mark.parametrize("strength", [0.3, 0.5, 0.6, 0.9])
@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_matches_diffusers_at_every_step_count_and_strength(pipes, steps, strength):
    ours, theirs = run_both(pipes, steps=steps, strength=strength, seed=steps * 10 + int(strength * 10))
    assert same(ours.images, theirs.images)


INPUTS = {
    "pil": lambda: picture(),
    "pil_resized": lambda: picture(80, 48),
    "tensor_unit": lambda: to_unit_tensor(picture()),
    "tensor_signed": lambda: to_unit_tensor(picture()) * 2 - 1,
    "tensor_3d_resized": lambda: to_unit_tensor(picture(96, 96))[0],
    "pil_list": lambda: [picture()],
}


@pytest.mark.parametrize("steps,strength", [(2, 0.6), (1, 0.6), (4, 0.45)])
def test_default_arguments_match_diffusers(pipes, steps, strength):
    """No ``complex_human_instruction`` on either side: both prepend the instruction the model was trained with,
    which changes the image; None still asks both for none."""
    ours, theirs = run_both(pipes, steps=steps, strength=strength, complex_human_instruction=OMIT)
    assert same(ours.images, theirs.images)
    assert not same(theirs.images, call(pipes[1], steps=steps, strength=strength).images)


@pytest.mark.slow
def test_every_argument_left_at_its_default_matches_diffusers(pipes):
    """Only the prompt, the picture and a seeded generator: 2 steps, strength 0.6, 1024x1024 with resolution
    binning, guidance 4.5, the instruction, PIL output."""
    images = [pipe(PROMPT, image=picture(), generator=torch.Generator().manual_seed(SEED)).images for pipe in pipes]
    assert images[0][0].size == (1024, 1024)
    assert same(images[0], images[1])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", INPUTS.keys())
def test_matches_diffusers_for_every_input_kind_and_seed(pipes, kind, seed):
    ours, theirs = run_both(pipes, image=INPUTS[kind](), seed=seed)
    assert same(ours.images, theirs.images)


def test_different_inputs_seeds_and_strengths_differ(pipes):
    """So that the comparisons above could fail: each of these changes diffusers' output."""
    theirs = pipes[1]
    base = call(theirs).images
    for kwargs in (dict(seed=SEED + 1), dict(strength=0.3), dict(image=picture(shift=9)), dict(steps=1)):
        assert not same(call(theirs, **kwargs).images, base), kwargs


FEATURES = {
    "num_images_per_prompt": dict(num_images_per_prompt=2),
    "prompt_list_several_each": dict(prompt=["a cat", PROMPT], num_images_per_prompt=2),
    "image_batch": dict(prompt=["a cat", PROMPT], image=[picture(), picture(shift=9)], seed=[1, 2]),
    "strength_one": dict(strength=1.0),
    "guidance_scale": dict(guidance_scale=2.0),
    "max_timesteps": dict(max_timesteps=1.2, steps=3),
    "intermediate_timesteps": dict(intermediate_timesteps=0.9, strength=1.0),
    "non_square": dict(height=SIZE, width=2 * SIZE, image=picture(2 * SIZE, SIZE)),
    "latents": dict(latents=torch.randn(1, 32, 2, 2, generator=torch.Generator().manual_seed(99))),
    "output_np": dict(output_type="np"),
    "output_pil": dict(output_type="pil"),
    "output_latent": dict(output_type="latent"),
    "return_dict_false": dict(return_dict=False),
}


@pytest.mark.parametrize("kwargs", FEATURES.values(), ids=FEATURES.keys())
def test_keyword_matches_diffusers(pipes, kwargs):
    ours, theirs = run_both(pipes, **kwargs)
    if kwargs.get("return_dict") is False:
        assert type(ours) is tuple and type(theirs) is tuple
        ours, theirs = ours[0], theirs[0]
    else:
        ours, theirs = ours.images, theirs.images
    assert same(ours, theirs)


def test_step_callbacks_match_diffusers(pipes):
    """The callback sees the same steps, times and tensors; a callback's latents replace the pipeline's."""
    records = []
    for pipe in pipes:
        calls = []

        def callback(pipe, step, timestep, tensors, calls=calls):
            calls.append((step, float(timestep), {k: v.clone() for k, v in tensors.items()}))
            return {"latents": tensors["latents"] * 0.5} if step == 0 else {}

        image = call(pipe, steps=4, strength=0.6, callback_on_step_end=callback,
                     callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]).images
        records.append((image, calls, pipe.num_timesteps))
    (ours, ours_calls, ours_count), (theirs, theirs_calls, theirs_count) = records
    assert same(ours, theirs) and ours_count == theirs_count == 3  # int(4 - 4 * 0.6) = 1 step cut, 3 run
    assert [(s, t) for s, t, _ in ours_calls] == [(s, t) for s, t, _ in theirs_calls]
    assert all(torch.equal(a[2][k], b[2][k]) for a, b in zip(ours_calls, theirs_calls) for k in a[2])


# --- With a control image -------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 2])
def test_control_changes_the_image_and_scale_zero_is_plain_image_to_image(pipes, steps):
    ours, theirs = pipes
    plain = call(ours, steps=steps).images
    assert same(plain, call(theirs, steps=steps).images)
    controlled = call(ours, steps=steps, control_image=sketch(), controlnet_conditioning_scale=1.0).images
    assert (controlled - plain).abs().mean() > 1e-3
    at_zero = call(ours, steps=steps, control_image=sketch(), controlnet_conditioning_scale=0.0).images
    assert same(at_zero, plain)


def test_precomputed_control_and_image_latents_give_the_same_image(pipes):
    ours = pipes[0]
    direct = call(ours, control_image=sketch()).images
    control_latents = ours.prepare_control_latents(sketch(), SIZE, SIZE)
    image_latents = ours.prepare_image_latents(picture(), SIZE, SIZE)
    cached = call(ours, image=image_latents, control_latents=control_latents).images
    assert same(cached, direct)


# --- Custom timesteps and strength ---------------------------------------------------------------------

def test_without_timesteps_strength_cuts_the_schedule_as_diffusers(pipes):
    """4 steps on linspace(1.5708, 0, 5) at strength 0.5: int(4 - 2) = 2 steps cut, 2 run, from 0.7854."""
    ours, theirs = pipes
    recorders = [StepTimes(), StepTimes()]
    outputs = [call(pipe, steps=4, strength=0.5, callback_on_step_end=rec).images
               for pipe, rec in zip(pipes, recorders)]
    full = torch.linspace(MAX_TIMESTEPS, 0, 5).tolist()
    assert recorders[0].times == recorders[1].times == full[2:4]
    assert same(*outputs)


@pytest.mark.parametrize("strength", [0.3, 0.9])
def test_custom_timesteps_run_exactly_as_given_and_strength_does_not_cut_them(pipes, strength):
    ours = pipes[0]
    schedule = [1.1, 0.8, 0.35, 0.0]
    recorder = StepTimes()
    image = call(ours, steps=3, strength=strength, timesteps=schedule, max_timesteps=None,
                 callback_on_step_end=recorder).images
    assert recorder.times == torch.tensor(schedule[:-1]).tolist()  # all three, in float32
    assert same(image, call(ours, steps=3, strength=0.6, timesteps=schedule, max_timesteps=None).images)


def test_custom_timesteps_equal_to_diffusers_cut_give_diffusers_image(pipes):
    """diffusers cannot run custom timesteps (a TypeError in 0.42.1); its discrete cut can be written as custom
    timesteps, and ours then gives diffusers' image bit for bit: custom timesteps are run right."""
    ours, theirs = pipes
    expected = call(theirs, steps=4, strength=0.5).images
    cut = torch.linspace(MAX_TIMESTEPS, 0, 5)[2:].tolist()
    assert same(call(ours, steps=2, strength=0.5, timesteps=cut, max_timesteps=None).images, expected)


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_strength_outside_zero_to_one_is_a_value_error_naming_it(pipes, strength):
    ours = pipes[0]
    pattern = re.escape(f"strength must be a number in (0, 1], got {strength!r}")
    with pytest.raises(ValueError, match=pattern):
        call(ours, strength=strength)
    with pytest.raises(ValueError, match=pattern):
        continuous_strength_timesteps(strength, 1)
    with pytest.raises(ValueError, match=pattern):
        ours.strength_timesteps(ours.prepare_timesteps(2), strength)


def test_no_image_is_a_value_error(pipes):
    with pytest.raises(ValueError, match="needs an image"):
        pipes[0](prompt=PROMPT, image=None, height=SIZE, width=SIZE, use_resolution_binning=False)


# --- The continuous strength rule ----------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_continuous_schedule_at_strength_one_is_the_text_to_image_schedule(pipes, steps):
    expected = pipes[0].prepare_timesteps(steps).tolist()
    assert continuous_strength_timesteps(1.0, steps) == expected


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("strength", [0.05, 0.3, 0.6, 0.97])
def test_continuous_schedule_starts_at_strength_times_max_and_scales_the_text_to_image_one(steps, strength):
    schedule = continuous_strength_timesteps(strength, steps)
    base = continuous_strength_timesteps(1.0, steps)
    assert len(schedule) == steps + 1 and schedule[-1] == 0.0
    assert schedule[0] == pytest.approx(strength * MAX_TIMESTEPS, rel=1e-6)
    assert schedule == pytest.approx([t * strength for t in base], rel=1e-6)
    assert all(a > b for a, b in zip(schedule, schedule[1:]))


def test_continuous_schedule_checks_its_step_count_and_intermediate_time():
    assert continuous_strength_timesteps(0.5, 2, intermediate_timesteps=None) == pytest.approx(
        [MAX_TIMESTEPS / 2, MAX_TIMESTEPS / 4, 0.0], rel=1e-6)
    assert continuous_strength_timesteps(0.5, 2)[1] == pytest.approx(TWO_STEP_INTERMEDIATE_TIMESTEPS / 2, rel=1e-6)
    with pytest.raises(ValueError, match="positive integer, got 0"):
        continuous_strength_timesteps(0.5, 0)
    with pytest.raises(ValueError, match="2 steps only, got 3 steps"):
        continuous_strength_timesteps(0.5, 3, intermediate_timesteps=0.9)


def test_continuous_start_agrees_with_diffusers_discrete_strength_where_that_is_exact(pipes):
    """4 linear steps at strength 0.5: diffusers starts at the schedule's middle time, as ours does (and runs 2 of
    the 4 steps, where ours runs all 4 below it)."""
    discrete = torch.linspace(MAX_TIMESTEPS, 0, 5)[2].item()
    assert continuous_strength_timesteps(0.5, 4)[0] == discrete


def continuous(pipe, strength: float, steps: int = 1, **kwargs):
    return call(pipe, strength=strength, steps=steps, timesteps=continuous_strength_timesteps(strength, steps),
                max_timesteps=None, **kwargs).images


@pytest.mark.parametrize("steps", [1, 2])
def test_continuous_strength_moves_the_image_smoothly_toward_text_to_image(pipes, steps):
    """At 1 step diffusers' strength cannot do this: every strength keeps the one step and starts from noise."""
    ours, theirs = pipes
    images = {s: continuous(ours, s, steps) for s in (0.3, 0.6, 1.0)}
    distance = {s: (images[s] - images[1.0]).abs().mean().item() for s in (0.3, 0.6)}
    assert distance[0.3] > distance[0.6] > 1e-3
    assert (images[0.3] - images[0.6]).abs().mean() > 1e-3
    if steps == 1:
        assert same(call(theirs, steps=1, strength=0.3).images, call(theirs, steps=1, strength=1.0).images)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_at_strength_one_the_image_barely_matters_and_text_to_image_is_within_a_hair(pipes, preview, steps):
    """cos(float32(1.57080)) is about -3.7e-6, not 0: the image leaves a trace of that order (documented; the
    app runs text-to-image at strength 1)."""
    ours = pipes[0]
    first, second = continuous(ours, 1.0, steps), continuous(ours, 1.0, steps, image=picture(shift=9))
    assert not torch.equal(first, second)
    torch.testing.assert_close(first, second, rtol=0, atol=1e-4)
    text_to_image = preview.pipe(prompt=PROMPT, num_inference_steps=steps, height=SIZE, width=SIZE,
                                 generator=torch.Generator().manual_seed(SEED), output_type="pt",
                                 use_resolution_binning=False, complex_human_instruction=None).images
    torch.testing.assert_close(first, text_to_image, rtol=0, atol=1e-4)
    assert 1e-6 < abs(math.cos(torch.tensor(MAX_TIMESTEPS).item())) < 1e-5


def test_the_stages_compose_into_the_call(pipes):
    """What an engine runs instead of ``__call__``: continuous strength, image latents, noise, denoise, decode."""
    ours = pipes[0]
    strength, steps = 0.45, 2
    expected = continuous(ours, strength, steps)
    embeds, mask = ours.encode_prompt(PROMPT, device="cpu", complex_human_instruction=None)
    timesteps = ours.prepare_timesteps(steps, continuous_strength_timesteps(strength, steps), max_timesteps=None)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        start = ours.noise_image_latents(ours.prepare_image_latents(picture(), SIZE, SIZE), timesteps[:1], generator)
        latents = ours.denoise(start, embeds, mask, timesteps, 4.5, generator=generator)
        image = ours.decode_latents(latents, SIZE, SIZE, output_type="pt")
    assert same(image, expected)
