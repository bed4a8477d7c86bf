"""What the page tells a user about the engine it runs on: sentences built from the engine's facts.

The engine knows what it loaded (``model_name``, ``is_preview``, ``fallback_reason``, ``has_controlnet``,
``controlnet_description``, ``tiny_note``, ``edges_fallback``); the wording lives here, once, for the page, the log
and the tools.
"""

from __future__ import annotations

from typing import Any

from .. import settings


def banner(engine: Any) -> str | None:
    """The warning at the top of the page (and in the log) when the images cannot be meaningful; None otherwise."""
    if engine.fallback_reason is not None:
        return ("Preview mode: the SANA-Sprint weights could not be loaded here, so images come from a tiny random "
                "model that runs on any CPU (they will not look like anything). "
                f"Reason: {engine.fallback_reason[:200]}")
    if engine.is_preview:
        return "Preview model: tiny random weights for trying the app anywhere; images are not meaningful."
    if engine.model_name == settings.RANDOM_FULL_MODEL:
        return "Benchmark model: real SANA-Sprint shapes with random weights; images are not meaningful."
    return None


def controlnet_note(engine: Any) -> str | None:
    """What steers the Sketch tab's image: the ControlNet that was loaded, or that none was."""
    if not engine.has_controlnet:
        return "No ControlNet is loaded: the sketch does not steer the image (the prompt alone does)."
    if engine.controlnet_description is not None:
        return engine.controlnet_description
    if engine.is_preview:
        return None
    return "ControlNet with random weights (benchmark model): strokes change the image but not meaningfully."


def decoder_info(engine: Any) -> str | None:
    """Under the decoder choice: why only the full decoder is offered, when that is so."""
    if engine.has_tiny_decoder:
        return None
    return f"Only the full decoder here: {engine.tiny_note or 'tiny is off'}."


EDGE_MAP_LABEL = "Edge map the model sees"
EDGES_REASON_CHARS = 160  # the reason Canny stands in, cut to this many characters in notices


def edges_note(engine: Any) -> str | None:
    """For the readout of a frame that a photo's (or a camera frame's) edges steer, and the photo's edge map: the
    classical Canny detector made the map instead of HED, with a model other than the preview; None otherwise."""
    if engine.edges_fallback is None:
        return None
    reason = engine.edges_fallback
    return (f"photo edges by the classical Canny detector, not HED ({reason[:EDGES_REASON_CHARS]}): the ControlNet "
            "was trained on HED scribbles, so the photo steers it less faithfully")


def edge_map_label(note: str | None) -> str:
    """The label of the Sketch tab's photo edge map: what it is, and ``edges_note`` when there is one."""
    return EDGE_MAP_LABEL if note is None else f"{EDGE_MAP_LABEL} ⚠️ {note}"
