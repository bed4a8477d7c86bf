"""The frame engine: one object per process that owns the loaded pipeline and turns inputs into frames.

(Interface first; the implementation lands next.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from . import settings


@dataclass
class Frame:
    """One generated image and how it was made."""

    image: Image.Image
    timings_ms: dict[str, float]  # text_encode, control_prep, control_encode, denoise, decode, postprocess, total
    notices: tuple[str, ...] = ()  # things the user should know, e.g. "prompt truncated to 300 tokens"
    reused: bool = False  # True when the inputs equalled the previous frame's and no work was done
    control_map: Image.Image | None = None  # the HED-style map the ControlNet saw (white lines on black)


class Engine:
    """Owns the pipeline, its device, caches and the GPU lock.

    Attributes: ``size`` (default square frame side), ``model_name``, ``is_preview``, ``banner`` (text the UI
    shows above everything, or None), ``controlnet_note`` (e.g. "experimental: Sana 1.0 HED ControlNet").
    All methods validate their arguments and raise ``sprint_demo.inputs.InputError`` (a ValueError) naming the
    bad value; they are thread-safe.
    """

    def sketch_to_image(
        self,
        sketch: Image.Image | None,
        prompt: str,
        steps: int = settings.DEFAULT_STEPS,
        seed: int = settings.DEFAULT_SEED,
        guidance_scale: float = settings.DEFAULT_GUIDANCE,
        control_strength: float = settings.DEFAULT_CONTROL_STRENGTH,
        thickness: int = settings.DEFAULT_THICKNESS,
        control_map: Image.Image | None = None,
    ) -> Frame:
        """Sketch (dark strokes on light; None or blank = no control) or a ready control map -> frame."""
        raise NotImplementedError

    def photo_to_control_map(self, photo: Image.Image, thickness: int = settings.DEFAULT_THICKNESS) -> Image.Image:
        """An uploaded photo -> HED edge map (white lines on black), computed once per upload."""
        raise NotImplementedError

    def text_to_image(
        self,
        prompt: str,
        steps: int = settings.DEFAULT_STEPS,
        seed: int = settings.DEFAULT_SEED,
        guidance_scale: float = settings.DEFAULT_GUIDANCE,
        width: int = settings.DEFAULT_SIZE,
        height: int = settings.DEFAULT_SIZE,
    ) -> Frame:
        raise NotImplementedError


def load_engine(model: str = settings.MODEL, controlnet: str | None = settings.CONTROLNET, device: str | None = None,
                dtype: str | None = None, warmup: bool = True) -> Engine:
    """Load the pipeline (see ``sprint_demo.models.load_pipeline``) and wrap it in an Engine."""
    raise NotImplementedError
