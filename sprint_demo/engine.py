"""The frame engine: one object per process that owns the loaded pipeline and turns requests into frames.

One submission path: ``Engine.render(FrameRequest) -> Frame`` (``sketch_to_image`` / ``text_to_image`` /
``image_to_image`` build the request at the boundary, ``sprint_demo.inputs``, and call it). A frame runs the
pipeline's own stages (``SanaSprintControlNetPipeline``: resolution, encode_prompt, prepare_control_latents,
prepare_image_latents, prepare_timesteps, prepare_initial_latents or noise_image_latents, denoise, decode_latents),
so the binning, crop and schedule rules live in the pipeline only. The engine is the only place that knows about
caches, the model thread and timings:

* prompts are encoded with the instruction the model was trained with, its tokens encoded once
  (``pipe.prompt_encoder``), and their embeddings cached (LRU): typing re-encodes, strokes do not;
* the control latent is cached per control-map content, the image-to-image start latent per picture: a new
  prompt or seed does not re-encode the canvas;
* two autoencoder lanes (``FrameRequest.decoder``): "full", the pipeline's DC-AE, and "tiny", the tiny
  autoencoder from the loader (``sprint_demo.models.tiny_autoencoder``), which decodes the frame and encodes an
  image-to-image start picture (``Engine._autoencoder``; picture latents are cached per lane). Control maps are
  encoded by the DC-AE's encoder in both lanes: the ControlNet has only seen DC-AE latents of line maps, and flat
  black-and-white line art is far from the pictures the tiny encoder was distilled on; so one cached control
  latent serves both lanes, and a new stroke costs a tiny-lane draft one DC-AE encode. ``Engine.decoders`` lists
  the lanes a server has: without a tiny autoencoder (switched off, or its files unreachable offline) it is
  ``("full",)``, a "tiny" request is refused with the reason, and ``Engine.tiny_note`` says why;
* image-to-image starts from the picture's latent noised to ``continuous_strength_timesteps``' start time
  (strength s: t = s * pi/2), every step count from any strength; strength 1 never reaches the engine as
  image-to-image (``inputs.image_request`` makes it text-to-image);
* a request equal to one of the last ``max_batch_size`` frames' returns that frame without any work
  (``Frame.reused``): equal requests give equal pixels, so whoever asked first, the answer is the same;
* all model work runs on the engine's one thread (``sprint_demo.batcher.Batcher``): frames of different users
  that wait at the same time with the same size, steps, strength and decoder (``batch_key``) run as one batch of up
  to ``max_batch_size`` rows, each row from its own prompt, seed, guidance, picture, control latent and strength (a
  row without control gets strength 0 and a zero latent), so a row does not depend on the others; the batcher
  decides the order (finals before drafts, round-robin over sessions, one waiting frame per session, a final stops
  its session's draft in flight) and raises ``Superseded`` / ``EngineBusy`` to callers it turns away. A batch whose
  frames have all been superseded stops before its next stage, denoising step, transformer block or decoder layer;
* each frame carries per-stage timings in milliseconds (``STAGES``, and "total"), the GPU synchronised at stage
  edges.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TypeVar

import torch
from PIL import Image

from . import conditioning, inputs, settings
from .batcher import Batcher, EngineBusy, Priority, Superseded, Ticket
from .frames import DECODERS, DEFAULT_DECODER, Frame, FrameRequest
from .models.loading import LoadedPipeline, ModelLoadError, attach_controlnet, load_pipeline
from .models.pipeline import continuous_strength_timesteps
from .models.speedups import SpeedOptions, apply_speedups

log = logging.getLogger(__name__)

STAGES = settings.FRAME_STAGES
STAGE_LABEL = "stage:"  # prefix of each stage's range in a torch.profiler trace
T = TypeVar("T")
COMPANY_MEMORY_S = 1.0  # a batch waits for company only if a batch of this many seconds back had any

__all__ = ["STAGES", "Engine", "EngineBusy", "Frame", "FrameRequest", "Priority", "Superseded", "batch_key",
           "load_engine", "to_pil"]


def batch_key(request: FrameRequest) -> tuple[int, int, int, str, float]:
    """Frames share a batch only when these agree: one latent shape, one schedule (steps, and the image-to-image
    strength that sets where it starts: the scheduler steps every row from the same time), one autoencoder."""
    return request.width, request.height, request.steps, request.decoder, request.strength


class _LRU(OrderedDict):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def get_or_none(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class _Stopwatch:
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


class Engine:
    """Owns the pipeline, its device, caches and its one model thread (``sprint_demo.batcher``). Thread-safe.

    ``render`` takes a clean ``FrameRequest``; the keyword conveniences (``sketch_to_image``, ``text_to_image``,
    ``photo_to_control_map``) take raw values, build the request through ``sprint_demo.inputs`` and raise
    ``inputs.InputError`` naming a bad value. Model failures propagate as they are (the UI turns them into
    messages). ``close`` ends the model thread. Implements ``frames.FrameSource``, the web layer's view of it."""

    size: int
    model_name: str
    is_preview: bool
    fallback_reason: str | None
    tiny_note: str | None
    speed: SpeedOptions
    batch_sizes: Counter[int]
    cache_counts: Counter[str]

    def __init__(
        self,
        loaded: LoadedPipeline,
        fallback_reason: str | None = None,
        speed: SpeedOptions | None = None,
        size: int | None = None,
        max_batch_size: int = settings.MAX_BATCH_SIZE,
    ):
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.model_name = loaded.model_name
        self.is_preview = loaded.is_preview
        self.fallback_reason = fallback_reason  # why "auto" fell back to the preview model (None: it did not)
        self._detector: conditioning.EdgeDetector | None = None  # photos' edge detector, loaded on first use
        self.size = size or (settings.PREVIEW_SIZE if self.is_preview else settings.DEFAULT_SIZE)
        # Binning snaps sizes to the 1024px model's trained aspect bins; the preview model has none to respect.
        self.use_resolution_binning = not self.is_preview
        self.torch_device = self.pipe._execution_device
        self.tiny = loaded.tiny_autoencoder  # the "tiny" lane's autoencoder, or None (loaded.tiny_note says why)
        self.tiny_note = loaded.tiny_note
        self.speed = apply_speedups(self.pipe, speed or SpeedOptions(), tiny=self.tiny)
        self._prompts = _LRU(settings.PROMPT_CACHE_SIZE)
        self._controls = _LRU(settings.CONTROL_CACHE_SIZE)
        self._pictures = _LRU(settings.IMAGE_CACHE_SIZE)
        self._frames = _LRU(1)  # request -> (frame, its prompt notices): the frames reuse may hand out
        self.batch_sizes: Counter[int] = Counter()  # rows of every batch made (frames reused from a batch: none)
        # lookups of the prompt and control-latent caches: "prompt_hit", "prompt_miss", "control_hit", "control_miss"
        self.cache_counts: Counter[str] = Counter()
        self._batcher = Batcher(self._run, max_batch_size=1, window_s=settings.BATCH_WINDOW_MS / 1000,
                                max_waiting=settings.MAX_WAITING_FRAMES, company_memory_s=COMPANY_MEMORY_S,
                                inline=settings.ZERO_GPU)
        self.max_batch_size = max_batch_size
        self._warm = False  # set by warmup(): from then on nothing compiles (see render)
        self.eager = False  # True: frames ignore torch.compile (the benchmark's check of what compiled code draws)
        self._watch: _Stopwatch | None = None  # the batch running now, whose stop points the layers below check
        if not self.speed.compile:
            self._add_stop_points()

    @property
    def max_batch_size(self) -> int:
        return self._batcher.max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {value!r}")
        self._batcher.max_batch_size = value
        self._frames.capacity = value  # the last batch's frames (1: the previous frame)

    @property
    def batch_window_s(self) -> float:
        return self._batcher.window_s

    @batch_window_s.setter
    def batch_window_s(self, value: float) -> None:
        self._batcher.window_s = value

    @property
    def expect_full_batches(self) -> bool:
        """True: a batch always waits ``batch_window_s`` to fill (tests' deterministic mode)."""
        return self._batcher.expect_full_batches

    @expect_full_batches.setter
    def expect_full_batches(self, value: bool) -> None:
        self._batcher.expect_full_batches = value

    @property
    def thread(self) -> threading.Thread | None:
        """The thread that runs all of this engine's model work (None on ZeroGPU: callers run their own frames)."""
        return self._batcher.thread

    def expects_company(self, now: float) -> bool:
        return self._batcher.expects_company(now)

    @property
    def device(self) -> str:
        return str(self.torch_device)

    @property
    def has_controlnet(self) -> bool:
        return self.pipe.controlnet is not None

    @property
    def controlnet_description(self) -> str | None:
        """What the loaded ControlNet checkpoint is (None when it was built in code: preview, random-full)."""
        report = self.loaded.controlnet_report
        return None if report is None else report.description

    @property
    def decoders(self) -> tuple[str, ...]:
        """The decoder lanes this engine can render: ``("full", "tiny")``, or ``("full",)`` without a tiny
        autoencoder."""
        return DECODERS if self.has_tiny_decoder else (DEFAULT_DECODER,)

    @property
    def has_tiny_decoder(self) -> bool:
        return self.tiny is not None

    def _add_stop_points(self) -> None:
        """A batch that nobody waits for any more (a final superseded its draft) stops before the next transformer
        block or decoder layer, not only at the next stage: on a CPU one stage of a draft is tens of milliseconds
        that a final would otherwise wait for. Not when compiled (a hook inside a compiled region breaks its graph;
        compiled stages take milliseconds anyway)."""
        modules = [self.pipe.transformer.transformer_blocks, self.pipe.vae.decoder]
        if self.pipe.controlnet is not None:
            modules.append(self.pipe.controlnet.transformer_blocks)
        if self.tiny is not None and self.tiny.has_decoder:
            modules.append(self.tiny.decoder)
        for module in modules:
            for layer in module.children():
                sublayers = list(layer.children()) if isinstance(layer, (torch.nn.ModuleList, torch.nn.Sequential)) \
                    else [layer]
                for sublayer in sublayers:
                    sublayer.register_forward_pre_hook(self._stop_point)

    def _stop_point(self, *_hook_args) -> None:
        if self._watch is not None:
            self._watch.check()

    def _autoencoder(self, decoder: str):
        """The autoencoder of a lane's decode and picture encode: the pipeline's DC-AE for "full", the tiny one for
        "tiny" (control maps always take the DC-AE: ``_control_latents``)."""
        if decoder == DEFAULT_DECODER:
            return self.pipe.vae
        if self.tiny is None:
            raise inputs.InputError(f"decoder {decoder!r} is not available on this server: "
                                    f"{self.tiny_note or 'it was switched off'}; use decoder 'full'")
        return self.tiny

    # --- public API ----------------------------------------------------------------------------------------

    def sketch_to_image(
        self,
        sketch: Image.Image | str | bytes | None,
        prompt: str,
        steps: int = settings.DEFAULT_STEPS,
        seed: int = settings.DEFAULT_SEED,
        guidance_scale: float = settings.DEFAULT_GUIDANCE,
        control_strength: float = settings.DEFAULT_CONTROL_STRENGTH,
        thickness: int = settings.DEFAULT_THICKNESS,
        control_map: Image.Image | None = None,
        decoder: str = DEFAULT_DECODER,
        size: tuple[int, int] | None = None,
    ) -> Frame:
        """Sketch (dark strokes on light; None or blank = no control) or a ready control map -> frame of ``size``
        (width, height; default the engine's square; a photo's map from ``photo_to_control_map`` runs at its own,
        ``size=control_map.size``). Raw values are fine: ``inputs.sketch_request`` checks them (InputError naming
        the value)."""
        started = time.perf_counter()
        size = (self.size, self.size) if size is None else inputs.check_size(*size)
        request = inputs.sketch_request(
            sketch, prompt, steps=steps, seed=seed, guidance_scale=guidance_scale, control_strength=control_strength,
            thickness=thickness, size=size, control_map=control_map, decoder=decoder,
        )
        return self.render(request, prep_ms=(time.perf_counter() - started) * 1000)

    def text_to_image(
        self,
        prompt: str,
        steps: int = settings.DEFAULT_STEPS,
        seed: int = settings.DEFAULT_SEED,
        guidance_scale: float = settings.DEFAULT_GUIDANCE,
        width: int | None = None,
        height: int | None = None,
        decoder: str = DEFAULT_DECODER,
    ) -> Frame:
        """Prompt -> frame of width x height (default: the engine's size); values checked by inputs.text_request."""
        request = inputs.text_request(prompt, steps=steps, seed=seed, guidance_scale=guidance_scale,
                                      width=width or self.size, height=height or self.size, decoder=decoder)
        return self.render(request)

    def image_to_image(
        self,
        image: Image.Image | str | bytes,
        prompt: str,
        strength: float = settings.DEFAULT_STRENGTH,
        steps: int = settings.DEFAULT_STEPS,
        seed: int = settings.DEFAULT_SEED,
        guidance_scale: float = settings.DEFAULT_GUIDANCE,
        decoder: str = DEFAULT_DECODER,
        edges: bool = False,
        control_strength: float = settings.DEFAULT_CONTROL_STRENGTH,
    ) -> Frame:
        """A picture redrawn from ``strength`` (``inputs.image_request``: its aspect ratio kept, the long side the
        engine's size); ``edges``: its dark lines also steer the ControlNet."""
        started = time.perf_counter()
        request = inputs.image_request(image, prompt, strength, steps, seed, guidance_scale, self.size, decoder,
                                       edges=edges, control_strength=control_strength)
        return self.render(request, prep_ms=(time.perf_counter() - started) * 1000)

    def photo_to_control_map(self, photo: Image.Image, thickness: int = settings.DEFAULT_THICKNESS,
                             size: tuple[int, int] | None = None) -> Image.Image:
        """A photo -> HED edge map (white lines on black) of ``size`` (width, height; default the photo's own frame,
        ``inputs.fit_size`` at the engine's size: its aspect ratio kept, as NVlabs runs a photo), made on the model
        thread (the HED net shares the GPU). ``edges_fallback`` says when the classical detector stands in."""
        photo = inputs.decode_image(photo, what="photo")
        if photo is None:
            raise inputs.InputError("photo is empty: upload an image")
        thickness = inputs.check_thickness(thickness)
        size = size or inputs.fit_size(photo.width, photo.height, self.size)

        def edges() -> Image.Image:
            return conditioning.photo_to_control_map(photo, thickness, size, detector=self.edge_detector())

        return self._batcher.call(edges)

    def edge_detector(self) -> conditioning.EdgeDetector:
        """The photos' edge detector (``conditioning.load_hed_detector``) on the engine's device, loaded once. With
        a model other than the preview, the classical detector standing in for HED is logged as a warning."""
        if self._detector is None:
            detector = conditioning.load_hed_detector().to(self.torch_device)
            self._detector = detector
            if self.edges_fallback is not None:
                log.warning("photo edges: the classical Canny detector stands in for HED (%s); the ControlNet was "
                            "trained on HED scribbles, so a photo steers it less faithfully (SPRINT_HED_DETECTOR=hed "
                            "refuses to start without HED)", self.edges_fallback)
        return self._detector

    @property
    def edges_fallback(self) -> str | None:
        """Why photos' edge maps come from the classical Canny detector instead of HED, for a model other than the
        preview (whose random weights make nothing to be faithful to); None when HED makes them, for the preview,
        or before the detector has loaded (``load_engine`` loads it for every other model)."""
        if self.is_preview or self._detector is None or self._detector.name == conditioning.HedEdgeDetector.name:
            return None
        return getattr(self._detector, "reason", self._detector.name)

    def render(self, request: FrameRequest, prep_ms: float = 0.0, session: str | None = None,
               priority: Priority = Priority.FINAL, refusable: bool = True) -> Frame:
        """The one way a frame is made. ``request`` is clean (``sprint_demo.inputs``); ``prep_ms`` is what
        building it took at the boundary (decoding the sketch, making its control map), reported as that stage.
        ``session`` (a tab, a camera stream) and ``priority`` order the work (``sprint_demo.batcher``): a newer
        frame of the same session replaces this one while it waits (``Superseded``), and too many sessions waiting
        refuse it (``EngineBusy``) unless ``refusable`` is False (a caller that Gradio's queue bounds already).
        Thread-safe: concurrent callers' frames may be made in one batch (``Frame.batch_size``); a model fault in a
        batch is raised to each of its callers."""
        self._autoencoder(request.decoder)  # refuses a lane this engine does not have before waiting
        ticket = Ticket((request, prep_ms), batch_key(request), session=session, priority=priority,
                        refusable=refusable)
        return self._batcher.submit(ticket)

    def on_model_thread(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model thread (frames it renders run at once, inline): a profiler started there sees
        every kernel, as one started in another thread would not."""
        return self._batcher.call(fn)

    def cancel(self, session: str) -> None:
        """Drops ``session``'s waiting frame and cancels its frame in flight (a stopped camera): a batch stops at its
        next stop point once every frame of it is cancelled."""
        self._batcher.cancel(session)

    def warmup(self) -> float:
        """Frames with and without control and image-to-image at the canvas size (compiled: also the camera's
        commonest frame shapes), on the model thread: loads kernels, fills allocator pools and runs compilation
        before the first user arrives. Compiled, the frames run at each step count users get by default (drafts and
        camera frames at 1, finals at 2: ``warm_step_counts``); with CUDA graphs at every step count, each one a new
        path of graphs to record (seconds), which the first user to move the steps slider would otherwise wait for.
        Returns seconds taken."""
        return self._batcher.call(self._warmup)

    def warm_step_counts(self) -> list[int]:
        """The step counts the warm-up runs: uncompiled one (kernels and allocator pools do not depend on it)."""
        if self.speed.cuda_graphs:
            return list(range(settings.MIN_STEPS, settings.MAX_STEPS + 1))
        if self.speed.compile:
            return sorted({settings.DRAFT_STEPS, settings.CAMERA_STEPS, settings.DEFAULT_STEPS})
        return [settings.DEFAULT_STEPS]

    def _warmup(self) -> float:
        began = time.perf_counter()
        blank = Image.new("RGB", (self.size, self.size), "black")
        step_counts = self.warm_step_counts()
        for decoder, control, steps in itertools.product(
                self.decoders, (None, blank) if self.has_controlnet else (None,), step_counts):
            self.sketch_to_image(None, "warm-up", steps=steps, seed=0, control_strength=1.0, control_map=control,
                                 decoder=decoder)
        # image-to-image (Paint) at the canvas size; compiled, also the camera's commonest frame shapes
        pictures = [blank] + ([Image.new("RGB", (settings.CAMERA_CAPTURE_SIZE * a // max(a, b),
                                                  settings.CAMERA_CAPTURE_SIZE * b // max(a, b)), "grey")
                               for a, b in settings.CAMERA_WARM_ASPECTS] if self.speed.compile else [])
        for decoder, picture, steps in itertools.product(self.decoders, pictures, step_counts):
            long_side = self.size if picture is blank else settings.CAMERA_CAPTURE_SIZE
            self.render(inputs.image_request(picture, "warm-up", settings.DEFAULT_STRENGTH, steps, 0,
                                             settings.DEFAULT_GUIDANCE, long_side, decoder))
        self.clear_caches()
        self.batch_sizes.clear()
        self.cache_counts.clear()
        self._warm = True
        return time.perf_counter() - began

    def clear_caches(self) -> None:
        """Forgets cached prompts, control and picture latents and the last frames: the next frame does all its work.
        Runs on the model thread, the only one that uses the caches, between batches."""

        def clear() -> None:
            for cache in (self._prompts, self._controls, self._pictures, self._frames):
                cache.clear()

        self._batcher.call(clear)

    def close(self) -> None:
        """Ends the model thread (callers still waiting get an error); the engine makes no frames after this."""
        self._batcher.close()

    # --- batches -------------------------------------------------------------------------------------------

    def _run(self, batch: list[Ticket]) -> None:
        """(Model thread.) Gives every ticket its frame or the error that stopped the batch; never raises an
        Exception."""
        todo: dict[FrameRequest, float] = {}  # distinct requests to make -> control prep time (equal: made once)
        for ticket in batch:
            request, prep_ms = ticket.payload
            cached = self._frames.get_or_none(request)
            if cached is not None:
                frame, prompt_notices = cached
                ticket.result = replace(frame, reused=True, timings_ms=dict.fromkeys((*STAGES, "total"), 0.0),
                                        notices=request.notices + prompt_notices, control_map=request.control_map)
            else:
                todo.setdefault(request, prep_ms)
        if not todo:
            return
        making = [t for t in batch if t.result is None]

        def stopped() -> bool:  # every frame still to make was superseded: nobody waits for this batch
            return all(t.cancelled for t in making)

        if self.eager:
            stance = "force_eager"
        elif self._warm and self.speed.compile:
            # Once warm, a compiled engine never compiles again: a size the warm-up did not see (an aspect preset,
            # an API call) runs eagerly instead of holding the GPU for the minute a compile takes.
            stance = "eager_on_recompile"
        else:
            stance = "default"
        try:
            with torch.compiler.set_stance(stance):
                made = self._render(list(todo), list(todo.values()), stopped)
        except BaseException as error:
            self._watch = None
            if isinstance(error, torch.OutOfMemoryError) and self.torch_device.type == "cuda":
                torch.cuda.empty_cache()  # hand the failed frame's blocks back so the next frame can fit
            for ticket in making:
                ticket.error = error
            if not isinstance(error, Exception):
                raise
            return
        self._watch = None
        self.batch_sizes[len(todo)] += 1
        frames = dict(zip(todo, made))
        for request, made_frame in frames.items():
            self._frames.put(request, made_frame)
        for ticket in making:
            frame, prompt_notices = frames[ticket.payload[0]]
            ticket.result = replace(frame, notices=ticket.payload[0].notices + prompt_notices)

    # --- the frame path ------------------------------------------------------------------------------------

    def _render(self, requests: list[FrameRequest], prep_ms: list[float],
                stopped: Callable[[], bool] = lambda: False) -> list[tuple[Frame, tuple[str, ...]]]:
        """Requests of one ``batch_key`` -> (frame, prompt notices) each, through the pipeline's stages with one
        row per request. One request runs exactly as a frame alone always has (numbers, not per-row tensors).
        Raises ``Superseded`` at a stage or step boundary once ``stopped()``."""
        pipe, first, rows = self.pipe, requests[0], len(requests)
        if self.speed.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new frame: earlier graph outputs may be reused
        watch = self._watch = _Stopwatch(self.torch_device, stopped)

        def between_steps(_pipe, step: int, _t, tensors: dict) -> dict:
            if step + 1 < first.steps:
                watch.check()
            return tensors

        vae = self._autoencoder(first.decoder)  # the lane's: decode and picture encode (control maps: the DC-AE)
        with torch.inference_mode():
            with watch.stage("text_encode"):
                prompts = [self._prompt_embeddings(r.prompt) for r in requests]
            height, width = pipe.resolution(first.height, first.width, self.use_resolution_binning)
            controls: list[torch.Tensor | None] = [None] * rows
            if pipe.controlnet is not None and any(r.control_map is not None for r in requests):
                with watch.stage("control_encode"):
                    controls = [None if r.control_map is None else self._control_latents(r, height, width)
                                for r in requests]
            generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
            generator = generators[0] if rows == 1 else generators  # a list: each row draws its own noise
            if first.init_key is None:
                timesteps = pipe.prepare_timesteps(first.steps)
                start = pipe.prepare_initial_latents(rows, height, width, generator)
            else:  # image-to-image: the pictures noised to the strength's start time (one for the whole batch)
                with watch.stage("image_encode"):
                    pictures = torch.cat([self._picture_latents(r, height, width, vae) for r in requests])
                timesteps = pipe.prepare_timesteps(
                    first.steps, continuous_strength_timesteps(first.strength, first.steps), max_timesteps=None,
                    intermediate_timesteps=None)
                start = pipe.noise_image_latents(pictures, timesteps[:1], generator)
            with watch.stage("denoise"):
                control_latents, strength = _control_rows(controls, [r.control_strength for r in requests])
                guidance = first.guidance_scale if rows == 1 else torch.tensor([r.guidance_scale for r in requests])
                latents = pipe.denoise(
                    start,
                    torch.cat([p[0] for p in prompts]),
                    torch.cat([p[1] for p in prompts]),
                    timesteps,
                    guidance,
                    control_latents=control_latents,
                    controlnet_conditioning_scale=strength,
                    generator=generator,
                    callback_on_step_end=between_steps if first.steps > 1 else None,
                )
            with watch.stage("decode"):
                pixels = pipe.decode_latents(latents, first.height, first.width, output_type="pt", vae=vae)
            with watch.stage("postprocess"):
                images = [to_pil(pixels[i : i + 1]) for i in range(rows)]
        timings = watch.finish()
        return [
            (Frame(image=image, timings_ms=timings | {"input_prep": round(prep, 2),
                                                      "total": round(timings["total"] + prep, 2)},
                   control_map=request.control_map, batch_size=rows, decoder=request.decoder,
                   strength=request.strength), notices)
            for image, request, prep, (_, _, notices) in zip(images, requests, prep_ms, prompts)
        ]

    def _prompt_embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
        """(embeds, mask, notices) of ``prompt``: the pipeline's prompt encoder (the trained instruction prepended,
        its tokens encoded once), cached per prompt; a notice when the prompt's end fell outside the encoder's
        window."""
        cached = self._prompts.get_or_none(prompt)
        self.cache_counts["prompt_miss" if cached is None else "prompt_hit"] += 1
        if cached is None:
            encoded = self.pipe.prompt_encoder(prompt)
            notices = (prompt_cut_notice(encoded.kept, encoded.tokens),) if encoded.dropped else ()
            cached = (encoded.embeds, encoded.mask, notices)
            self._prompts.put(prompt, cached)
        return cached

    def _picture_latents(self, request: FrameRequest, height: int, width: int, vae) -> torch.Tensor:
        """The start picture's clean latent (1, C, h, w), cached per picture and lane like control latents."""
        cache_key = (request.init_key, height, width, request.decoder)
        latents = self._pictures.get_or_none(cache_key)
        if latents is None:
            latents = self.pipe.prepare_image_latents(request.init_image, height, width, vae=vae).clone()
            self._pictures.put(cache_key, latents)
        return latents

    def _control_latents(self, request: FrameRequest, height: int, width: int) -> torch.Tensor:
        """The control map's DC-AE latent (1, C, h, w) in every lane (the ControlNet's training input), cached per
        map and size: one latent serves both lanes."""
        cache_key = (request.control_key, height, width)
        latents = self._controls.get_or_none(cache_key)
        self.cache_counts["control_miss" if latents is None else "control_hit"] += 1
        if latents is None:
            # clone: with CUDA graphs the encoder's output buffer is overwritten by its next replay
            latents = self.pipe.prepare_control_latents(request.control_map, height, width, vae=self.pipe.vae).clone()
            self._controls.put(cache_key, latents)
        return latents


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


def load_engine(
    model: str = settings.MODEL,
    controlnet: str | None = settings.CONTROLNET,
    device: str | None = None,
    dtype: str | None = None,
    warmup: bool = True,
    speed: SpeedOptions | None = None,
    tiny_autoencoder: str | None = settings.TINY_AUTOENCODER,
    vae_lite: str | None = settings.VAE_LITE,
    max_batch_size: int = settings.MAX_BATCH_SIZE,
    size: int | None = None,
    controlnet_wiring: str = settings.CONTROLNET_WIRING,
) -> Engine:
    """Loads the pipeline (``sprint_demo.models.loading.load_pipeline``) and wraps it in an Engine.

    ``model="auto"``: the real SANA-Sprint weights (with the experimental Sana 1.0 HED ControlNet unless
    ``controlnet`` names another) when they load; otherwise the offline preview model, with the reason in
    ``Engine.fallback_reason`` and the log. Any other model that fails to load raises ``ModelLoadError``.
    ``size``: the canvas's frame side (default: the model's own, ``Engine``). ``tiny_autoencoder`` and ``vae_lite``
    as ``load_pipeline`` takes them: a tiny autoencoder that cannot load leaves the engine with the full lane only
    (``Engine.tiny_note`` says why); a DC-AE-Lite that cannot load raises ``ModelLoadError``. ``controlnet_wiring``:
    how the ControlNet is wired (``attach_controlnet``)."""
    lanes = dict(tiny_autoencoder=tiny_autoencoder, vae_lite=vae_lite)
    fallback_reason = None
    if model == "auto":
        try:
            loaded = load_pipeline(settings.SPRINT_MODEL_ID, None, device, dtype, **lanes)
        except ModelLoadError as error:
            reason = str(error).splitlines()[0]
            log.warning("falling back to the offline preview model: %s", reason)
            loaded = load_pipeline(settings.PREVIEW_MODEL, None, device, dtype, **lanes)
            fallback_reason = reason
        else:  # real weights: a ControlNet that fails to load costs the sketch its steering, not the app
            try:
                attach_controlnet(loaded, controlnet or settings.SANA10_HED_CONTROLNET_ID, controlnet_wiring)
            except ModelLoadError as error:
                log.warning("no ControlNet: %s", str(error).splitlines()[0])
    else:
        loaded = load_pipeline(model, controlnet, device, dtype, controlnet_wiring=controlnet_wiring, **lanes)
    engine = Engine(loaded, fallback_reason=fallback_reason, speed=speed, size=size, max_batch_size=max_batch_size)
    if not engine.is_preview and engine.has_controlnet:
        # at load: a Canny stand-in is in the log at start-up, and SPRINT_HED_DETECTOR=hed refuses to start
        try:
            engine.edge_detector()
        except Exception as error:  # noqa: BLE001 - only "hed" raises: the operator asked for HED and it is not there
            engine.close()
            raise ModelLoadError(f"SPRINT_HED_DETECTOR={settings.HED_DETECTOR} asks for the HED annotator for photos, "
                                 f"and it could not load: {type(error).__name__}: {error}") from error
    if warmup:
        log.info("warm-up took %.1f s", engine.warmup())
    return engine
