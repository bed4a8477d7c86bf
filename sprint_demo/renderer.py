"""Requests to frames: ``Renderer.render(requests) -> frames``, on the calling thread, one batch at a time.

A batch is requests of one ``batch_key`` (one latent shape, one schedule, one autoencoder lane); each row keeps its own
prompt, seed, guidance, control latent and start picture. The renderer runs the pipeline's stages
(``SanaSprintControlNetPipeline``): it encodes prompts, control maps and start pictures through its caches, then
runs the pipeline's ``sample`` (start, denoise, decode: the sampling order lives there only). Around that:

* caches (LRU): prompt embeddings per prompt (``pipe.prompt_encoder``: the trained instruction's tokens encoded
  once), so typing re-encodes and strokes do not; the control latent per control-map content and size, the start
  latent per picture, size and lane, so a new prompt or seed does not re-encode the canvas;
* two autoencoder lanes (``FrameRequest.decoder``): "full", the pipeline's DC-AE, and "tiny", the tiny autoencoder
  from the loader (``sprint_demo.models.tiny_autoencoder``), which decodes the frame and encodes an image-to-image
  start picture. Control maps are encoded by the DC-AE in both lanes: the ControlNet has only seen DC-AE latents
  of line maps, and flat black-and-white line art is far from the pictures the tiny encoder was distilled on; so
  one cached control latent serves both lanes. Without a tiny autoencoder a "tiny" request raises
  ``LaneUnavailable``;
* steadiness (``FrameRequest.steadiness`` > 0 with a ``previous_image``): the start picture's latent is
  ``(1 - s) * picture + s * previous``, where previous is the previous output frame encoded by the lane's encoder
  (the request carries pictures, never tensors, so it crosses to Ray replicas and keys the caches as they are);
  steadiness 0 runs exactly the code it would without the field;
* image-to-image starts from the (blended) picture's latent noised to ``continuous_strength_timesteps``' start time
  (strength s: t = s * pi/2), every step count from any strength;
* timings: each frame carries per-stage milliseconds (``STAGES`` and "total"), the GPU synchronised at stage edges;
* stop checks: ``stopped()`` (nobody waits for the batch any more) is asked before each stage and denoising step
  and, when not compiled, before each transformer block and decoder layer (``models.stop_points``); the batch
  then raises ``Superseded``;
* compiled code: once ``warm``, a compiled renderer never compiles again (a shape the warm-up did not see runs
  eagerly); ``eager`` runs every frame without the compiled code.

The photos' edge detector (HED, or its classical stand-in) is the renderer's too: it shares the device.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from cachetools import LRUCache
from PIL import Image

from . import conditioning, inputs, settings
from .batcher import Superseded
from .frames import DECODERS, DEFAULT_DECODER, Frame, FrameRequest
from .models.loading import LoadedPipeline
from .models.lora import LoraAdapters
from .models.pipeline import continuous_strength_timesteps
from .models.speedups import SpeedOptions, apply_speedups
from .models.stop_points import add_stop_points

log = logging.getLogger(__name__)

STAGES = settings.FRAME_STAGES
STAGE_LABEL = "stage:"  # prefix of each stage's range in a torch.profiler trace

PromptEmbeddings = tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]  # (embeds, mask, notices)


class LaneUnavailable(inputs.InputError):
    """A frame asked for an autoencoder lane this server does not have; ``reason`` says why (None: switched off)."""

    def __init__(self, decoder: str, reason: str | None):
        self.decoder, self.reason = decoder, reason
        super().__init__(f"decoder {decoder!r} is not available on this server: {reason or 'it was switched off'}; "
                         f"use decoder {DEFAULT_DECODER!r}")


def batch_key(request: FrameRequest) -> tuple:
    """Frames share a batch only when these agree: one latent shape, one schedule (steps, and the image-to-image
    strength that sets where it starts: the scheduler steps every row from the same time), one autoencoder, and
    one LoRA adapter at one scale (None for presets: they only change the prompt). Separate batches per adapter, not
    PEFT's mixed-adapter batches: equal at the preview's frame size, and the only way under torch.compile's hotswap
    (docs/PERFORMANCE.md, "Styles")."""
    adapter = lora_adapter(request)
    return (request.width, request.height, request.steps, request.decoder, request.strength, adapter,
            None if adapter is None else request.style_scale)


def lora_adapter(request: FrameRequest) -> str | None:
    """The LoRA adapter a request runs with: its style unless that is a prompt preset."""
    return None if request.style in settings.STYLE_PRESETS else request.style


def styled_prompt(prompt: str, style: str) -> str:
    """The text the encoder sees: the prompt inside the style preset's template ("none": the prompt as typed; a
    LoRA's name: the prompt as typed too)."""
    template = settings.STYLE_PRESETS.get(style, "{prompt}")
    return template.replace("{prompt}", prompt)


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation of two noise tensors (each row flattened), so the blend keeps the noise's norm, as
    a straight line between two independent draws would not (it shrinks it by up to a factor sqrt(2) midway).
    Weight 0 is ``a`` and 1 is ``b`` exactly (sin(0) = 0 and sin(theta) / sin(theta) = 1)."""
    if weight == 0:
        return a
    if weight == 1:
        return b
    flat_a, flat_b = a.flatten(1).double(), b.flatten(1).double()
    cos = (flat_a * flat_b).sum(1) / (flat_a.norm(dim=1) * flat_b.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1)).view(-1, *([1] * (a.ndim - 1)))
    mixed = (torch.sin((1 - weight) * theta) * a.double() + torch.sin(weight * theta) * b.double()) / torch.sin(theta)
    return mixed.to(a.dtype)


class Stopwatch:
    """Per-stage wall time; synchronises the GPU at stage edges so the split is honest. Before each stage it asks
    ``stopped`` whether anyone still waits for the frames, and raises ``Superseded`` if not."""

    def __init__(self, device: torch.device, stopped: Callable[[], bool] = lambda: False):
        self.cuda = device.type == "cuda"
        self.stopped = stopped
        self.ms = dict.fromkeys(STAGES, 0.0)
        self.start = time.perf_counter()

    def check(self) -> None:
        if self.stopped():
            raise Superseded("every frame of this batch was superseded")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.check()
        began = time.perf_counter()
        with torch.profiler.record_function(f"{STAGE_LABEL}{name}"):  # names the stage in `bench --profile`
            yield
            if self.cuda:
                torch.cuda.synchronize()
        self.ms[name] += (time.perf_counter() - began) * 1000

    def finish(self) -> dict[str, float]:
        total = (time.perf_counter() - self.start) * 1000
        return {k: round(v, 2) for k, v in (self.ms | {"total": total}).items()}


class Renderer:
    """Owns the loaded pipeline, its speed-ups, caches and edge detector; ``render`` makes a batch's frames. Not
    thread-safe: one thread (the engine's model thread) uses it."""

    def __init__(self, loaded: LoadedPipeline, speed: SpeedOptions | None = None):
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.torch_device: torch.device = self.pipe._execution_device
        self.tiny = loaded.tiny_autoencoder  # the "tiny" lane's autoencoder, or None (loaded.tiny_note says why)
        # Binning snaps sizes to the 1024px model's trained aspect bins; the preview model has none to respect.
        self.use_resolution_binning = not loaded.is_preview
        self.speed = apply_speedups(self.pipe, speed or SpeedOptions(), tiny=self.tiny)
        # LoRA adapters (loaded by the engine at start); compiled code switches them by hotswap, never recompiling
        self.adapters = LoraAdapters(self.pipe, hotswap=self.speed.compile)
        self.prompts: LRUCache[str, PromptEmbeddings] = LRUCache(settings.PROMPT_CACHE_SIZE)
        self.controls: LRUCache[tuple, torch.Tensor] = LRUCache(settings.CONTROL_CACHE_SIZE)  # (map, h, w)
        self.pictures: LRUCache[tuple, torch.Tensor] = LRUCache(settings.IMAGE_CACHE_SIZE)  # (picture, h, w, lane)
        # lookups of the prompt and control-latent caches: "prompt_hit", "prompt_miss", "control_hit", "control_miss"
        self.cache_counts: Counter[str] = Counter()
        self.warm = False  # True once the engine's warm-up ran: from then on nothing compiles
        self.eager = False  # True: frames ignore torch.compile (the benchmark's check of what compiled code draws)
        self._detector: conditioning.EdgeDetector | None = None  # photos' edge detector, loaded on first use
        self._watch: Stopwatch | None = None  # the batch running now, whose stop points the layers below check
        if not self.speed.compile:
            add_stop_points(self.pipe, self.tiny, self._stop_point)

    @property
    def decoders(self) -> tuple[str, ...]:
        """The lanes this renderer has: ``DECODERS``, or ``("full",)`` without a tiny autoencoder."""
        return DECODERS if self.tiny is not None else (DEFAULT_DECODER,)

    def autoencoder(self, decoder: str):
        """The autoencoder of a lane's decode and picture encode: the pipeline's DC-AE for "full", the tiny one for
        "tiny" (control maps always take the DC-AE). ``LaneUnavailable`` for a lane this renderer lacks."""
        if decoder == DEFAULT_DECODER:
            return self.pipe.vae
        if self.tiny is None:
            raise LaneUnavailable(decoder, self.loaded.tiny_note)
        return self.tiny

    def clear_caches(self) -> None:
        for cache in (self.prompts, self.controls, self.pictures):
            cache.clear()

    # --- frames ------------------------------------------------------------------------------------------------

    def render(self, requests: list[FrameRequest], prep_ms: list[float],
               stopped: Callable[[], bool] = lambda: False) -> list[tuple[Frame, tuple[str, ...]]]:
        """Requests of one ``batch_key`` -> (frame, prompt notices) each, one row per request. One request runs
        exactly as a frame alone always has (numbers, not per-row tensors). ``prep_ms``: what building each request
        took (its "input_prep" stage). Raises ``Superseded`` at a stop point once ``stopped()``; any other error
        as it is (after handing a CUDA out-of-memory's blocks back)."""
        if self.speed.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new frame: earlier graph outputs may be reused
        watch = self._watch = Stopwatch(self.torch_device, stopped)
        try:
            with torch.compiler.set_stance(self._stance()), torch.inference_mode():
                images, notices = self._images(requests, watch)
        except torch.OutOfMemoryError:
            if self.torch_device.type == "cuda":
                torch.cuda.empty_cache()  # hand the failed frame's blocks back so the next frame can fit
            raise
        finally:
            self._watch = None
        timings = watch.finish()
        return [
            (Frame(image=image, timings_ms=timings | {"input_prep": round(prep, 2),
                                                      "total": round(timings["total"] + prep, 2)},
                   control_map=request.control_map, batch_size=len(requests), decoder=request.decoder,
                   strength=request.strength), row_notices)
            for image, request, prep, row_notices in zip(images, requests, prep_ms, notices)
        ]

    def _stance(self) -> str:
        if self.eager:
            return "force_eager"
        if self.warm and self.speed.compile:
            # Once warm, a compiled renderer never compiles again: a size the warm-up did not see (an aspect preset,
            # an API call) runs eagerly instead of holding the GPU for the minute a compile takes.
            return "eager_on_recompile"
        return "default"

    def _images(self, requests: list[FrameRequest], watch: Stopwatch) -> tuple[list[Image.Image], list[tuple]]:
        """The batch's images and each row's prompt notices: the encodings through the caches, then ``sample``."""
        pipe, first, rows = self.pipe, requests[0], len(requests)
        vae = self.autoencoder(first.decoder)  # the lane's: decode and picture encode (control maps: the DC-AE)
        with watch.stage("text_encode"):
            prompts = [self.request_embeddings(r) for r in requests]
        attention_kwargs = self.adapters.select(lora_adapter(first), first.style_scale)
        height, width = pipe.resolution(first.height, first.width, self.use_resolution_binning)
        control_latents, control_scale = None, 0.0
        if pipe.controlnet is not None and any(r.control_map is not None for r in requests):
            with watch.stage("control_encode"):
                control_latents, control_scale = _control_rows(
                    [None if r.control_map is None else self.control_latents(r, height, width) for r in requests],
                    [r.control_strength for r in requests])
        start = {}
        if first.init_key is not None:  # image-to-image: the pictures noised to the strength's start time
            with watch.stage("image_encode"):
                pictures = torch.cat([self.start_latents(r, height, width, vae) for r in requests])
            start = dict(image=pictures, strength=first.strength, max_timesteps=None, intermediate_timesteps=None,
                         timesteps=continuous_strength_timesteps(first.strength, first.steps))
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
        if any(r.seed_b is not None for r in requests):
            start["latents"], generators = self.travel_noise(requests, height, width)

        def between_steps(_pipe, step: int, _t, tensors: dict) -> dict:
            if step + 1 < first.steps:
                watch.check()
            return tensors

        pixels = pipe.sample(
            torch.cat([p[0] for p in prompts]),
            torch.cat([p[1] for p in prompts]),
            height,
            width,
            first.steps,
            first.guidance_scale if rows == 1 else torch.tensor([r.guidance_scale for r in requests]),
            generators[0] if rows == 1 else generators,  # a list: each row draws its own noise
            control_latents=control_latents,
            controlnet_conditioning_scale=control_scale,
            output_size=(first.height, first.width),
            output_type="pt",
            vae=vae,
            attention_kwargs=attention_kwargs,
            callback_on_step_end=between_steps if first.steps > 1 else None,
            stage=watch.stage,
            **start,
        )
        with watch.stage("postprocess"):
            images = [to_pil(pixels[i : i + 1]) for i in range(rows)]
        return images, [notices for _, _, notices in prompts]

    def _stop_point(self) -> None:
        if self._watch is not None:
            self._watch.check()

    def prompt_embeddings(self, prompt: str) -> PromptEmbeddings:
        """(embeds, mask, notices) of ``prompt``: the pipeline's prompt encoder (the trained instruction prepended,
        its tokens encoded once), cached per prompt; a notice when the prompt's end fell outside the encoder's
        window."""
        cached = self.prompts.get(prompt)
        self.cache_counts["prompt_miss" if cached is None else "prompt_hit"] += 1
        if cached is None:
            encoded = self.pipe.prompt_encoder(prompt)
            notices = (prompt_cut_notice(encoded.kept, encoded.tokens),) if encoded.dropped else ()
            cached = self.prompts[prompt] = (encoded.embeds, encoded.mask, notices)
        return cached

    def request_embeddings(self, request: FrameRequest) -> PromptEmbeddings:
        """A request's (embeds, mask, notices): its prompt in its style's template, and with prompt travel the
        embeddings interpolated towards ``prompt_b``'s (``torch.lerp``: 0 and 1 give either side exactly) and the
        masks joined, so every token either prompt has is attended to."""
        first = self.prompt_embeddings(styled_prompt(request.prompt, request.style))
        if request.prompt_b is None:
            return first
        second = self.prompt_embeddings(styled_prompt(request.prompt_b, request.style))
        embeds = torch.lerp(first[0], second[0], request.blend)
        return embeds, torch.maximum(first[1], second[1]), first[2] + second[2]

    def travel_noise(self, requests: list[FrameRequest], height: int,
                     width: int) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Seed travel: each row's start noise drawn as ``prepare_initial_latents`` draws it from its seed, slerped
        towards ``seed_b``'s by ``seed_blend``, and the generator that draws the noise between steps (multi-step
        frames): the nearer seed's, so blend 0 and 1 are the single seeds' frames exactly."""
        rows, generators = [], []
        for request in requests:
            generator = torch.Generator("cpu").manual_seed(request.seed)
            noise = self._noise(generator, height, width)
            if request.seed_b is not None:
                other = torch.Generator("cpu").manual_seed(request.seed_b)
                noise = slerp(noise, self._noise(other, height, width), request.seed_blend)
                generator = other if request.seed_blend >= 0.5 else generator
            rows.append(noise)
            generators.append(generator)
        return torch.cat(rows), generators

    def _noise(self, generator: torch.Generator, height: int, width: int) -> torch.Tensor:
        """One row of start noise as ``prepare_initial_latents`` draws it, before its ``sigma_data`` factor."""
        pipe = self.pipe
        return pipe.prepare_latents(1, pipe.transformer.config.in_channels, height, width, torch.float32,
                                    self.torch_device, generator, None)

    def picture_latents(self, request: FrameRequest, height: int, width: int, vae) -> torch.Tensor:
        """The start picture's clean latent (1, C, h, w), cached per picture and lane like control latents."""
        key = (request.init_key, height, width, request.decoder)
        latents = self.pictures.get(key)
        if latents is None:
            latents = self.pictures[key] = self.pipe.prepare_image_latents(request.init_image, height, width,
                                                                            vae=vae).clone()
        return latents

    def start_latents(self, request: FrameRequest, height: int, width: int, vae) -> torch.Tensor:
        """The clean latent image-to-image starts from: the start picture's (``picture_latents``), blended with the
        previous output frame's at ``request.steadiness`` when the request has one."""
        latents = self.picture_latents(request, height, width, vae)
        if request.steadiness == 0 or request.previous_key is None:
            return latents
        previous = replace(request, init_image=request.previous_image, init_key=request.previous_key)
        return torch.lerp(latents, self.picture_latents(previous, height, width, vae), request.steadiness)

    def control_latents(self, request: FrameRequest, height: int, width: int) -> torch.Tensor:
        """The control map's DC-AE latent (1, C, h, w) in every lane (the ControlNet's training input), cached per
        map and size: one latent serves both lanes."""
        key = (request.control_key, height, width)
        latents = self.controls.get(key)
        self.cache_counts["control_miss" if latents is None else "control_hit"] += 1
        if latents is None:
            # clone: with CUDA graphs the encoder's output buffer is overwritten by its next replay
            latents = self.controls[key] = self.pipe.prepare_control_latents(request.control_map, height, width,
                                                                              vae=self.pipe.vae).clone()
        return latents

    # --- photos' edge maps -------------------------------------------------------------------------------------

    def edge_map(self, photo: Image.Image, thickness: int, size: tuple[int, int]) -> Image.Image:
        """A photo -> its edge map (white lines on black) of ``size`` (``conditioning.photo_to_control_map``)."""
        return conditioning.photo_to_control_map(photo, thickness, size, detector=self.edge_detector())

    def edge_detector(self) -> conditioning.EdgeDetector:
        """The photos' edge detector (``conditioning.load_hed_detector``) on the renderer's device, loaded once. With
        a model other than the preview, the classical detector standing in for HED is logged as a warning."""
        if self._detector is None:
            self._detector = conditioning.load_hed_detector().to(self.torch_device)
            if self.edges_fallback is not None:
                log.warning("photo edges: the classical Canny detector stands in for HED (%s); the ControlNet was "
                            "trained on HED scribbles, so a photo steers it less faithfully (SPRINT_HED_DETECTOR=hed "
                            "refuses to start without HED)", self.edges_fallback)
        return self._detector

    @property
    def edges_fallback(self) -> str | None:
        """Why photos' edge maps come from the classical Canny detector instead of HED, for a model other than the
        preview (whose random weights make nothing to be faithful to); None when HED makes them, for the preview,
        or before the detector has loaded."""
        if self.loaded.is_preview or self._detector is None:
            return None
        if self._detector.name == conditioning.HedEdgeDetector.name:
            return None
        return getattr(self._detector, "reason", self._detector.name)


def _control_rows(
    controls: list[torch.Tensor | None], strengths: list[float]
) -> tuple[torch.Tensor | None, float | torch.Tensor]:
    """Per-row control latents (1, C, h, w) or None -> what ``denoise`` takes: None when no row has control; one
    row as it is; several as one (B, C, h, w) latent with a (B,) strength, where a row without control gets a zero
    latent and strength 0 (its residuals are multiplied by 0 and add nothing)."""
    present = [c for c in controls if c is not None]
    if not present:
        return None, 0.0
    if len(controls) == 1:
        return controls[0], strengths[0]
    zero = torch.zeros_like(present[0])
    latents = torch.cat([zero if c is None else c for c in controls])
    return latents, torch.tensor([0.0 if c is None else s for c, s in zip(controls, strengths)])


def prompt_cut_notice(kept: int, tokens: int) -> str:
    """The notice of a prompt longer than the text encoder's window: how many of its tokens the model sees."""
    return (f"prompt cut to the text encoder's window: {kept} of its {tokens} tokens kept, the last "
            f"{tokens - kept} dropped")


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL, rounding to uint8 on the device: a quarter of the bytes cross to the host.
    The same arithmetic as diffusers' pt_to_numpy + numpy_to_pil (float32 x 255, round), so the same pixels."""
    array = (pixels[0].float() * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)
