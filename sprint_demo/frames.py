"""What goes into the engine and what comes out (``FrameRequest``, ``Frame``), and what the web layer may use of
an engine (``FrameSource``).

A ``FrameRequest`` is built and validated once, at the boundary (``sprint_demo.inputs.sketch_request`` /
``text_request`` / ``image_request``); everything after that takes its fields as they are. Two requests that
compare equal give the same pixels, which is what the engine's frame reuse, its batches and its caches rely on: the
control map and the start picture themselves are left out of the comparison and stand in through their digests
(``control_key``, ``init_key``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from . import settings
from .batcher import EngineBusy, Priority, Superseded
from .models.speedups import SpeedOptions

# The autoencoder lanes, named for what a user sees, the decoder; the lane's encoder also encodes an image-to-image
# start picture. "full": the pipeline's DC-AE; "tiny": the tiny autoencoder (sprint_demo.models.tiny_autoencoder),
# much faster, less fine detail. A control map is the DC-AE's to encode in both lanes.
DECODERS = ("full", "tiny")
DEFAULT_DECODER = "full"


@dataclass(frozen=True)
class FrameRequest:
    """Everything that determines a frame's pixels, already clean: equal requests give equal frames."""

    prompt: str  # cleaned (inputs.clean_prompt), safety-checked
    steps: int
    seed: int
    guidance_scale: float
    width: int
    height: int
    control_map: Image.Image | None = field(default=None, compare=False, repr=False)  # white lines on black
    control_key: str | None = None  # digest of control_map; None for no control
    control_strength: float = 0.0  # 0.0 whenever there is no control map
    decoder: str = DEFAULT_DECODER  # the autoencoder lane, one of DECODERS: decodes the frame, encodes init_image
    # image-to-image: the picture to start from, exactly width x height (None: start from noise)
    init_image: Image.Image | None = field(default=None, compare=False, repr=False)
    init_key: str | None = None  # digest of init_image; None for no start picture
    strength: float = 1.0  # how far the start picture is taken towards noise, (0, 1); 1.0 without one
    notices: tuple[str, ...] = field(default=(), compare=False)  # for the user, e.g. "prompt cut to ..."
    # a style: a preset applied to the prompt (renderer.styled_prompt), or a loaded LoRA adapter at style_scale
    style: str = settings.DEFAULT_STYLE
    style_scale: float = settings.DEFAULT_STYLE_SCALE  # the adapter's LoRA scale; DEFAULT_STYLE_SCALE for presets
    # prompt and seed travel (text-to-image): 0 the prompt / seed exactly, 1 prompt_b / seed_b exactly
    prompt_b: str | None = None  # None: no prompt travel (blend 0.0)
    blend: float = 0.0
    seed_b: int | None = None  # None: no seed travel (seed_blend 0.0)
    seed_blend: float = 0.0
    # Steadiness (image-to-image): the share of the previous output frame's latent blended into the start picture's
    # latent, 0 (off) to settings.MAX_STEADINESS; the engine fills in the session's previous frame
    # (previous_image, and its digest previous_key: None until the session has one).
    steadiness: float = 0.0
    previous_image: Image.Image | None = field(default=None, compare=False, repr=False)
    previous_key: str | None = None
    # The input picture as a grey thumbnail (steady.thumbnail): present, the engine may answer with the session's
    # last made frame when the picture is alike and every other field equal (steady.UnchangedInputs). None: never.
    thumbnail: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class Frame:
    """One generated image and how it was made."""

    image: Image.Image
    timings_ms: dict[str, float]  # every name in settings.FRAME_STAGES, and "total"
    notices: tuple[str, ...] = ()  # things the user should know, e.g. "prompt cut to 300 tokens"
    reused: bool = False  # True when the inputs equalled a recent frame's and no work was done
    control_map: Image.Image | None = None  # the map the ControlNet saw (white lines on black), if any
    decoder: str = DEFAULT_DECODER  # the autoencoder lane that made it (FrameRequest.decoder)
    batch_size: int = 1  # rows of the forward pass that made it (frames of other users made at the same time)
    strength: float = 1.0  # image-to-image strength it was made at (FrameRequest.strength; 1.0: from noise)
    skipped: bool = False  # True: the input picture had not changed, this is the session's last made frame again


@runtime_checkable
class FrameSource(Protocol):
    """What the web layer may use of an engine: ``sprint_demo.engine.Engine`` (one process) and
    ``sprint_demo.tools.serve_ray.RayEngine`` (replicas on Ray Serve) both implement it with these exact types
    (tests/test_frame_source.py checks their signatures and annotations against this class).

    Facts for the page (``web/messages.py`` words them) are read-only properties; frames come from ``render``.
    """

    @property
    def size(self) -> int:
        """The canvas's frame side in pixels (a square), the long side of a photo's or painting's frame."""

    @property
    def model_name(self) -> str:
        """What was loaded: a hub id, a folder, or one of the built-in names (``settings.PREVIEW_MODEL``...)."""

    @property
    def is_preview(self) -> bool:
        """True for the tiny preview model built in code (random weights: pictures mean nothing)."""

    @property
    def fallback_reason(self) -> str | None:
        """Why ``--model auto`` fell back to the preview model (None: it did not)."""

    @property
    def has_controlnet(self) -> bool:
        """Whether sketches steer frames (a ControlNet is loaded)."""

    @property
    def controlnet_description(self) -> str | None:
        """What the loaded ControlNet checkpoint is (None when it was built in code, or there is none)."""

    @property
    def decoders(self) -> tuple[str, ...]:
        """The autoencoder lanes frames may ask for (``FrameRequest.decoder``): ``DECODERS`` or ``("full",)``."""

    @property
    def has_tiny_decoder(self) -> bool:
        """Whether "tiny" is among ``decoders``."""

    @property
    def tiny_note(self) -> str | None:
        """Why there is no tiny lane (None when there is one, or it was switched off without a reason to give)."""

    @property
    def edges_fallback(self) -> str | None:
        """Why photos' edge maps come from the classical detector instead of HED (None: HED makes them)."""

    @property
    def speed(self) -> SpeedOptions:
        """The speed-ups in effect (``SpeedOptions.describe()`` says them in words)."""

    @property
    def device(self) -> str:
        """Where frames are made, as torch names it ("cpu", "cuda:0"; with replicas, as each replica sees it)."""

    @property
    def max_batch_size(self) -> int:
        """Frames of different sessions made in one forward pass at most (per replica)."""

    @property
    def styles(self) -> tuple[str, ...]:
        """The names ``FrameRequest.style`` may take: the prompt presets, then the LoRA adapters loaded at start."""

    @property
    def batch_sizes(self) -> Counter[int]:
        """Rows -> how many batches of that many rows were made since the warm-up (all replicas together)."""

    @property
    def frame_counts(self) -> Counter[str]:
        """Frames answered since the warm-up (all replicas together): "made" by the model, "reused" (equal to a
        recent frame's request) and "skipped" (an unchanged picture answered with the session's last frame)."""

    def render(self, request: FrameRequest, prep_ms: float = 0.0, session: str | None = None,
               priority: Priority = Priority.FINAL, refusable: bool = True) -> Frame:
        """The frame of a clean ``request`` (``sprint_demo.inputs`` builds it). ``prep_ms``: what building it took
        (reported as a stage). ``session`` and ``priority`` order the work: a newer frame of the same session
        replaces this one while it waits (``Superseded``). ``refusable``: the engine may refuse the frame when too
        many sessions wait already (``EngineBusy``); False for callers that something else bounds (Gradio's queue).
        Bad values raise ``inputs.InputError``; a model fault propagates as it is."""

    def cancel(self, session: str) -> None:
        """``session`` has gone (a stopped camera): its waiting frame is dropped and its frame in flight stopped."""

    def photo_to_control_map(self, photo: Image.Image, thickness: int = settings.DEFAULT_THICKNESS,
                             size: tuple[int, int] | None = None) -> Image.Image:
        """A photo -> its edge map (white lines on black) of ``size`` (width, height; default the photo's frame at
        the engine's ``size``), made on the model thread. A bad thickness or size raises ``inputs.InputError``."""

    def close(self) -> None:
        """No frames after this; callers still waiting get an error."""


__all__ = ["DECODERS", "DEFAULT_DECODER", "EngineBusy", "Frame", "FrameRequest", "FrameSource", "Priority",
           "Superseded"]
