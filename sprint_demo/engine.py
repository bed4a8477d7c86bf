"""The frame engine: one object per process that owns the loaded pipeline and turns requests into frames.

One submission path: ``Engine.render(FrameRequest) -> Frame`` (``sketch_to_image`` / ``text_to_image`` build the
request at the boundary, ``sprint_demo.inputs``, and call it). A frame runs the pipeline's own stages
(``SanaSprintControlNetPipeline``: resolution, encode_prompt, prepare_control_latents, prepare_timesteps,
prepare_initial_latents, denoise, decode_latents), so the binning and crop rules live in the pipeline only. The
engine is the only place that knows about caches, the GPU lock and timings:

* prompt embeddings are cached (LRU): typing re-encodes, strokes do not;
* the control latent is cached per control-map content: a new prompt or seed does not re-encode the canvas;
* two autoencoder lanes (``FrameRequest.decoder``): "full", the pipeline's DC-AE, and "tiny", the tiny
  autoencoder from the loader (``sprint_demo.models.tiny_autoencoder``), used for both the control encode and the
  decode
  (``Engine._autoencoder``); their control latents are cached apart. ``Engine.decoders`` lists the lanes a server
  has: without a tiny autoencoder (switched off, or its files unreachable offline) it is ``("full",)``, a "tiny"
  request is refused with the reason, and ``Engine.tiny_note`` says it for the UI and the log;
* a request equal to one of the last ``max_batch_size`` frames' returns that frame without any work
  (``Frame.reused``): equal requests give equal pixels, so whoever asked first, the answer is the same;
* frames of different users that wait at the same time with the same size, steps and decoder (``batch_key``) run
  as one batch of up to ``max_batch_size`` rows, each row from its own prompt, seed, guidance, control latent and
  strength (a row without control gets strength 0 and a zero latent), so a row does not depend on the others;
  one engine thread makes the batches: it waits up to ``settings.BATCH_WINDOW_MS`` after the oldest waiting
  frame arrived for others of its key to join, runs the batch and hands every caller its frame (or the batch's
  error); callers that arrive while a batch runs wait and form the next one. It waits only when company can be
  expected: a frame of a lone user (no batch of more than one frame in the last ``COMPANY_MEMORY_S``) goes at
  once; otherwise the window is waited for a full batch, as users whose frames came back together are on their
  way again.
  ``max_batch_size=1`` runs each frame in its caller's thread under the lock, with no window;
* one lock serialises all model work (one GPU, shared by every user through the app's queue);
* each frame carries per-stage timings in milliseconds (``STAGES``, and "total"), the GPU synchronised at stage
  edges.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from PIL import Image

from . import conditioning, inputs, settings
from .frames import DECODERS, DEFAULT_DECODER, Frame, FrameRequest
from .models.loading import LoadedPipeline, ModelLoadError, attach_controlnet, load_pipeline
from .models.pipeline import MAX_SEQUENCE_LENGTH
from .models.speedups import SpeedOptions, apply_speedups

log = logging.getLogger(__name__)

STAGES = settings.FRAME_STAGES
STAGE_LABEL = "stage:"  # prefix of each stage's range in a torch.profiler trace
BATCHER_IDLE_S = 5.0  # the batch thread ends after this long without frames (a later frame starts another)
COMPANY_MEMORY_S = 1.0  # a batch waits for company only if a batch of this many seconds back had any

__all__ = ["STAGES", "Engine", "Frame", "FrameRequest", "batch_key", "load_engine", "to_pil"]


def batch_key(request: FrameRequest) -> tuple[int, int, int, str]:
    """Frames share a batch only when these agree: one latent shape, one schedule, one autoencoder."""
    return request.width, request.height, request.steps, request.decoder


@dataclass(eq=False)
class _Waiting:
    """One caller's frame on its way through the batcher: set once, by the batch that ran it."""

    request: FrameRequest
    control_prep_ms: float
    arrived: float = field(default_factory=time.perf_counter)
    frame: Frame | None = None
    error: BaseException | None = None
    done: bool = False  # set under the queue's condition once frame or error is

    def result(self) -> Frame:
        if self.error is not None:
            raise self.error
        return self.frame


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
    """Per-stage wall time; synchronises the GPU at stage edges so the split is honest."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.ms = dict.fromkeys(STAGES, 0.0)
        self.start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
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
    """Owns the pipeline, its device, caches and the GPU lock. Thread-safe.

    ``render`` takes a clean ``FrameRequest``; the keyword conveniences (``sketch_to_image``, ``text_to_image``,
    ``photo_to_control_map``) take raw values, build the request through ``sprint_demo.inputs`` and raise
    ``inputs.InputError`` naming a bad value. Model failures propagate as they are (the UI turns them into
    messages)."""

    def __init__(
        self,
        loaded: LoadedPipeline,
        banner: str | None = None,
        speed: SpeedOptions | None = None,
        size: int | None = None,
        max_batch_size: int = settings.MAX_BATCH_SIZE,
    ):
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.model_name = loaded.model_name
        self.is_preview = loaded.is_preview
        self.banner = banner
        self.size = size or (settings.PREVIEW_SIZE if self.is_preview else settings.DEFAULT_SIZE)
        self.controlnet_note = self._controlnet_note()
        # Binning snaps sizes to the 1024px model's trained aspect bins; the preview model has none to respect.
        self.use_resolution_binning = not self.is_preview
        self.device = self.pipe._execution_device
        self.tiny = loaded.tiny_autoencoder  # the "tiny" lane's autoencoder, or None (loaded.tiny_note says why)
        self.tiny_note = loaded.tiny_note
        self.speed = apply_speedups(self.pipe, speed or SpeedOptions(), tiny=self.tiny)
        self._lock = threading.Lock()
        self._prompts = _LRU(settings.PROMPT_CACHE_SIZE)
        self._controls = _LRU(settings.CONTROL_CACHE_SIZE)
        self._frames = _LRU(1)  # request -> (frame, its prompt notices): the frames reuse may hand out
        self.max_batch_size = max_batch_size
        self.batch_window_s = settings.BATCH_WINDOW_MS / 1000
        self.expect_full_batches = False  # True: always wait the window for a full batch (tests' deterministic mode)
        self._shared_batch_at = -float("inf")  # when the last batch of more than one frame was gathered
        self._waiting: list[_Waiting] = []  # callers whose frames no batch has taken yet, oldest first
        self._queue = threading.Condition()  # guards _waiting, _batcher and every _Waiting.done
        self._batcher: threading.Thread | None = None  # runs the batches (max_batch_size > 1) while there is work
        self._warm = False  # set by warmup(): from then on nothing compiles (see render)
        self.eager = False  # True: frames ignore torch.compile (the benchmark's check of what compiled code draws)

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {value!r}")
        self._max_batch_size = value
        self._frames.capacity = value  # the last batch's frames (1: the previous frame)

    def _controlnet_note(self) -> str | None:
        report = self.loaded.controlnet_report
        if self.pipe.controlnet is None:
            return "No ControlNet is loaded: the sketch does not steer the image (the prompt alone does)."
        if report is not None:
            return report.description
        if self.is_preview:
            return None
        return "ControlNet with random weights (benchmark model): strokes change the image but not meaningfully."

    @property
    def decoders(self) -> tuple[str, ...]:
        """The decoder lanes this engine can render: ``("full", "tiny")``, or ``("full",)`` without a tiny
        autoencoder."""
        return DECODERS if self.has_tiny_decoder else (DEFAULT_DECODER,)

    @property
    def has_tiny_decoder(self) -> bool:
        return self.tiny is not None

    def _autoencoder(self, decoder: str):
        """The autoencoder a lane's stage calls use (the control encode and the decode): the pipeline's DC-AE for
        "full", the tiny one for "tiny"."""
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
    ) -> Frame:
        """Sketch (dark strokes on light; None or blank = no control) or a ready control map -> frame at the
        engine's size. Raw values are fine: ``inputs.sketch_request`` checks them (InputError naming the value)."""
        started = time.perf_counter()
        request = inputs.sketch_request(
            sketch, prompt, steps=steps, seed=seed, guidance_scale=guidance_scale, control_strength=control_strength,
            thickness=thickness, size=(self.size, self.size), control_map=control_map, decoder=decoder,
        )
        return self.render(request, control_prep_ms=(time.perf_counter() - started) * 1000)

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

    def photo_to_control_map(self, photo: Image.Image | str | bytes, thickness: int = settings.DEFAULT_THICKNESS):
        """An uploaded photo -> HED edge map (white lines on black) at the engine's frame size."""
        photo = inputs.decode_image(photo, what="photo")
        if photo is None:
            raise inputs.InputError("photo is empty: upload an image")
        thickness = inputs.check_thickness(thickness)
        with self._lock:  # the HED net shares the GPU
            detector = conditioning.load_hed_detector().to(self.device)
            return conditioning.photo_to_control_map(photo, thickness, (self.size, self.size), detector=detector)

    def render(self, request: FrameRequest, control_prep_ms: float = 0.0) -> Frame:
        """The one way a frame is made. ``request`` is clean (``sprint_demo.inputs``); ``control_prep_ms`` is what
        building it took at the boundary (decoding the sketch, making its control map), reported as that stage.
        Thread-safe: with ``max_batch_size > 1`` concurrent callers' frames may be made in one batch
        (``Frame.batch_size``); a model fault in a batch is raised to each of its callers."""
        self._autoencoder(request.decoder)  # refuses a lane this engine does not have before waiting for the lock
        waiting = _Waiting(request, control_prep_ms)
        if self.max_batch_size == 1:
            with self._lock:
                self._run([waiting])
        else:
            self._join_batch(waiting)
        return waiting.result()

    def warmup(self) -> float:
        """Frames with and without control at the canvas size: loads kernels, fills allocator pools and runs
        compilation before the first user arrives. Compiled with CUDA graphs, every step count is warmed too: each
        one is a new path of graphs to record (seconds), which the first user to move the steps slider would
        otherwise wait for. Returns seconds taken."""
        began = time.perf_counter()
        blank = Image.new("RGB", (self.size, self.size), "black")
        step_counts = range(settings.MIN_STEPS, settings.MAX_STEPS + 1) if self.speed.cuda_graphs else [
            settings.DEFAULT_STEPS]
        for decoder, control, steps in itertools.product(
                self.decoders, (None, blank) if self.pipe.controlnet is not None else (None,), step_counts):
            self.sketch_to_image(None, "warm-up", steps=steps, seed=0, control_strength=1.0, control_map=control,
                                 decoder=decoder)
        self.clear_caches()
        self._warm = True
        return time.perf_counter() - began

    def clear_caches(self) -> None:
        """Forgets cached prompts, control latents and the last frame: the next frame does all its work."""
        with self._lock:
            self._prompts.clear()
            self._controls.clear()
            self._frames.clear()

    # --- batches -------------------------------------------------------------------------------------------

    def _join_batch(self, waiting: _Waiting) -> None:
        """Queue ``waiting`` for the batch thread and wait until a batch has made its frame (or failed)."""
        with self._queue:
            self._waiting.append(waiting)
            self._queue.notify_all()
            while not waiting.done:
                if self._batcher is None:
                    self._batcher = threading.Thread(target=self._make_batches, name="engine-batches", daemon=True)
                    self._batcher.start()
                self._queue.wait()

    def _make_batches(self) -> None:
        """The batch thread: gathers and runs batches while frames wait; ends after BATCHER_IDLE_S without any.
        One thread does all batched model work, so its allocations stay in one thread's heap arena and, compiled with
        CUDA graphs, one thread's graph trees serve every frame (torch keeps them per thread)."""
        while True:
            with self._queue:
                if not self._waiting and not self._queue.wait_for(lambda: self._waiting, timeout=BATCHER_IDLE_S):
                    self._batcher = None
                    return
                batch = self._gather()
            ending = True  # until _run returns: it raises only what ends a thread (KeyboardInterrupt, SystemExit)
            try:
                with self._lock:
                    self._run(batch)
                ending = False
            finally:
                with self._queue:
                    for member in batch:
                        member.done = True
                    if ending:
                        self._batcher = None  # a waiting caller starts another
                    self._queue.notify_all()

    def _gather(self) -> list[_Waiting]:
        """(Queue lock held.) The oldest waiting frame and those of the same ``batch_key``, up to max_batch_size,
        after waiting until the batch is full or the oldest has waited ``batch_window_s``; a lone user's frame
        (``expects_company`` False) does not wait."""
        key = batch_key(self._waiting[0].request)
        deadline = self._waiting[0].arrived + self.batch_window_s
        now = time.perf_counter()
        # A full batch, unless the engine has been serving a lone user: then nobody is coming.
        wanted = self.max_batch_size if self.expect_full_batches or self.expects_company(now) else 1

        def same() -> list[_Waiting]:
            return [w for w in self._waiting if batch_key(w.request) == key][: self.max_batch_size]

        while len(same()) < wanted and (left := deadline - time.perf_counter()) > 0:
            self._queue.wait(left)
        batch = same()
        self._waiting = [w for w in self._waiting if w not in batch]
        if len(batch) > 1:
            self._shared_batch_at = now
        return batch

    def expects_company(self, now: float) -> bool:
        """Whether a batch of more than one frame was gathered in the ``COMPANY_MEMORY_S`` before ``now``
        (``time.perf_counter()``): if not, the engine is serving a lone user and a batch does not wait."""
        return now - self._shared_batch_at <= COMPANY_MEMORY_S

    def _run(self, batch: list[_Waiting]) -> None:
        """(GPU lock held.) Gives every member its frame or the error that stopped the batch; never raises an
        Exception (a caller's thread may be the one running other callers' frames)."""
        todo: dict[FrameRequest, float] = {}  # distinct requests to make -> control prep time (equal: made once)
        for member in batch:
            cached = self._frames.get_or_none(member.request)
            if cached is not None:
                frame, prompt_notices = cached
                member.frame = replace(frame, reused=True, timings_ms=dict.fromkeys((*STAGES, "total"), 0.0),
                                       notices=member.request.notices + prompt_notices,
                                       control_map=member.request.control_map)
            else:
                todo.setdefault(member.request, member.control_prep_ms)
        if not todo:
            return
        if self.eager:
            stance = "force_eager"
        elif self._warm and self.speed.compile:
            # Once warm, a compiled engine never compiles again: a size the warm-up did not see (an aspect preset,
            # an API call) runs eagerly instead of holding the GPU lock for the minute a compile takes.
            stance = "eager_on_recompile"
        else:
            stance = "default"
        try:
            with torch.compiler.set_stance(stance):
                made = self._render(list(todo), list(todo.values()))
        except BaseException as error:
            if isinstance(error, torch.OutOfMemoryError) and self.device.type == "cuda":
                torch.cuda.empty_cache()  # hand the failed frame's blocks back so the next frame can fit
            for member in batch:
                if member.frame is None:
                    member.error = error
            if not isinstance(error, Exception):
                raise
            return
        frames = dict(zip(todo, made))
        for request, made_frame in frames.items():
            self._frames.put(request, made_frame)
        for member in batch:
            if member.frame is None:
                frame, prompt_notices = frames[member.request]
                member.frame = replace(frame, notices=member.request.notices + prompt_notices)

    # --- the frame path ------------------------------------------------------------------------------------

    def _render(self, requests: list[FrameRequest], prep_ms: list[float]) -> list[tuple[Frame, tuple[str, ...]]]:
        """Requests of one ``batch_key`` -> (frame, prompt notices) each, through the pipeline's stages with one
        row per request. One request runs exactly as a frame alone always has (numbers, not per-row tensors)."""
        pipe, first, rows = self.pipe, requests[0], len(requests)
        if self.speed.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new frame: earlier graph outputs may be reused
        watch = _Stopwatch(self.device)
        vae = self._autoencoder(first.decoder)
        with torch.inference_mode():
            with watch.stage("text_encode"):
                prompts = [self._prompt_embeddings(r.prompt) for r in requests]
            height, width = pipe.resolution(first.height, first.width, self.use_resolution_binning)
            controls: list[torch.Tensor | None] = [None] * rows
            if pipe.controlnet is not None and any(r.control_map is not None for r in requests):
                with watch.stage("control_encode"):
                    controls = [None if r.control_map is None else self._control_latents(r, height, width, vae)
                                for r in requests]
            with watch.stage("denoise"):
                generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
                control_latents, strength = _control_rows(controls, [r.control_strength for r in requests])
                guidance = first.guidance_scale if rows == 1 else torch.tensor([r.guidance_scale for r in requests])
                generator = generators[0] if rows == 1 else generators  # a list: each row draws its own noise
                latents = pipe.denoise(
                    pipe.prepare_initial_latents(rows, height, width, generator),
                    torch.cat([p[0] for p in prompts]),
                    torch.cat([p[1] for p in prompts]),
                    pipe.prepare_timesteps(first.steps),
                    guidance,
                    control_latents=control_latents,
                    controlnet_conditioning_scale=strength,
                    generator=generator,
                )
            with watch.stage("decode"):
                pixels = pipe.decode_latents(latents, first.height, first.width, output_type="pt", vae=vae)
            with watch.stage("postprocess"):
                images = [to_pil(pixels[i : i + 1]) for i in range(rows)]
        timings = watch.finish()
        return [
            (Frame(image=image, timings_ms=timings | {"control_prep": round(prep, 2),
                                                      "total": round(timings["total"] + prep, 2)},
                   control_map=request.control_map, batch_size=rows,
                   decoder=request.decoder), notices)
            for image, request, prep, (_, _, notices) in zip(images, requests, prep_ms, prompts)
        ]

    def _prompt_embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
        cached = self._prompts.get_or_none(prompt)
        if cached is None:
            notices = ()
            tokens = len(self.pipe.tokenizer(prompt).input_ids)
            if tokens > MAX_SEQUENCE_LENGTH:
                notices = (f"prompt cut to the text encoder's {MAX_SEQUENCE_LENGTH} tokens (it had {tokens})",)
            embeds, mask = self.pipe.encode_prompt(prompt, device=self.device, max_sequence_length=MAX_SEQUENCE_LENGTH,
                                                   complex_human_instruction=None)
            cached = (embeds, mask, notices)
            self._prompts.put(prompt, cached)
        return cached

    def _control_latents(self, request: FrameRequest, height: int, width: int, vae) -> torch.Tensor:
        # Each lane's encoder gives its own latents of the same map: cached apart, under the lane's name.
        cache_key = (request.control_key, height, width, request.decoder)
        latents = self._controls.get_or_none(cache_key)
        if latents is None:
            # clone: with CUDA graphs the encoder's output buffer is overwritten by its next replay
            latents = self.pipe.prepare_control_latents(request.control_map, height, width, vae=vae).clone()
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
) -> Engine:
    """Loads the pipeline (``sprint_demo.models.loading.load_pipeline``) and wraps it in an Engine.

    ``model="auto"``: the real SANA-Sprint weights (with the experimental Sana 1.0 HED ControlNet unless
    ``controlnet`` names another) when they load; otherwise the offline preview model, with a banner and a log
    line saying why. Any other model that fails to load raises ``ModelLoadError``. ``size``: the canvas's frame side
    (default: the model's own, ``Engine``). ``tiny_autoencoder`` and ``vae_lite`` as ``load_pipeline`` takes them:
    a tiny autoencoder that cannot load leaves the engine with the full lane only (``Engine.tiny_note`` says why);
    a DC-AE-Lite that cannot load raises ``ModelLoadError``."""
    lanes = dict(tiny_autoencoder=tiny_autoencoder, vae_lite=vae_lite)
    banner = None
    if model == "auto":
        try:
            loaded = load_pipeline(settings.SPRINT_MODEL_ID, None, device, dtype, **lanes)
        except ModelLoadError as error:
            reason = str(error).splitlines()[0]
            log.warning("falling back to the offline preview model: %s", reason)
            loaded = load_pipeline(settings.PREVIEW_MODEL, None, device, dtype, **lanes)
            banner = (
                "Preview mode: the SANA-Sprint weights could not be loaded here, so images come from a tiny "
                f"random model that runs on any CPU (they will not look like anything). Reason: {reason[:200]}"
            )
        else:  # real weights: a ControlNet that fails to load costs the sketch its steering, not the app
            try:
                attach_controlnet(loaded, controlnet or settings.SANA10_HED_CONTROLNET_ID)
            except ModelLoadError as error:
                log.warning("no ControlNet: %s", str(error).splitlines()[0])
    else:
        loaded = load_pipeline(model, controlnet, device, dtype, **lanes)
        if loaded.is_preview:
            banner = "Preview model: tiny random weights for trying the app anywhere; images are not meaningful."
        elif model == settings.RANDOM_FULL_MODEL:
            banner = "Benchmark model: real SANA-Sprint shapes with random weights; images are not meaningful."
    engine = Engine(loaded, banner=banner, speed=speed, size=size, max_batch_size=max_batch_size)
    if warmup:
        log.info("warm-up took %.1f s", engine.warmup())
    return engine
