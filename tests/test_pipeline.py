"""SanaSprintControlNetPipeline against diffusers' own SanaSprintPipeline (the proof of correctness)."""

from __future__ import annotations

import pytest
import torch
from diffusers import SanaSprintPipeline
from PIL import Image, ImageDraw

from sprint_demo.models.pipeline import (
    COMPLEX_HUMAN_INSTRUCTION,
    MAX_TIMESTEPS,
    TWO_STEP_INTERMEDIATE_TIMESTEPS,
)

SIZES = [(256, 256), (256, 384)]  # (height, width): square and non-square


def reference_pipeline(pipe) -> SanaSprintPipeline:
    ref = SanaSprintPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler)
    ref.set_progress_bar_config(disable=True)
    return ref


def sketch(width: int, height: int) -> Image.Image:
    """A control map: white lines on black."""
    image = Image.new("RGB", (width, height), "black")
    draw = ImageDraw.Draw(image)
    draw.line([(10, 10), (width - 20, height // 2)], fill="white", width=5)
    draw.ellipse([width // 3, height // 3, width // 2, height // 2], outline="white", width=4)
    return image


def run(pipe, steps, height, width, **kwargs):
    """One call; ``complex_human_instruction`` left at each pipeline's default (the trained instruction)."""
    return pipe(
        prompt="a red house by a lake",
        num_inference_steps=steps,
        height=height,
        width=width,
        generator=torch.Generator().manual_seed(7),
        output_type="pt",
        use_resolution_binning=False,
        **kwargs,
    ).images


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("height,width", SIZES)
def test_matches_diffusers_without_control_and_at_scale_zero(preview, steps, height, width):
    """Both pipelines at their default prompt encoding, the instruction neither side is given: torch.equal."""
    pipe = preview.pipe
    # diffusers needs intermediate_timesteps=None for any step count but 2; ours drops it by itself.
    expected = run(reference_pipeline(pipe), steps, height, width,
                   intermediate_timesteps=TWO_STEP_INTERMEDIATE_TIMESTEPS if steps == 2 else None)
    assert torch.equal(run(pipe, steps, height, width), expected)
    at_zero = run(pipe, steps, height, width, control_image=sketch(width, height), controlnet_conditioning_scale=0.0)
    assert torch.equal(at_zero, expected)


@pytest.mark.parametrize("steps", [1, 2])
def test_control_changes_the_image_at_scale_one(preview, steps):
    pipe = preview.pipe
    plain = run(pipe, steps, 256, 256, complex_human_instruction=None)
    controlled = run(pipe, steps, 256, 256, control_image=sketch(256, 256), controlnet_conditioning_scale=1.0,
                     complex_human_instruction=None)
    assert controlled.shape == plain.shape
    assert (controlled - plain).abs().mean() > 1e-3


def test_precomputed_prompt_embeddings_and_control_latents_give_identical_images(preview):
    pipe = preview.pipe
    control = sketch(256, 384)
    direct = run(pipe, 1, 256, 384, control_image=control)
    embeds, mask = pipe.encode_prompt("a red house by a lake", device="cpu",
                                      complex_human_instruction=COMPLEX_HUMAN_INSTRUCTION)
    latents = pipe.prepare_control_latents(control, 256, 384)
    cached = pipe(
        prompt_embeds=embeds, prompt_attention_mask=mask, num_inference_steps=1, height=256, width=384,
        generator=torch.Generator().manual_seed(7), output_type="pt", use_resolution_binning=False,
        control_latents=latents,
    ).images
    assert torch.equal(cached, direct)


@torch.no_grad()
def test_denoise_runs_a_batch_of_rows_each_with_its_own_values(preview):
    """The denoise stage over a batch: each row has its own prompt, seed, guidance and control strength (per-row
    tensors), and gives what that row gives alone. Batched kernels may round differently, hence the tolerance."""
    pipe = preview.pipe
    prompts, seeds, guidance, strength = ["a red house", "a blue boat"], [1, 2], [2.0, 6.0], [0.3, 1.2]
    embeds, mask = pipe.encode_prompt(prompts, device="cpu", complex_human_instruction=None)
    control = pipe.prepare_control_latents(sketch(256, 256), 256, 256)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    batch = pipe.denoise(pipe.prepare_initial_latents(2, 256, 256, generators), embeds, mask,
                         pipe.prepare_timesteps(2),
                         torch.tensor(guidance), control_latents=control,
                         controlnet_conditioning_scale=torch.tensor(strength), generator=generators)
    for row in range(2):
        generator = torch.Generator().manual_seed(seeds[row])
        alone = pipe.denoise(pipe.prepare_initial_latents(1, 256, 256, generator), embeds[row:row + 1],
                             mask[row:row + 1], pipe.prepare_timesteps(2), guidance[row], control_latents=control,
                             controlnet_conditioning_scale=strength[row], generator=generator)
        torch.testing.assert_close(batch[row:row + 1], alone, rtol=1e-4, atol=1e-4)
    assert (batch[0] - batch[1]).abs().mean() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode,size", [("RGB", (384, 256)), ("L", (384, 256)), ("RGBA", (300, 200))])
def test_control_image_conversion_equals_diffusers_preprocess(preview, dtype, mode, size):
    """Every uint8 level, colour and grey input, and a map that must be resized first: the same tensor as
    diffusers' image_processor.preprocess (with the pipeline's own processor config), values and layout."""
    pipe = preview.pipe
    levels = torch.arange(256 * 3, dtype=torch.int64).remainder(256).to(torch.uint8)
    pixels = levels.repeat(size[0] * size[1] * 3 // levels.numel() + 1)[: size[0] * size[1] * 3]
    image = Image.fromarray(pixels.reshape(size[1], size[0], 3).numpy()).convert(mode)
    expected = pipe.image_processor.preprocess(image.convert("RGB"), height=256, width=384).to(dtype)
    old_dtype = pipe.vae.dtype
    pipe.vae.to(dtype)
    try:
        got = pipe.control_image_to_tensor(image, 256, 384)
    finally:
        pipe.vae.to(old_dtype)
    assert got.dtype == dtype and got.shape == (1, 3, 256, 384)
    assert torch.equal(got, expected)
    assert got.stride() == expected.stride()  # the encoder sees the same memory layout
    assert torch.equal(pipe.vae.encode(got.float()).latent, pipe.vae.encode(expected.float()).latent)


def test_resolution_binning_matches_diffusers(preview):
    pipe = preview.pipe
    kwargs = dict(prompt="a cat", num_inference_steps=1, height=320, width=448, output_type="pt",
                  complex_human_instruction=None, use_resolution_binning=True)
    ours = pipe(**kwargs, generator=torch.Generator().manual_seed(3)).images
    theirs = reference_pipeline(pipe)(**kwargs, intermediate_timesteps=None,
                                      generator=torch.Generator().manual_seed(3)).images
    assert ours.shape == (1, 3, 320, 448)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(num_inference_steps=-1), "got -1"),
        (dict(num_inference_steps=2.0), "got 2.0"),
        (dict(num_inference_steps=True), "got True"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(controlnet_conditioning_scale=float("inf")), "inf"),
        (dict(control_image="not an image"), "control_image"),
        (dict(num_inference_steps=4, intermediate_timesteps=1.1), "num_inference_steps != 2"),
        (dict(height=250), "250"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(preview, kwargs, needle):
    base = dict(prompt="x", height=256, width=256, use_resolution_binning=False, output_type="latent")
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        preview.pipe(**(base | kwargs))


def test_control_without_a_controlnet_is_refused(preview):
    pipe = preview.pipe
    bare = type(pipe)(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler)
    with pytest.raises(ValueError, match="no controlnet"):
        bare(prompt="x", height=256, width=256, control_image=sketch(256, 256), use_resolution_binning=False)


def test_step_adaptive_schedule(preview):
    pipe = preview.pipe
    seen = {}
    for steps in (1, 2, 3, 4):
        pipe(prompt="x", num_inference_steps=steps, height=64, width=64, use_resolution_binning=False,
             output_type="latent", complex_human_instruction=None)
        seen[steps] = pipe.scheduler.timesteps.tolist()
    assert len(seen[1]) == 2 and len(seen[4]) == 5
    assert seen[2][1] == pytest.approx(TWO_STEP_INTERMEDIATE_TIMESTEPS)  # the 2-step intermediate time
    assert seen[2][0] == pytest.approx(MAX_TIMESTEPS)


def test_accepts_every_keyword_of_sana_sprint_pipeline():
    import inspect

    from sprint_demo.models.pipeline import SanaSprintControlNetPipeline

    theirs = set(inspect.signature(SanaSprintPipeline.__call__).parameters)
    ours = inspect.signature(SanaSprintControlNetPipeline.__call__).parameters
    assert theirs <= set(ours)
    assert {"control_image", "control_latents", "controlnet_conditioning_scale"} <= set(ours)


@pytest.mark.parametrize("control", [False, True], ids=["plain", "controlled"])
@pytest.mark.parametrize("image_to_image", [False, True], ids=["text_to_image", "image_to_image"])
def test_the_lora_scale_of_attention_kwargs_reaches_the_models_with_and_without_control(
    preview, monkeypatch, control, image_to_image
):
    """SanaTransformer2DModel uses ``attention_kwargs`` for one thing: their ``scale`` multiplies its LoRA layers
    during the forward (diffusers' ``apply_lora_scale``, with the PEFT backend); diffusers' ControlNet pipeline
    hands the ControlNet the same. Without PEFT installed the scaling calls are recorded instead (the backend flag
    set, ``scale_lora_layers`` / ``unscale_lora_layers`` replaced): every step must scale the transformer, and
    with control the ControlNet inside it, by the caller's scale, and unscale them after."""
    import diffusers.utils
    from diffusers.utils import peft_utils

    from sprint_demo.models.pipeline import SanaSprintControlNetImg2ImgPipeline

    calls = []
    monkeypatch.setattr(diffusers.utils, "USE_PEFT_BACKEND", True)
    monkeypatch.setattr(peft_utils, "scale_lora_layers", lambda model, weight: calls.append(("scale", model, weight)))
    monkeypatch.setattr(peft_utils, "unscale_lora_layers",
                        lambda model, weight=None: calls.append(("unscale", model, weight)))
    pipe = preview.pipe
    extra = dict(control_image=sketch(64, 64)) if control else {}
    if image_to_image:
        pipe = SanaSprintControlNetImg2ImgPipeline(**pipe.components)
        pipe.set_progress_bar_config(disable=True)
        extra |= dict(image=sketch(64, 64), strength=1.0)
    attention_kwargs = {"scale": 0.5}
    run(pipe, 2, 64, 64, attention_kwargs=attention_kwargs, **extra)
    transformer, controlnet = pipe.transformer, pipe.controlnet
    step = [("scale", transformer, 0.5), ("unscale", transformer, 0.5)]
    if control:
        step[1:1] = [("scale", controlnet, 0.5), ("unscale", controlnet, 0.5)]
    assert calls == step * 2  # modules compare by identity
    assert attention_kwargs == {"scale": 0.5}  # the caller's dict is left as it was
