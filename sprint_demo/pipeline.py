"""``SanaSprintControlNetPipeline``: SANA-Sprint's step-adaptive sampler with optional HED ControlNet control.

It is ``diffusers.SanaSprintPipeline`` (prompt encoding, input checks, latents, binning: all inherited) with a
``__call__`` that adds the control branch. Without control, or at ``controlnet_conditioning_scale=0``, its
output is ``torch.equal`` to SanaSprintPipeline's for the same components and seed (tests/test_pipeline.py).

The denoising loop follows diffusers ``pipelines/sana/pipeline_sana_sprint.py`` (SCM / TrigFlow math); the
control image handling follows diffusers ``pipelines/sana/pipeline_sana_controlnet.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import SanaSprintPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_1024_BIN
from diffusers.pipelines.sana.pipeline_output import SanaPipelineOutput

from . import settings
from .controlnet import ControlInputs, SanaSprintControlNetModel, sana_transformer_forward

ControlImage = PIL.Image.Image | torch.Tensor


class SanaSprintControlNetPipeline(SanaSprintPipeline):
    """Components: tokenizer, text_encoder, vae, transformer, scheduler and an optional ``controlnet``."""

    _optional_components = ["controlnet"]
    model_cpu_offload_seq = "text_encoder->controlnet->transformer->vae"

    def __init__(self, tokenizer, text_encoder, vae, transformer, scheduler, controlnet=None):
        super().__init__(tokenizer, text_encoder, vae, transformer, scheduler)
        self.register_modules(controlnet=controlnet)
        self.controlled_forward = sana_transformer_forward  # the step with control; speedups may compile it
        self._pixel_levels: torch.Tensor | None = None  # uint8 -> model input table (control_image_to_tensor)

    # --- pieces callers cache ---------------------------------------------------------------------------

    @torch.no_grad()
    def prepare_control_latents(
        self, control_image: ControlImage, height: int, width: int, batch_size: int = 1
    ) -> torch.Tensor:
        """Control map (PIL RGB, white lines on black; or a (B, 3, H, W) tensor in [-1, 1]) -> (B, 32, H/32, W/32)
        latent, ``vae.encode(x).latent * scaling_factor``. Callers cache this per canvas: it is a full encode."""
        if isinstance(control_image, PIL.Image.Image):
            image = self.control_image_to_tensor(control_image, height, width)
        elif isinstance(control_image, torch.Tensor) and control_image.ndim == 4:
            image = control_image.to(device=self._execution_device, dtype=self.vae.dtype)
        else:
            raise ValueError(f"control_image must be a PIL image or a (B, 3, H, W) tensor, got {control_image!r:.80}")
        latents = self.vae.encode(image).latent * self.vae.config.scaling_factor
        return latents.repeat_interleave(batch_size // latents.shape[0], dim=0) if latents.shape[0] < batch_size else latents

    def control_image_to_tensor(self, image: PIL.Image.Image, height: int, width: int) -> torch.Tensor:
        """PIL -> (1, 3, H, W) in [-1, 1] on the execution device, in the VAE's dtype: the values of diffusers'
        ``image_processor.preprocess`` (x / 255 * 2 - 1 in float32, then the cast), but the uint8 pixels cross to
        the device and become floats there, through a 256-entry table built with that arithmetic. On a 1024 px
        frame this saves the host's float conversion and 3/4 of the copy (most likely the bulk of the H100's control
        encode stage, docs/PERFORMANCE.md); ``torch.equal`` to preprocess (tests/test_pipeline.py)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        if image.size != (width, height):
            image = self.image_processor.resize(image, height, width)
        device, dtype = self._execution_device, self.vae.dtype
        if self._pixel_levels is None or self._pixel_levels.device != device or self._pixel_levels.dtype != dtype:
            levels = torch.arange(256, dtype=torch.float32) / 255.0  # VaeImageProcessor.pil_to_numpy
            self._pixel_levels = (2.0 * levels - 1.0).to(device=device, dtype=dtype)  # .normalize, then the cast
        pixels = torch.from_numpy(np.array(image)).to(device)  # (H, W, 3) uint8
        # HWC viewed as NCHW: the same channels-last strides preprocess hands the encoder
        return torch.take(self._pixel_levels, pixels.long()).permute(2, 0, 1).unsqueeze(0)

    @torch.no_grad()
    def decode_latents(
        self, latents: torch.Tensor, height: int | None = None, width: int | None = None, output_type: str = "pil"
    ):
        """Denoised latents (as ``output_type="latent"`` returns them) -> images, cropped back to (height, width)
        when resolution binning changed the size."""
        image = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor, return_dict=False)[0]
        if height is not None and width is not None:
            image = self.image_processor.resize_and_crop_tensor(image, width, height)
        return self.image_processor.postprocess(image, output_type=output_type)

    def check_control_inputs(
        self, num_inference_steps, guidance_scale, control_image, control_latents, controlnet_conditioning_scale
    ) -> None:
        """Our additions to SanaSprintPipeline.check_inputs. Each message names the bad value."""
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or not (
            settings.MIN_STEPS <= num_inference_steps <= settings.MAX_STEPS
        ):
            raise ValueError(
                f"num_inference_steps must be an integer from {settings.MIN_STEPS} to {settings.MAX_STEPS} "
                f"(SANA-Sprint is step-adaptive over that range), got {num_inference_steps!r}"
            )
        if not _is_finite_number(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if not _is_finite_number(controlnet_conditioning_scale):
            raise ValueError(
                f"controlnet_conditioning_scale must be a finite number, got {controlnet_conditioning_scale!r}"
            )
        if control_image is not None and control_latents is not None:
            raise ValueError("pass control_image or control_latents, not both")
        if control_image is not None and not isinstance(control_image, (PIL.Image.Image, torch.Tensor)):
            raise ValueError(f"control_image must be a PIL image, got {type(control_image).__name__}")
        if (control_image is not None or control_latents is not None) and self.controlnet is None:
            raise ValueError("a control input was given but the pipeline has no controlnet")

    # --- generation -------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 2,
        timesteps: list[float] | None = None,
        max_timesteps: float = settings.MAX_TIMESTEP,
        intermediate_timesteps: float | None = settings.TWO_STEP_INTERMEDIATE_TIMESTEP,
        guidance_scale: float = settings.DEFAULT_GUIDANCE,
        num_images_per_prompt: int | None = 1,
        height: int = settings.DEFAULT_SIZE,
        width: int = settings.DEFAULT_SIZE,
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
        max_sequence_length: int = settings.MAX_SEQUENCE_LENGTH,
        complex_human_instruction: list[str] | None = None,
        control_image: ControlImage | None = None,
        control_latents: torch.Tensor | None = None,
        controlnet_conditioning_scale: float = settings.DEFAULT_CONTROL_STRENGTH,
    ) -> SanaPipelineOutput | tuple:
        """SanaSprintPipeline.__call__ plus ``control_image`` / ``control_latents`` and
        ``controlnet_conditioning_scale``.

        Step-adaptive: ``intermediate_timesteps`` at its default is used for 2 steps and dropped for 1, 3 or 4; a
        different value with a step count other than 2 is an error. ``complex_human_instruction`` defaults to None
        here (SanaSprintPipeline prepends a long instruction by default; pass its list to match it). Custom
        ``timesteps`` (``num_inference_steps + 1`` values, with ``max_timesteps=None``) work here, where
        SanaSprintPipeline raises a TypeError."""
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        # 1. Step-adaptive schedule and our own checks.
        self.check_control_inputs(
            num_inference_steps, guidance_scale, control_image, control_latents, controlnet_conditioning_scale
        )
        if num_inference_steps != 2 and intermediate_timesteps == settings.TWO_STEP_INTERMEDIATE_TIMESTEP:
            intermediate_timesteps = None

        # 2. Resolution binning (as SanaSprintPipeline) and diffusers' own checks.
        orig_height, orig_width = height, width
        if use_resolution_binning:
            if self.transformer.config.sample_size != 32:
                raise ValueError(
                    f"resolution binning needs transformer sample_size 32, got {self.transformer.config.sample_size}"
                )
            height, width = self.image_processor.classify_height_width_bin(height, width, ratios=ASPECT_RATIO_1024_BIN)
        self.check_inputs(
            prompt=prompt,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            timesteps=timesteps,
            max_timesteps=max_timesteps,
            intermediate_timesteps=intermediate_timesteps,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_attention_mask,
        )
        self._guidance_scale = guidance_scale
        self._attention_kwargs = attention_kwargs
        self._interrupt = False
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        device = self._execution_device

        # 3. Encode the prompt (skipped by callers that pass cached prompt_embeds).
        prompt_embeds, prompt_attention_mask = self.encode_prompt(
            prompt,
            num_images_per_prompt=num_images_per_prompt,
            device=device,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_attention_mask,
            clean_caption=clean_caption,
            max_sequence_length=max_sequence_length,
            complex_human_instruction=complex_human_instruction,
            lora_scale=attention_kwargs.get("scale") if attention_kwargs is not None else None,  # text encoder LoRA
        )

        # 4. Timesteps. Called directly: diffusers' retrieve_timesteps drops num_inference_steps when custom
        # timesteps are given, which SCMScheduler.set_timesteps requires (a TypeError in SanaSprintPipeline).
        self.scheduler.set_timesteps(
            num_inference_steps,
            timesteps,
            device,
            max_timesteps=max_timesteps,
            intermediate_timesteps=intermediate_timesteps,
        )
        timesteps = self.scheduler.timesteps
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)

        # 5. Initial latents: randn * sigma_data.
        total = batch_size * num_images_per_prompt
        latents = self.prepare_latents(
            total, self.transformer.config.in_channels, height, width, torch.float32, device, generator, latents
        )
        sigma_data = self.scheduler.config.sigma_data
        latents = latents * sigma_data
        guidance = torch.full([1], guidance_scale, device=device, dtype=torch.float32)
        guidance = guidance.expand(latents.shape[0]).to(prompt_embeds.dtype)
        guidance = guidance * self.transformer.config.guidance_embeds_scale

        # 6. Control latents (skipped by callers that pass cached control_latents).
        control = None
        if control_image is not None:
            control_latents = self.prepare_control_latents(control_image, height, width, total)
        if control_latents is not None:
            if control_latents.shape[-2:] != latents.shape[-2:]:
                raise ValueError(
                    f"control_latents spatial size {tuple(control_latents.shape[-2:])} does not match the image "
                    f"latents {tuple(latents.shape[-2:])} (height {height}, width {width})"
                )
            control = ControlInputs(self.controlnet, control_latents, float(controlnet_conditioning_scale))

        # 7. Denoising loop (SCM in TrigFlow time; diffusers pipeline_sana_sprint.py).
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        timesteps = timesteps[:-1]
        self._num_timesteps = len(timesteps)
        transformer_dtype = self.transformer.dtype
        denoised = latents
        for i, t in enumerate(timesteps):
            if self.interrupt:  # set by a step callback: the rest of the steps are skipped, as in diffusers
                continue
            timestep = t.expand(latents.shape[0])
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
                noise_pred = self.transformer(
                    latent_model_input.to(dtype=transformer_dtype),
                    **model_kwargs,
                    return_dict=False,
                    attention_kwargs=self.attention_kwargs,
                )[0]
            else:
                noise_pred = self.controlled_forward(
                    self.transformer, latent_model_input.to(dtype=transformer_dtype), **model_kwargs, control=control
                )
            # Flow prediction -> TrigFlow velocity, then one SCM step.
            noise_pred = ((1 - 2 * s) * latent_model_input + (1 - 2 * s + 2 * s**2) * noise_pred) / torch.sqrt(
                s**2 + (1 - s) ** 2
            )
            noise_pred = noise_pred.float() * sigma_data
            latents, denoised = self.scheduler.step(noise_pred, timestep, latents, **extra_step_kwargs, return_dict=False)
            if callback_on_step_end is not None:
                # named explicitly: on Python 3.11 locals() in a comprehension does not see the loop variables
                step_tensors = {"latents": latents, "prompt_embeds": prompt_embeds}
                callback_kwargs = {k: step_tensors[k] for k in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                latents = callback_outputs.pop("latents", latents)
                prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
        latents = denoised / sigma_data

        # 8. Decode.
        if output_type == "latent":
            image = latents
        elif use_resolution_binning:
            image = self.decode_latents(latents, orig_height, orig_width, output_type=output_type)
        else:
            image = self.decode_latents(latents, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return SanaPipelineOutput(images=image)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["SanaSprintControlNetPipeline", "SanaSprintControlNetModel"]
