"""SANA-Sprint's step-adaptive sampler with optional HED ControlNet control, text-to-image and image-to-image.

``SanaSprintControlNetPipeline`` is ``diffusers.SanaSprintPipeline`` (prompt encoding, latents: inherited) with the
frame split into stages that callers may run, time and cache one by one. ``SanaSprintControlNetImg2ImgPipeline``
(diffusers' name for image-to-image with a ControlNet) is the same pipeline with the ``__call__`` signature and
input checks of diffusers' ``SanaSprintImg2ImgPipeline``. The two differ only in where sampling starts: one stage,
``prepare_start``, starts from noise, or, given an image-to-image ``strength``, from the image's latent noised to the
first timestep (one pipeline object serves both kinds of frame in the app).

The sampling order is written once, in ``sample`` (start, denoise, decode); both ``__call__``s run it after encoding
the prompt and the control image (``_generate``), and the app's renderer (``sprint_demo.renderer``) runs it on
prompt embeddings and latents it cached:

=============================  ========================================================================
``encode_prompt``              prompt -> (embeddings, mask) (inherited; ``prompt_encoder``: the same with the
                               instruction's tokens encoded once, what the app and the trainer use)
``resolution``                 requested (height, width) -> the size the model runs at (resolution binning)
``prepare_control_latents``    control map -> scaled control latent (a VAE encode)
``prepare_timesteps``          step count -> the SCM schedule (step-adaptive: 1 to 4 steps, or any)
``strength_timesteps``         image-to-image: the schedule cut by ``strength`` (diffusers' discrete rule)
``prepare_initial_latents``    text-to-image: generator -> noise latents, already scaled by ``sigma_data``
``prepare_image_latents``      image-to-image: input image -> scaled image latent (a VAE encode)
``noise_image_latents``        image-to-image: image latent -> TrigFlow latents at the start time
``prepare_start``              (timesteps, start latents): the two above, or ``prepare_initial_latents``
``denoise``                    the SCM loop, ControlNet residuals added when control latents are given
``decode_latents``             latents -> images, cropped back to the requested size when binning moved it
``sample``                     ``prepare_start``, ``denoise``, ``decode_latents``, in that order
=============================  ========================================================================

``continuous_strength_timesteps`` is the continuous image-to-image strength: a custom schedule that starts at
``strength * max_timesteps`` (diffusers' strength only picks whole steps of the schedule).

The stages carry no ``torch.no_grad``: callers choose inference mode (``__call__`` does) or run gradients through
them (ControlNet training). Without control, or at ``controlnet_conditioning_scale=0``, the output is
``torch.equal`` to SanaSprintPipeline's (tests/test_pipeline.py) and SanaSprintImg2ImgPipeline's
(tests/test_img2img_pipeline.py) for the same components, arguments and seed, default arguments included: both
prepend the instruction the model was trained with (``COMPLEX_HUMAN_INSTRUCTION``) unless told otherwise.

The denoising loop follows diffusers ``pipelines/sana/pipeline_sana_sprint.py`` (SCM / TrigFlow math); the
image-to-image start follows ``pipelines/sana/pipeline_sana_sprint_img2img.py``; the control image handling follows
``pipelines/sana/pipeline_sana_controlnet.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import SanaSprintPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_1024_BIN
from diffusers.pipelines.sana.pipeline_output import SanaPipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .controlnet import ControlInputs, SanaSprintControlNetModel, sana_transformer_forward
from .prompt_encoder import COMPLEX_HUMAN_INSTRUCTION, MAX_SEQUENCE_LENGTH, PrefixCachedPromptEncoder

ControlImage = PIL.Image.Image | torch.Tensor

# SanaSprintPipeline's sampling defaults, written once here and used by the signatures below.
MAX_TIMESTEPS = 1.57080  # pi/2 in TrigFlow time: where sampling starts (pure noise)
TWO_STEP_INTERMEDIATE_TIMESTEPS = 1.3  # the 2-step schedule's middle time; other step counts have none


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
        self._prompt_encoder: PrefixCachedPromptEncoder | None = None  # built by the prompt_encoder property

    @property
    def prompt_encoder(self) -> PrefixCachedPromptEncoder:
        """How the app's engine and the ControlNet trainer encode prompts: ``encode_prompt`` with the trained
        instruction, its tokens encoded once and their key/value cache kept (``PrefixCachedPromptEncoder``; equal to
        ``encode_prompt`` within float rounding). Built on first use, again when the tokenizer or text encoder is
        replaced. ``__call__`` runs diffusers' own ``encode_prompt``."""
        encoder = self._prompt_encoder
        if encoder is None or encoder.tokenizer is not self.tokenizer or encoder.text_encoder is not self.text_encoder:
            encoder = self._prompt_encoder = PrefixCachedPromptEncoder(self.tokenizer, self.text_encoder)
        return encoder

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
        latents = _encode(vae, image)
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
        pixels = torch.from_numpy(np.array(image)).to(device).unsqueeze(0)  # (1, H, W, 3) uint8
        # NHWC viewed as NCHW: the strides preprocess hands the encoder, the batch stride included (CPU convolution
        # kernels read it: a batch stride of 3 instead of H * W * 3 changed the DC-AE's latent in the last bit)
        return torch.take(self._pixel_levels, pixels.long()).permute(0, 3, 1, 2)

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

    def strength_timesteps(self, timesteps: torch.Tensor, strength: float) -> torch.Tensor:
        """Image-to-image with diffusers' discrete strength: the tail of ``timesteps`` (from ``prepare_timesteps``,
        n steps) that keeps ``n - int(n - n * strength)`` steps, and the scheduler set to begin there
        (SanaSprintImg2ImgPipeline.get_timesteps). At 1 step every strength keeps the whole schedule, so it starts
        from (nearly) pure noise; ``continuous_strength_timesteps`` is the continuous alternative. A strength that
        leaves no step is a ValueError."""
        _check_strength(strength)
        steps = len(timesteps) - 1
        start = int(max(steps - min(steps * strength, steps), 0))  # diffusers' arithmetic, rounding included
        if steps - start < 1:
            raise ValueError(f"strength {strength!r} leaves no denoising step of {steps}")
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start)  # SCMScheduler.step reads its times from this index on
        return timesteps[start:]

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

    def prepare_image_latents(
        self,
        image: PipelineImageInput,
        height: int,
        width: int,
        batch_size: int = 1,
        vae=None,
    ) -> torch.Tensor:
        """Image-to-image input -> (batch_size, C, height/f, width/f) latent ``vae.encode(x) * scaling_factor``, the
        clean image ``noise_image_latents`` starts from. ``image``: what SanaSprintImg2ImgPipeline takes (PIL image,
        numpy array, (3, H, W) or (B, 3, H, W) tensor in [0, 1] or [-1, 1], or a list of them), resized to
        (height, width) as it does; or a (B, C, h, w) tensor with the transformer's latent channels, taken as this
        stage's output and not encoded again. An image batch smaller than ``batch_size`` is repeated whole
        (``torch.cat``, as diffusers: images [a, b] for 4 rows give [a, b, a, b]). ``vae`` as in
        ``prepare_control_latents``."""
        vae = self.vae if vae is None else vae
        latent_channels = self.transformer.config.in_channels
        if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[1] == latent_channels:
            latents = image.to(self._execution_device)
        else:
            latents = _encode(vae, self.image_to_tensor(image, height, width, vae.dtype))
        if latents.shape[0] < batch_size and batch_size % latents.shape[0] == 0:
            latents = torch.cat([latents] * (batch_size // latents.shape[0]), dim=0)
        elif latents.shape[0] != batch_size:
            raise ValueError(f"cannot repeat an image batch of {latents.shape[0]} to {batch_size} rows")
        return latents

    def image_to_tensor(
        self, image: PipelineImageInput, height: int, width: int, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Image-to-image input -> (B, 3, height, width) in [-1, 1] on the execution device, in ``dtype`` (default:
        the VAE's): SanaSprintImg2ImgPipeline.prepare_image's values (tensors resized bilinearly, then the image
        processor's ``preprocess``); a single PIL image takes ``control_image_to_tensor``'s equal, faster path."""
        dtype = self.vae.dtype if dtype is None else dtype
        if isinstance(image, PIL.Image.Image):
            return self.control_image_to_tensor(image, height, width, dtype)
        if isinstance(image, torch.Tensor):
            image = image.unsqueeze(0) if image.ndim == 3 else image
            if image.shape[-2:] != (height, width):
                image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
        pixels = self.image_processor.preprocess(image, height=height, width=width)
        return pixels.to(device=self._execution_device, dtype=dtype)

    def noise_image_latents(
        self,
        image_latents: torch.Tensor,
        start_time: torch.Tensor | float,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """The TrigFlow latents at time ``start_time`` (the first timestep ``denoise`` runs):
        ``cos(t) * x0 + sin(t) * z`` with x0 = ``image_latents * sigma_data`` (from ``prepare_image_latents``) and
        z = ``randn * sigma_data`` drawn from ``generator`` as SanaSprintImg2ImgPipeline draws it (float32, one
        generator per row when a list). Pass the start time as the schedule's tensor (``timesteps[:1]``): its
        float32 cosine is what diffusers computes. At t = float32(pi/2 rounded to 1.57080) the cosine is about
        -3.7e-6, not 0: the image leaves a trace of that size."""
        if isinstance(generator, list) and len(generator) != image_latents.shape[0]:
            raise ValueError(
                f"{len(generator)} generators for {image_latents.shape[0]} rows: pass one generator per row"
            )
        sigma_data = self.scheduler.config.sigma_data
        clean = image_latents * sigma_data
        noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=torch.float32) * sigma_data
        start_time = torch.as_tensor(start_time, dtype=torch.float32, device=clean.device)
        return torch.cos(start_time) * clean + torch.sin(start_time) * noise

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
                self.transformer, latent_model_input.to(dtype=transformer_dtype), **model_kwargs, control=control,
                attention_kwargs=attention_kwargs,
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

    def prepare_start(
        self,
        num_inference_steps: int,
        batch_size: int,
        height: int,
        width: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        timesteps: list[float] | None = None,
        max_timesteps: float | None = MAX_TIMESTEPS,
        intermediate_timesteps: float | None = TWO_STEP_INTERMEDIATE_TIMESTEPS,
        image: PipelineImageInput | None = None,
        strength: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps, start latents): where sampling starts, the one stage in which text-to-image and
        image-to-image differ.

        Text-to-image (``strength`` None): the step-adaptive schedule (``prepare_timesteps``) and noise
        (``prepare_initial_latents``; given ``latents`` times ``sigma_data``). Image-to-image (``strength`` given):
        custom ``timesteps`` run as given, else the schedule cut by ``strength`` (``strength_timesteps``); the
        image's latent (``prepare_image_latents``: an image, or a latent tensor taken as it is) noised to the first
        timestep (``noise_image_latents``); given ``latents`` are the start as they are (already noised)."""
        custom = timesteps is not None
        timesteps = self.prepare_timesteps(num_inference_steps, timesteps, max_timesteps, intermediate_timesteps)
        if strength is None:
            return timesteps, self.prepare_initial_latents(batch_size, height, width, generator, latents)
        if not custom:
            timesteps = self.strength_timesteps(timesteps, strength)
        if latents is not None:
            return timesteps, latents.to(device=self._execution_device, dtype=torch.float32)
        image_latents = self.prepare_image_latents(image, height, width, batch_size)
        return timesteps, self.noise_image_latents(image_latents, timesteps[:1], generator)

    def sample(
        self,
        prompt_embeds: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float | torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        *,
        timesteps: list[float] | None = None,
        max_timesteps: float | None = MAX_TIMESTEPS,
        intermediate_timesteps: float | None = TWO_STEP_INTERMEDIATE_TIMESTEPS,
        latents: torch.Tensor | None = None,
        image: PipelineImageInput | None = None,
        strength: float | None = None,
        control_latents: torch.Tensor | None = None,
        controlnet_conditioning_scale: float | torch.Tensor = 1.0,
        output_size: tuple[int, int] | None = None,
        output_type: str | None = "pil",
        vae=None,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = (),
        stage: Callable[[str], AbstractContextManager] = lambda _name: nullcontext(),
    ) -> Any:
        """The sampling order, written once: start (``prepare_start``), ``denoise``, ``decode_latents``. Both
        ``__call__``s run it after encoding the prompt and the control image; the app's renderer runs it on
        embeddings and latents it cached (``sprint_demo.renderer``).

        One row per ``prompt_embeds`` row; (``height``, ``width``) is the size the model runs at (``resolution``),
        ``output_size`` (height, width) the size the images are cropped back to. ``image`` / ``strength``: an
        image-to-image start (``prepare_start``). ``stage(name)``: a context manager around "denoise" and
        "decode" (the renderer times them and stops superseded frames there). Returns what ``decode_latents``
        returns, or the latents for ``output_type="latent"``."""
        timesteps, latents = self.prepare_start(
            num_inference_steps, prompt_embeds.shape[0], height, width, generator, latents, timesteps, max_timesteps,
            intermediate_timesteps, image, strength,
        )
        with stage("denoise"):
            latents = self.denoise(
                latents, prompt_embeds, prompt_attention_mask, timesteps, guidance_scale,
                control_latents=control_latents, controlnet_conditioning_scale=controlnet_conditioning_scale,
                generator=generator, attention_kwargs=attention_kwargs, callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            )
        if output_type == "latent":
            return latents
        with stage("decode"):
            return self.decode_latents(latents, *(output_size or (None, None)), output_type=output_type, vae=vae)

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

    def _generate(
        self,
        *,
        prompt: str | list[str] | None,
        num_inference_steps: int,
        timesteps: list[float] | None,
        max_timesteps: float | None,
        intermediate_timesteps: float | None,
        guidance_scale: float,
        num_images_per_prompt: int,
        height: int,
        width: int,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        prompt_embeds: torch.Tensor | None,
        prompt_attention_mask: torch.Tensor | None,
        output_type: str | None,
        return_dict: bool,
        clean_caption: bool,
        use_resolution_binning: bool,
        attention_kwargs: dict[str, Any] | None,
        callback_on_step_end: Callable | None,
        callback_on_step_end_tensor_inputs: list[str],
        max_sequence_length: int,
        complex_human_instruction: Sequence[str] | None,
        control_image: ControlImage | None,
        control_latents: torch.Tensor | None,
        controlnet_conditioning_scale: float,
        **image_inputs: Any,
    ) -> SanaPipelineOutput | tuple:
        """Both ``__call__``s: check, encode the prompt and the control image, then ``sample``. ``image_inputs``:
        image-to-image's ``image`` and ``strength`` (none for text-to-image), passed to ``check_inputs`` and to the
        start stage (``prepare_start``)."""
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs  # as in diffusers
        intermediate_timesteps = _step_adaptive(num_inference_steps, intermediate_timesteps)
        run_height, run_width = self.resolution(height, width, use_resolution_binning)
        self.check_inputs(
            prompt=prompt, height=run_height, width=run_width, num_inference_steps=num_inference_steps,
            timesteps=timesteps, max_timesteps=max_timesteps, intermediate_timesteps=intermediate_timesteps,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_attention_mask, guidance_scale=guidance_scale, control_image=control_image,
            control_latents=control_latents, controlnet_conditioning_scale=controlnet_conditioning_scale,
            **({"latents": latents} | image_inputs if image_inputs else {}),
        )
        # The call's state: diffusers' guidance_scale, attention_kwargs and interrupt properties read it.
        self._guidance_scale, self._attention_kwargs, self._interrupt = guidance_scale, attention_kwargs, False
        prompt_embeds, prompt_attention_mask = self.encode_prompt(
            prompt, num_images_per_prompt=num_images_per_prompt, device=self._execution_device,
            prompt_embeds=prompt_embeds, prompt_attention_mask=prompt_attention_mask, clean_caption=clean_caption,
            max_sequence_length=max_sequence_length, complex_human_instruction=complex_human_instruction,
            lora_scale=attention_kwargs.get("scale") if attention_kwargs is not None else None,
        )
        if control_image is not None:  # else control_latents as given (None: no control)
            control_latents = self.prepare_control_latents(control_image, run_height, run_width,
                                                           prompt_embeds.shape[0])
        images = self.sample(
            prompt_embeds, prompt_attention_mask, run_height, run_width, num_inference_steps, guidance_scale,
            generator, timesteps=timesteps, max_timesteps=max_timesteps, intermediate_timesteps=intermediate_timesteps,
            latents=latents, control_latents=control_latents,
            controlnet_conditioning_scale=controlnet_conditioning_scale, output_size=(height, width),
            output_type=output_type, attention_kwargs=attention_kwargs, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, **image_inputs,
        )
        self.maybe_free_model_hooks()
        return SanaPipelineOutput(images=images) if return_dict else (images,)

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
        complex_human_instruction: Sequence[str] | None = COMPLEX_HUMAN_INSTRUCTION,
        control_image: ControlImage | None = None,
        control_latents: torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
    ) -> SanaPipelineOutput | tuple:
        """SanaSprintPipeline.__call__ plus ``control_image`` / ``control_latents`` and
        ``controlnet_conditioning_scale``.

        Step-adaptive: ``intermediate_timesteps`` at its default is used for 2 steps and dropped for other counts;
        a different value with a step count other than 2 is an error. ``complex_human_instruction`` defaults to
        the instruction the model was trained with (``COMPLEX_HUMAN_INSTRUCTION``, diffusers' default), prepended
        to every prompt; None encodes the prompt alone. Custom ``timesteps`` (``num_inference_steps + 1`` values,
        with ``max_timesteps=None``) work here, where SanaSprintPipeline raises a TypeError. ``eta`` is accepted for
        diffusers' signature; the SCM scheduler takes none."""
        return self._generate(**_call_arguments(locals()))


class SanaSprintControlNetImg2ImgPipeline(SanaSprintControlNetPipeline):
    """Image-to-image: SanaSprintImg2ImgPipeline's signature and checks over the same stages and ``sample`` (same
    components, the same optional ``controlnet``); its ``image`` and ``strength`` reach ``prepare_start``."""

    def check_inputs(
        self,
        prompt,
        strength,
        height,
        width,
        num_inference_steps,
        *diffusers_args,
        image: PipelineImageInput | None = None,
        latents: torch.Tensor | None = None,
        **kwargs,
    ) -> None:
        """SanaSprintImg2ImgPipeline.check_inputs (same arguments) plus the text-to-image pipeline's checks; a
        strength outside (0, 1] or an image missing (without ``latents``) is a ValueError naming it."""
        _check_strength(strength)
        if image is None and latents is None:
            raise ValueError("image-to-image needs an image (or latents), got image=None")
        super().check_inputs(prompt, height, width, num_inference_steps, *diffusers_args, **kwargs)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 2,
        timesteps: list[float] | None = None,
        max_timesteps: float | None = MAX_TIMESTEPS,
        intermediate_timesteps: float | None = TWO_STEP_INTERMEDIATE_TIMESTEPS,
        guidance_scale: float = 4.5,
        image: PipelineImageInput = None,
        strength: float = 0.6,
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
        complex_human_instruction: Sequence[str] | None = COMPLEX_HUMAN_INSTRUCTION,
        control_image: ControlImage | None = None,
        control_latents: torch.Tensor | None = None,
        controlnet_conditioning_scale: float = 1.0,
    ) -> SanaPipelineOutput | tuple:
        """SanaSprintImg2ImgPipeline.__call__ plus ``control_image`` / ``control_latents`` and
        ``controlnet_conditioning_scale``; without control (or at scale 0) ``torch.equal`` to it.

        ``strength`` in (0, 1]. Without ``timesteps`` it cuts the step-adaptive schedule as diffusers does
        (``strength_timesteps``: whole steps only). With custom ``timesteps`` (``num_inference_steps + 1`` values,
        ``max_timesteps=None``; ``continuous_strength_timesteps`` makes them from a strength) they are run exactly as
        given, uncut: the image is noised to ``timesteps[0]`` and ``strength`` is only checked (diffusers 0.42.1
        raises a TypeError for any custom timesteps). Strength 1 is not text-to-image exactly: the image leaves a
        trace of cos(1.57080), about 4e-6 (``noise_image_latents``); callers that want exactly text-to-image there
        run the text-to-image pipeline. ``latents``, as in diffusers, are the start latents as they are (already
        noised; no image is encoded). Defaults as the text-to-image pipeline's: step-adaptive
        ``intermediate_timesteps``, ``complex_human_instruction`` the trained instruction. ``eta`` is accepted for
        diffusers' signature; the SCM scheduler takes none."""
        return self._generate(**_call_arguments(locals()))


def continuous_strength_timesteps(
    strength: float,
    num_inference_steps: int,
    max_timesteps: float = MAX_TIMESTEPS,
    intermediate_timesteps: float | None = TWO_STEP_INTERMEDIATE_TIMESTEPS,
) -> list[float]:
    """Continuous image-to-image strength: the custom ``timesteps`` (``num_inference_steps + 1`` TrigFlow times,
    the last 0) for strength ``s`` in (0, 1].

    The rule: the text-to-image schedule for this step count (SCMScheduler's: ``[max, intermediate, 0]`` at 2 steps,
    else ``linspace(max, 0, n + 1)``; the default intermediate time applies to 2 steps only) times ``s``. So the
    start time is ``t(s) = s * max_timesteps``, where the image latent keeps ``cos(t(s))`` of its signal; every
    strength runs all ``n`` steps (1 step: from any start straight to 0); the later times keep their ratio to the
    start; and ``s = 1`` gives the text-to-image schedule bit for bit. The start agrees with diffusers' discrete
    ``strength`` wherever that one is exact (a linear schedule and ``n * s`` whole), which then runs fewer steps.
    Pass the result with ``max_timesteps=None`` and the same ``num_inference_steps``."""
    _check_strength(strength)
    if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    intermediate_timesteps = _step_adaptive(num_inference_steps, intermediate_timesteps)
    if intermediate_timesteps is not None and num_inference_steps != 2:
        raise ValueError(f"intermediate_timesteps applies to 2 steps only, got {num_inference_steps} steps")
    if intermediate_timesteps is not None:  # float32 values, as SCMScheduler.set_timesteps builds them
        schedule = torch.tensor([max_timesteps, intermediate_timesteps, 0]).float()
    else:
        schedule = torch.linspace(max_timesteps, 0, num_inference_steps + 1).float()
    return (schedule * strength).tolist()  # times 1.0 is exact: strength 1 is the text-to-image schedule


def _encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> the scaled latent; ``encode(x, return_dict=False)[0]`` is the latent for both
    AutoencoderDC and AutoencoderTiny."""
    return vae.encode(pixels, return_dict=False)[0] * vae.config.scaling_factor


def _call_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A ``__call__``'s ``locals()`` as ``_generate``'s keyword arguments: without ``self``, and without ``eta``, which
    diffusers' signature has and the SCM scheduler takes none of."""
    return {name: value for name, value in arguments.items() if name not in ("self", "eta")}


def _step_adaptive(num_inference_steps: int, intermediate_timesteps: float | None) -> float | None:
    """The default intermediate timestep applies to the 2-step schedule only; other counts run without one."""
    if num_inference_steps != 2 and intermediate_timesteps == TWO_STEP_INTERMEDIATE_TIMESTEPS:
        return None
    return intermediate_timesteps


def _check_strength(strength: Any) -> None:
    if not _is_finite_number(strength) or not 0 < strength <= 1:
        raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = [
    "SanaSprintControlNetPipeline",
    "SanaSprintControlNetImg2ImgPipeline",
    "SanaSprintControlNetModel",
    "continuous_strength_timesteps",
]
