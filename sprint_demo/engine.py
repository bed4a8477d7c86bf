"""The frame engine: one object per process that serves sessions with frames (``frames.FrameSource``).

``Engine.render(FrameRequest) -> Frame`` is the one way a frame is made; callers build the request with
``sprint_demo.inputs``. The engine serves; its ``renderer`` (``sprint_demo.renderer.Renderer``) makes the frames:

* all model work runs on the engine's one thread (``batcher``, a ``sprint_demo.batcher.Batcher``): frames of
  different sessions that wait at the same time with the same ``renderer.batch_key`` run as one batch of up to
  ``max_batch_size`` rows. The batcher decides the order (finals before drafts, round-robin over sessions, one
  waiting frame per session, a final stops its session's draft in flight) and raises ``Superseded`` /
  ``EngineBusy`` to callers it turns away; a batch whose frames have all been superseded stops at the renderer's
  next stop point;
* a request equal to one of the last ``max_batch_size`` frames' returns that frame without any work
  (``Frame.reused``): equal requests give equal pixels, so whoever asked first, the answer is the same;
* a session's camera picture alike the input of its last made frame, every other input equal, gets that frame again
  (``Frame.skipped``, ``steady.Steady``); a request with steadiness gets the session's previous frame to blend in;
* the warm-up runs the frames users will ask for first (sizes from ``settings``) before the first user arrives;
* ``photo_to_control_map`` makes a photo's edge map on the model thread (the edge detector shares the device).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from cachetools import LRUCache
from PIL import Image

from . import inputs, settings
from .batcher import Batcher, EngineBusy, Priority, Superseded, Ticket
from .frames import Frame, FrameRequest
from .models.loading import LoadedPipeline, ModelLoadError, attach_controlnet, load_pipeline
from .models.lora import LoraRefused, parse_lora
from .models.speedups import SpeedOptions
from .renderer import STAGES, LaneUnavailable, Renderer, batch_key
from .steady import Steady

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["Engine", "EngineBusy", "Frame", "FrameRequest", "Priority", "Superseded", "load_engine"]


class Engine:
    """Serves sessions with frames from one ``Renderer`` on one model thread. Thread-safe; implements
    ``frames.FrameSource`` (the web layer's view of it). Bad values raise ``inputs.InputError``; model failures
    propagate as they are. ``close`` ends the model thread."""

    size: int
    model_name: str
    is_preview: bool
    fallback_reason: str | None
    tiny_note: str | None
    batch_sizes: Counter[int]

    def __init__(
        self,
        loaded: LoadedPipeline,
        fallback_reason: str | None = None,
        speed: SpeedOptions | None = None,
        size: int | None = None,
        max_batch_size: int = settings.MAX_BATCH_SIZE,
    ):
        self.renderer = Renderer(loaded, speed)
        self.loaded = loaded
        self.model_name = loaded.model_name
        self.is_preview = loaded.is_preview
        self.fallback_reason = fallback_reason  # why "auto" fell back to the preview model (None: it did not)
        self.tiny_note = loaded.tiny_note
        self.size = size or (settings.PREVIEW_SIZE if self.is_preview else settings.DEFAULT_SIZE)
        self.batch_sizes = Counter()  # rows of every batch made (frames reused from a batch: none)
        self.steady = Steady()  # sessions' last made frames: unchanged pictures skipped, steadiness's previous frame
        self._counts: Counter[str] = Counter()  # "made", "reused" (the model thread's); Steady counts "skipped"
        self.batcher = Batcher(self._run, max_batch_size=1, window_s=settings.BATCH_WINDOW_MS / 1000,
                               max_waiting=settings.MAX_WAITING_FRAMES,
                               company_memory_s=settings.BATCH_COMPANY_MEMORY_S, inline=settings.ZERO_GPU)
        # request -> (frame, its prompt notices): the frames reuse may hand out
        self.recent_frames: LRUCache[FrameRequest, tuple[Frame, tuple[str, ...]]] = LRUCache(1)
        self.max_batch_size = max_batch_size
        self.lora_refusals: list[str] = []  # why LoRAs asked for at start were not loaded

    # --- facts (frames.FrameSource) -------------------------------------------------------------------------------

    @property
    def max_batch_size(self) -> int:
        return self.batcher.max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {value!r}")
        self.batcher.max_batch_size = value
        self.recent_frames = LRUCache(value)  # the last batch's frames (1: the previous frame)

    @property
    def frame_counts(self) -> Counter[str]:
        counts = Counter(dict.fromkeys(("made", "reused", "skipped"), 0))
        counts.update(self._counts)
        counts.update(self.steady.counts)
        return counts

    @property
    def speed(self) -> SpeedOptions:
        """The speed-ups in effect (``Renderer.speed``)."""
        return self.renderer.speed

    @property
    def device(self) -> str:
        return str(self.renderer.torch_device)

    @property
    def has_controlnet(self) -> bool:
        return self.renderer.pipe.controlnet is not None

    @property
    def controlnet_description(self) -> str | None:
        """What the loaded ControlNet checkpoint is (None when it was built in code: preview, random-full)."""
        report = self.loaded.controlnet_report
        return None if report is None else report.description

    @property
    def decoders(self) -> tuple[str, ...]:
        return self.renderer.decoders

    @property
    def has_tiny_decoder(self) -> bool:
        return self.renderer.tiny is not None

    @property
    def cache_counts(self) -> Counter[str]:
        """Hits and misses of the prompt and control-latent caches since the warm-up (``Renderer.cache_counts``)."""
        return self.renderer.cache_counts

    @property
    def edges_fallback(self) -> str | None:
        """Why photos' edge maps come from the classical detector instead of HED (``Renderer.edges_fallback``)."""
        return self.renderer.edges_fallback

    @property
    def styles(self) -> tuple[str, ...]:
        """The prompt presets (``settings.STYLE_PRESETS``), then the LoRA adapters loaded (``load_lora``)."""
        return (*settings.STYLE_PRESETS, *self.renderer.adapters.names)

    def load_lora(self, entry: str) -> None:
        """Loads ``NAME=PATH_OR_HUB_ID`` as a style, on the model thread; ``LoraRefused`` naming it when it does not
        fit the model (the engine as it was) or its name is a preset's."""
        name, source = parse_lora(entry)
        if name in settings.STYLE_PRESETS:
            raise LoraRefused(f"LoRA {name!r}: that name is a style preset's; give the LoRA another name")
        self.batcher.call(lambda: self.renderer.adapters.load(name, source))

    # --- frames ---------------------------------------------------------------------------------------------------

    def render(self, request: FrameRequest, prep_ms: float = 0.0, session: str | None = None,
               priority: Priority = Priority.FINAL, refusable: bool = True) -> Frame:
        """The one way a frame is made (``frames.FrameSource.render``). ``request`` is clean (``sprint_demo.inputs``);
        ``prep_ms`` is what building it took at the boundary, reported as that stage. ``session`` (a tab, a camera
        stream) and ``priority`` order the work (``sprint_demo.batcher``): a newer frame of the same session
        replaces this one while it waits (``Superseded``), and too many sessions waiting refuse it (``EngineBusy``)
        unless ``refusable`` is False. Concurrent callers' frames may be made in one batch (``Frame.batch_size``);
        a model fault in a batch is raised to each of its callers. A session's unchanged picture is answered with its
        last made frame at once (``steady``)."""
        if request.decoder not in self.decoders:  # refused before waiting
            raise LaneUnavailable(request.decoder, self.tiny_note)
        if request.style not in self.styles:
            raise inputs.InputError(f"style must be one of {', '.join(map(repr, self.styles))}, got {request.style!r}")
        if session is not None:
            if (last := self.steady.unchanged(session, request, prep_ms)) is not None:
                return last
            request = self.steady.with_previous(session, request)
        ticket = Ticket((request, prep_ms), batch_key(request), session=session, priority=priority,
                        refusable=refusable)
        frame = self.batcher.submit(ticket)
        if session is not None:
            self.steady.made(session, request, frame)
        return frame

    def cancel(self, session: str) -> None:
        """Drops ``session``'s waiting frame and cancels its frame in flight (a stopped camera): a batch stops at its
        next stop point once every frame of it is cancelled. The session's next frame starts afresh (``steady``)."""
        self.batcher.cancel(session)
        self.steady.forget(session)

    def photo_to_control_map(self, photo: Image.Image, thickness: int = settings.DEFAULT_THICKNESS,
                             size: tuple[int, int] | None = None) -> Image.Image:
        """A photo -> edge map (white lines on black) of ``size`` (width, height; default the photo's own frame,
        ``inputs.fit_size`` at the engine's size: its aspect ratio kept, as NVlabs runs a photo), made on the model
        thread (the HED net shares the device). ``edges_fallback`` says when the classical detector stands in."""
        photo = inputs.decode_image(photo, what="photo")
        if photo is None:
            raise inputs.InputError("photo is empty: upload an image")
        thickness = inputs.check_thickness(thickness)
        size = inputs.fit_size(photo.width, photo.height, self.size) if size is None else inputs.check_size(*size)
        return self.batcher.call(lambda: self.renderer.edge_map(photo, thickness, size))

    def on_model_thread(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model thread (frames it renders run at once, inline): a profiler started there sees
        every kernel, as one started in another thread would not."""
        return self.batcher.call(fn)

    def clear_caches(self) -> None:
        """Forgets cached prompts, control and picture latents and the last frames: the next frame does all its work.
        Runs on the model thread, the only one that uses the caches, between batches."""

        def clear() -> None:
            self.renderer.clear_caches()
            self.recent_frames.clear()
            self.steady.clear()

        self.batcher.call(clear)

    def close(self) -> None:
        """Ends the model thread (callers still waiting get an error); the engine makes no frames after this."""
        self.batcher.close()

    # --- warm-up --------------------------------------------------------------------------------------------------

    def warmup(self) -> float:
        """Frames with and without control and image-to-image at the canvas size (compiled: also at
        ``settings.WARM_IMAGE_SIZES``), on the model thread: loads kernels, fills allocator pools and runs
        compilation before the first user arrives. Compiled, the frames run at each step count users get by default
        (``warm_step_counts``); with CUDA graphs at every step count, each one a new path of graphs to record
        (seconds), which the first user to move the steps slider would otherwise wait for. Returns seconds taken."""
        return self.batcher.call(self._warmup)

    def warm_step_counts(self) -> list[int]:
        """The step counts the warm-up runs: uncompiled one (kernels and allocator pools do not depend on it)."""
        if self.speed.cuda_graphs:
            return list(range(settings.MIN_STEPS, settings.MAX_STEPS + 1))
        if self.speed.compile:
            return sorted({settings.DRAFT_STEPS, settings.CAMERA_STEPS, settings.DEFAULT_STEPS})
        return [settings.DEFAULT_STEPS]

    def _warmup(self) -> float:
        began = time.perf_counter()
        square, steps = (self.size, self.size), self.warm_step_counts()
        blank = Image.new("RGB", square, "black")
        for decoder, control, count in itertools.product(
                self.decoders, (None, blank) if self.has_controlnet else (None,), steps):
            self.render(inputs.sketch_request(None, "warm-up", count, 0, settings.DEFAULT_GUIDANCE, 1.0,
                                              settings.DEFAULT_THICKNESS, square, control_map=control,
                                              decoder=decoder))
        sizes = [square, *(settings.WARM_IMAGE_SIZES if self.speed.compile else ())]
        for decoder, (width, height), count in itertools.product(self.decoders, sizes, steps):
            self.render(inputs.image_request(Image.new("RGB", (width, height), "grey"), "warm-up",
                                             settings.WARM_STRENGTH, count, 0, settings.DEFAULT_GUIDANCE,
                                             max(width, height), decoder))
        self.clear_caches()
        self.batch_sizes.clear()
        self.renderer.cache_counts.clear()
        self._counts.clear()
        self.steady.counts.clear()
        self.renderer.warm = True
        return time.perf_counter() - began

    # --- batches (the model thread) -------------------------------------------------------------------------------

    def _run(self, batch: list[Ticket]) -> None:
        """Settles every ticket's future: its frame (reused, or made in one renderer batch) or the error that stopped
        the batch."""
        todo: dict[FrameRequest, float] = {}  # distinct requests to make -> their prep time (equal: made once)
        for ticket in batch:
            request, prep_ms = ticket.payload
            if (reused := self.recent_frames.get(request)) is not None:
                self._counts["reused"] += 1
                frame, prompt_notices = reused
                ticket.future.set_result(replace(
                    frame, reused=True, timings_ms=dict.fromkeys((*STAGES, "total"), 0.0),
                    notices=request.notices + prompt_notices, control_map=request.control_map))
            else:
                todo.setdefault(request, prep_ms)
        making = [t for t in batch if not t.future.done()]
        if not making:
            return
        try:  # stops once every frame still to make was superseded: nobody waits for this batch
            made = self.renderer.render(list(todo), list(todo.values()), lambda: all(t.cancelled for t in making))
        except Exception as error:  # noqa: BLE001 - handed to each caller
            for ticket in making:
                ticket.future.set_exception(error)
            return
        self.batch_sizes[len(todo)] += 1
        self._counts["made"] += len(todo)
        frames = dict(zip(todo, made))
        self.recent_frames.update(frames)
        for ticket in making:
            request = ticket.payload[0]
            frame, prompt_notices = frames[request]
            ticket.future.set_result(replace(frame, notices=request.notices + prompt_notices))


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
    loras: tuple[str, ...] = settings.LORAS,
) -> Engine:
    """Loads the pipeline (``sprint_demo.models.loading.load_pipeline``) and wraps it in an Engine.

    ``model="auto"``: the real SANA-Sprint weights (with the experimental Sana 1.0 HED ControlNet unless
    ``controlnet`` names another) when they load; otherwise the offline preview model, with the reason in
    ``Engine.fallback_reason`` and the log. Any other model that fails to load raises ``ModelLoadError``.
    ``size``: the canvas's frame side (default: the model's own, ``Engine``). ``tiny_autoencoder`` and ``vae_lite``
    as ``load_pipeline`` takes them: a tiny autoencoder that cannot load leaves the engine with the full lane only
    (``Engine.tiny_note`` says why); a DC-AE-Lite that cannot load raises ``ModelLoadError``. ``controlnet_wiring``:
    how the ControlNet is wired (``attach_controlnet``). ``loras``: ``NAME=PATH_OR_HUB_ID`` styles, loaded before
    the warm-up; one that does not fit is refused with a warning naming it (``Engine.lora_refusals``), the engine
    serves without it."""
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
            engine.renderer.edge_detector()
        except Exception as error:  # noqa: BLE001 - only "hed" raises: the operator asked for HED and it is not there
            engine.close()
            raise ModelLoadError(f"SPRINT_HED_DETECTOR={settings.HED_DETECTOR} asks for the HED annotator for photos, "
                                 f"and it could not load: {type(error).__name__}: {error}") from error
    for entry in loras:
        try:
            engine.load_lora(entry)
        except (LoraRefused, ValueError) as error:
            log.warning("%s", error)
            engine.lora_refusals.append(str(error))
    if warmup:
        log.info("warm-up took %.1f s", engine.warmup())
    return engine
