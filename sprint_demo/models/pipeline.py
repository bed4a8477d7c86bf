"""``SanaSprintControlNetPipeline``: SANA-Sprint's step-adaptive sampler with optional HED ControlNet control.

It is ``diffusers.SanaSprintPipeline`` (prompt encoding, latents: inherited) with the frame split into stages that
callers may run, time and cache one by one, and a ``__call__`` that runs them in order:

=============================  ========================================================================
``encode_prompt``              prompt -> (embeddings, mask) (inherited)
``resolution``                 requested (height, width) -> the size the model runs at (resolution binning)
``prepare_control_latents``    control map -> scaled control latent (a VAE encode)
``prepare_timesteps``          step count -> the SCM schedule (step-adaptive: 1 to 4 steps, or any)
``prepare_initial_latents``    generator -> noise latents, already scaled by the scheduler's ``sigma_data``
``denoise``                    the SCM loop, ControlNet residuals added when control latents are given
``decode_latents``             latents -> images, cropped back to the requested size when binning moved it
=============================  ========================================================================

The stages carry no ``torch.no_grad``: callers choose inference mode (``__call__`` does) or run gradients through
them (ControlNet training). Without control, or at ``controlnet_conditioning_scale=0``, the output is
``torch.equal`` to SanaSprintPipeline's for the same components and seed (tests/test_pipeline.py).

The denoising loop follows diffusers ``pipelines/sana/pipeline_sana_sprint.py`` (SCM / TrigFlow math); the
control image handling follows diffusers ``pipelines/sana/pipeline_sana_controlnet.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import SanaSprintPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_1024_BIN
from diffusers.pipelines.sana.pipeline_output import SanaPipelineOutput

from .controlnet import ControlInputs, SanaSprintControlNetModel, sana_transformer_forward

ControlImage = PIL.Image.Image | torch.Tensor

# SanaSprintPipeline's sampling defaults, written once here and used by the signatures below.
MAX_TIMESTEPS = 1.57080  # pi/2 in TrigFlow time: where sampling starts (pure noise)
TWO_STEP_INTERMEDIATE_TIMESTEPS = 1.3  # the 2-step schedule's middle time; other step counts have none
MAX_SEQUENCE_LENGTH = 300  # prompt tokens the text encoder keeps


class SanaSprintControlNetPipeline(SanaSprintPipeline):
    """Components: tokenizer, text_encoder, vae, transformer, scheduler and an optional ``controlnet``."""

    _optional_components = ["controlnet"]
    model_cpu_offload_seq = "text_encoder->controlnet->transformer->vae"

    def __init__(self, tokenizer, text_encoder, vae, transformer, scheduler, controlnet=None):
        super().__init__(tokenizer, text_encoder, vae, transformer, scheduler)
        self.register_modules(controlnet=controlnet)
        self.controlled_forward = sana_transformer_forward  # the step with control; speedups may compile it
        self._pixel_levels: torch.Tensor | None = None  # uint8 -> model input table (control_image_to_tensor)
        self._interrupt = False  # diffusers' `interrupt` property reads it; a step callback may set it

    # --- stages ---------------------------------------------------------------------------------------------

    def resolution(self, height: int, width: int, use_resolution_binning: bool) -> tuple[int, int]:
        """The (height, width) the model runs at: with binning, the nearest of the 1024px model's trained aspect
        ratios (as SanaSprintPipeline); ``decode_latents`` crops the images back to the requested size."""
        if not use_resolution_binning:
            return height, width
        if self.transformer.config.sample_size != 32:
            raise ValueError(
                f"resolution binning needs transformer sample_size 32, got {self.transformer.config.sample_size}"
            )
        return self.image_processor.classify_height_width_bin(height, width, ratios=ASPECT_RATIO_1024_BIN)

    def prepare_control_latents(
        self, control_image: ControlImage, height: int, width: int, batch_size: int = 1, vae=None
    ) -> torch.Tensor:
        """Control map (PIL RGB, white lines on black; or a (B, 3, H, W) tensor in [-1, 1]) -> (B, C, H/f, W/f)
        latent, ``vae.encode(x) * vae.config.scaling_factor``. ``vae`` defaults to the pipeline's; any autoencoder
        whose ``encode(x, return_dict=False)[0]`` is the latent works (AutoencoderDC, AutoencoderTiny). Callers
        cache this per canvas: it is a full encode."""
        vae = self.vae if vae is None else vae
        if isinstance(control_image, PIL.Image.Image):
            image = self.control_image_to_tensor(control_image, height, width, vae.dtype)
        elif isinstance(control_image, torch.Tensor) and control_image.ndim == 4:
            image = control_image.to(device=self._execution_device, dtype=vae.dtype)
        else:
            raise ValueError(f"control_image must be a PIL image or a (B, 3, H, W) tensor, got {control_image!r:.80}")
        latents = vae.encode(image, return_dict=False)[0] * vae.config.scaling_factor
        if latents.shape[0] < batch_size:  # one map for every image of the batch
            latents = latents.repeat_interleave(batch_size // latents.shape[0], dim=0)
        return latents

    def control_image_to_tensor(
        self, image: PIL.Image.Image, height: int, width: int, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """PIL -> (1, 3, H, W) in [-1, 1] on the execution device, in ``dtype`` (default: the VAE's): the values of
        diffusers' ``image_processor.preprocess`` (x / 255 * 2 - 1 in float32, then the cast), but the uint8 pixels
        cross to the device and become floats there, through a 256-entry table built with that arithmetic: a
        quarter of the bytes to copy and no float conversion on the host. ``torch.equal`` to preprocess
        (tests/test_pipeline.py)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        if image.size != (width, height):
            image = self.image_processor.resize(image, height, width)
        device, dtype = self._execution_device, self.vae.dtype if dtype is None else dtype
        if self._pixel_levels is None or self._pixel_levels.device != device or self._pixel_levels.dtype != dtype:
            levels = torch.arange(256, dtype=torch.float32) / 255.0  # VaeImageProcessor.pil_to_numpy
            self._pixel_levels = (2.0 * levels - 1.0).to(device=device, dtype=dtype)  # .normalize, then the cast
        pixels = torch.from_numpy(np.array(image)).to(device)  # (H, W, 3) uint8
        # HWC viewed as NCHW: the same channels-last strides preprocess hands the encoder
        return torch.take(self._pixel_levels, pixels.long()).permute(2, 0, 1).unsqueeze(0)

    def prepare_timesteps(
        self,
        num_inference_steps: int,
        timesteps: list[float] | None = None,
        max_timesteps: float | None = MAX_TIMESTEPS,
        intermediate_timesteps: float | None = TWO_STEP_INTERMEDIATE_TIMESTEPS,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """The scheduler's timesteps for ``num_inference_steps`` (``num_inference_steps + 1`` values, the last one
        0). The default intermediate timestep belongs to the 2-step schedule and is dropped for other counts."""
        # Called directly: diffusers' retrieve_timesteps drops num_inference_steps when custom timesteps are given,
        # which SCMScheduler.set_timesteps requires (SanaSprintPipeline raises a TypeError there).
        self.scheduler.set_timesteps(
            num_inference_steps,
            timesteps,
            device or self._execution_device,
            max_timesteps=max_timesteps,
            intermediate_timesteps=_step_adaptive(num_inference_steps, intermediate_timesteps),
        )
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        return self.scheduler.timesteps

    def prepare_initial_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(batch_size, C, height/f, width/f) float32 noise (or the given ``latents``) times ``sigma_data``: what
        ``denoise`` starts from. A list of generators gives each row its own seed."""
        latents = self.prepare_latents(
            batch_size,
            self.transformer.config.in_channels,
            height,
            width,
            torch.float32,
            self._execution_device,
            generator,
            latents,
        )
        return latents * self.scheduler.config.sigma_data

    def denoise(
        self,
        latents: torch.Tensor,
        prompt_embeds: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        timesteps: torch.Tensor,
        guidance_scale: float | torch.Tensor,
        control_latents: torch.Tensor | None = None,
        controlnet_conditioning_scale: float | torch.Tensor = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = (),
    ) -> torch.Tensor:
        """The SCM loop (in TrigFlow time, as diffusers' SanaSprintPipeline) over a batch of B rows.

        latents: (B, C, h, w) from ``prepare_initial_latents``; prompt_embeds (B, L, D) and mask (B, L), one row
        per image; timesteps from ``prepare_timesteps``; guidance_scale and controlnet_conditioning_scale a number
        or a (B,) tensor of per-row values; control_latents (B or 1, C, h, w) from ``prepare_control_latents``, or
        None for no control; generator: the one ``prepare_initial_latents`` drew from (multi-step sampling draws
        fresh noise between steps). Returns the denoised latents divided by ``sigma_data``: what
        ``decode_latents`` takes (and ``output_type="latent"`` returns)."""
        batch = latents.shape[0]
        device, transformer_dtype = latents.device, self.transformer.dtype
        sigma_data = self.scheduler.config.sigma_data
        guidance = torch.as_tensor(guidance_scale, dtype=torch.float32, device=device)
        guidance = guidance.expand(batch).to(prompt_embeds.dtype) * self.transformer.config.guidance_embeds_scale
        control = None
        if control_latents is not None:
            if control_latents.shape[-2:] != latents.shape[-2:]:
                raise ValueError(
                    f"control_latents spatial size {tuple(control_latents.shape[-2:])} does not match the image "
                    f"latents {tuple(latents.shape[-2:])}"
                )
            scale = controlnet_conditioning_scale
            if isinstance(scale, torch.Tensor):  # per row: (B,) -> (B, 1, 1) against the (B, N, D) residuals
                scale = scale.to(device=device, dtype=transformer_dtype).view(-1, 1, 1)
            else:
                scale = float(scale)
            control = ControlInputs(self.controlnet, control_latents, scale)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, 0.0)  # SCM's step takes a generator, no eta
        timesteps = timesteps[:-1]
        self._num_timesteps = len(timesteps)
        denoised = latents
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                timestep = t.expand(batch)
                velocity = self.predict_velocity(
                    latents, timestep, prompt_embeds, prompt_attention_mask, guidance, control, attention_kwargs
                )
                latents, denoised = self.scheduler.step(
                    velocity, timestep, latents, **extra_step_kwargs, return_dict=False
                )
                if callback_on_step_end is not None:
                    # named explicitly: locals() inside a comprehension does not see the loop's variables
                    tensors = {"latents": latents, "prompt_embeds": prompt_embeds}
                    callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                progress_bar.update()
        return denoised / sigma_data

    def predict_velocity(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        prompt_embeds: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        guidance: torch.Tensor | None,
        control: ControlInputs | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """One model evaluation of the SCM loop: TrigFlow latents (B, C, h, w) at TrigFlow times ``timestep`` (B,)
        -> the TrigFlow velocity (float32, in latent units) that ``scheduler.step`` takes. The clean-latent
        estimate is ``cos(t) * latents - sin(t) * velocity``; ``denoise`` and ControlNet training
        (``train_controlnet``) both go through here, so training sees the sampler's exact arithmetic.
        ``guidance`` is the embedded guidance (B,) (``guidance_scale * guidance_embeds_scale``) or None."""
        sigma_data = self.scheduler.config.sigma_data
        transformer_dtype = self.transformer.dtype
        scm_timestep = torch.sin(timestep) / (torch.cos(timestep) + torch.sin(timestep))  # TrigFlow -> [0, 1]
        s = scm_timestep.view(-1, 1, 1, 1)
        latent_model_input = latents / sigma_data * torch.sqrt(s**2 + (1 - s) ** 2)
        model_kwargs = dict(
            encoder_hidden_states=prompt_embeds.to(dtype=transformer_dtype),
            encoder_attention_mask=prompt_attention_mask,
            guidance=guidance,
            timestep=scm_timestep,
        )
        if control is None:
            flow = self.transformer(
                latent_model_input.to(dtype=transformer_dtype), **model_kwargs, return_dict=False,
                attention_kwargs=attention_kwargs,
            )[0]
        else:
            flow = self.controlled_forward(
                self.transformer, latent_model_input.to(dtype=transformer_dtype), **model_kwargs, control=control
            )
        # Flow prediction -> TrigFlow velocity
        velocity = ((1 - 2 * s) * latent_model_input + (1 - 2 * s + 2 * s**2) * flow) / torch.sqrt(s**2 + (1 - s) ** 2)
        return velocity.float() * sigma_data

    def decode_latents(
        self,
        latents: torch.Tensor,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        vae=None,
    ):
        """Denoised latents -> images (``output_type`` as diffusers' postprocess), cropped back to (height, width)
        when resolution binning changed the size. ``vae`` defaults to the pipeline's; any autoencoder whose
        ``decode(z / scaling_factor, return_dict=False)[0]`` is the image in [-1, 1] works."""
        vae = self.vae if vae is None else vae
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        if height is not None and width is not None:
            image = self.image_processor.resize_and_crop_tensor(image, width, height)  # no-op at the same size
        return self.image_processor.postprocess(image, output_type=output_type)

    # --- checks ---------------------------------------------------------------------------------------------

    def check_inputs(
        self,
        prompt,
        height,
        width,
        num_inference_steps,
        *diffusers_args,
        guidance_scale: float | None = None,
        control_image: ControlImage | None = None,
        control_latents: torch.Tensor | None = None,
        controlnet_conditioning_scale: float | None = None,
        **diffusers_kwargs,
    ) -> None:
        """SanaSprintPipeline.check_inputs (same arguments, passed on to it) plus the control inputs and the numbers
        it takes on trust. Each message names the bad value."""
        steps_ok = isinstance(num_inference_steps, int) and not isinstance(num_inference_steps, bool)
        if not steps_ok or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if guidance_scale is not None and not _is_finite_number(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if controlnet_conditioning_scale is not None and not _is_finite_number(controlnet_conditioning_scale):
            raise ValueError(
                f"controlnet_conditioning_scale must be a finite number, got {controlnet_conditioning_scale!r}"
            )
        if control_image is not None and control_latents is not None:
            raise ValueError("pass control_image or control_latents, not both")
        if control_image is not None and not isinstance(control_image, (PIL.Image.Image, torch.Tensor)):
            raise ValueError(f"control_image must be a PIL image, got {type(control_image).__name__}")
        if (control_image is not None or control_latents is not None) and self.controlnet is None:
            raise ValueError("a control input was given but the pipeline has no controlnet")
        # the rest (timesteps, max/intermediate timesteps, callback names, prompt embeds) as diffusers checks them
        super().check_inputs(prompt, height, width, num_inference_steps, *diffusers_args, **diffusers_kwargs)

    # --- generation -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 2,
        timesteps: list[float] | None = None,
        max_timesteps: float = MAX_TIMESTEPS,
        intermediate_timesteps: float | None = TWO_STEP_INTERMEDIATE_TIMESTEPS,
        guidance_scale: float = 4.5,
        num_images_per_prompt: int | None = 1,
        height: int = 1024,
        width: int = 1024,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        clean_caption: bool = False,
        use_resolution_binning: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' signature)
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        complex_human_instruction: list[str] | None = None,
        control_image: ControlImage | None = None,
        control_latents: torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
    ) -> SanaPipelineOutput | tuple:
        """SanaSprintPipeline.__call__ plus ``control_image`` / ``control_latents`` and
        ``controlnet_conditioning_scale``.

        Step-adaptive: ``intermediate_timesteps`` at its default is used for 2 steps and dropped for other counts;
        a different value with a step count other than 2 is an error. ``complex_human_instruction`` defaults to
        None here (SanaSprintPipeline prepends a long instruction by default; pass its list to match it). Custom
        ``timesteps`` (``num_inference_steps + 1`` values, with ``max_timesteps=None``) work here, where
        SanaSprintPipeline raises a TypeError. ``eta`` is accepted for diffusers' signature; the SCM scheduler takes
        none."""
        # 1. Check inputs; the size the model runs at.
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs  # as in diffusers
        intermediate_timesteps = _step_adaptive(num_inference_steps, intermediate_timesteps)
        orig_height, orig_width = height, width
        height, width = self.resolution(height, width, use_resolution_binning)
        self.check_inputs(
            prompt,
            height,
            width,
            num_inference_steps,
            timesteps,
            max_timesteps,
            intermediate_timesteps,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_attention_mask,
            guidance_scale=guidance_scale,
            control_image=control_image,
            control_latents=control_latents,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
        )
        self._guidance_scale = guidance_scale
        self._attention_kwargs = attention_kwargs
        self._interrupt = False

        # 2. Batch size and device.
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        device = self._execution_device
        lora_scale = attention_kwargs.get("scale") if attention_kwargs is not None else None

        # 3. Encode the prompt (skipped by callers that pass prompt_embeds).
        prompt_embeds, prompt_attention_mask = self.encode_prompt(
            prompt,
            num_images_per_prompt=num_images_per_prompt,
            device=device,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_attention_mask,
            clean_caption=clean_caption,
            max_sequence_length=max_sequence_length,
            complex_human_instruction=complex_human_instruction,
            lora_scale=lora_scale,
        )

        # 4. Timesteps.
        timesteps = self.prepare_timesteps(num_inference_steps, timesteps, max_timesteps, intermediate_timesteps)

        # 5. Initial latents: randn * sigma_data.
        total = batch_size * num_images_per_prompt
        latents = self.prepare_initial_latents(total, height, width, generator, latents)

        # 6. Control latents (skipped by callers that pass control_latents).
        if control_image is not None:
            control_latents = self.prepare_control_latents(control_image, height, width, total)

        # 7. Denoising loop.
        latents = self.denoise(
            latents,
            prompt_embeds,
            prompt_attention_mask,
            timesteps,
            guidance_scale,
            control_latents=control_latents,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
            generator=generator,
            attention_kwargs=attention_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

        # 8. Decode, cropped back to the requested size.
        if output_type == "latent":
            image = latents
        else:
            image = self.decode_latents(latents, orig_height, orig_width, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return SanaPipelineOutput(images=image)


def _step_adaptive(num_inference_steps: int, intermediate_timesteps: float | None) -> float | None:
    """The default intermediate timestep applies to the 2-step schedule only; other counts run without one."""
    if num_inference_steps != 2 and intermediate_timesteps == TWO_STEP_INTERMEDIATE_TIMESTEPS:
        return None
    return intermediate_timesteps


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["SanaSprintControlNetPipeline", "SanaSprintControlNetModel"]
