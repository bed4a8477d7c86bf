"""What goes into the engine and what comes out: ``FrameRequest`` and ``Frame``.

A ``FrameRequest`` is built and validated once, at the boundary (``sprint_demo.inputs.sketch_request`` /
``text_request`` / ``image_request``); everything after that takes its fields as they are. Two requests that
compare equal give the same pixels, which is what the engine's frame reuse, its batches and its caches rely on: the
control map and the start picture themselves are left out of the comparison and stand in through their digests
(``control_key``, ``init_key``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

# "full": the pipeline's DC-AE decodes (and encodes an image-to-image picture); "tiny": the tiny autoencoder does
# (sprint_demo.models.tiny_autoencoder): much faster, less fine detail. A control map is the DC-AE's to encode in both.
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
    decoder: str = DEFAULT_DECODER  # one of DECODERS
    # image-to-image: the picture to start from, exactly width x height (None: start from noise)
    init_image: Image.Image | None = field(default=None, compare=False, repr=False)
    init_key: str | None = None  # digest of init_image; None for no start picture
    strength: float = 1.0  # how far the start picture is taken towards noise, (0, 1); 1.0 without one
    notices: tuple[str, ...] = field(default=(), compare=False)  # for the user, e.g. "prompt cut to ..."


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
