"""Every sentence the page, the API and the log say to a user, built from facts: the engine's (``FrameSource``'s
properties), a frame's (``Frame``), an error's type and the settings.

The layers below give facts and typed errors (an ``InputError``'s own message names the bad value, and stays as it
is); the wording lives here, once. The labels of the page's controls stay beside them in ``web.ui``.
"""

from __future__ import annotations

from .. import settings
from ..frames import EngineBusy, Frame, FrameSource
from ..inputs import InputError

# --- The engine ------------------------------------------------------------------------------------------------


def banner(engine: FrameSource) -> str | None:
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


def controlnet_note(engine: FrameSource) -> str | None:
    """What steers the Sketch tab's image: the ControlNet that was loaded, or that none was."""
    if not engine.has_controlnet:
        return "No ControlNet is loaded: the sketch does not steer the image (the prompt alone does)."
    if engine.controlnet_description is not None:
        return engine.controlnet_description
    if engine.is_preview:
        return None
    return "ControlNet with random weights (benchmark model): strokes change the image but not meaningfully."


def decoder_info(engine: FrameSource) -> str | None:
    """Under the decoder choice: why only the full decoder is offered, when that is so."""
    if engine.has_tiny_decoder:
        return None
    return f"Only the full decoder here: {engine.tiny_note or 'tiny is off'}."


EDGE_MAP_LABEL = "Edge map the model sees"
EDGES_REASON_CHARS = 160  # the reason Canny stands in, cut to this many characters in notices


def edges_note(engine: FrameSource) -> str | None:
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


def style_info(engine: FrameSource) -> str:
    """The Style menu's note: what the presets do, and the LoRAs loaded, with the caveat that goes with them."""
    loras = engine.styles[len(settings.STYLE_PRESETS):]
    text = "presets add words to your prompt ('none': the prompt as typed)"
    if loras:
        text += (f"; LoRA styles: {', '.join(loras)} (a LoRA made for another Sana model may not carry over to "
                 "Sprint: results depend on the adapter)")
    return text


STYLE_SCALE_INFO = "how strongly a LoRA style applies (0: not at all, 1: as trained); presets ignore it"


def startup_line(engine: FrameSource) -> str:
    """The log's line about what the app serves."""
    return (f"model {engine.model_name} on {engine.device}, frame size {engine.size}, batches of up to "
            f"{engine.max_batch_size}, speed-ups: {engine.speed.describe()}, decoders: {', '.join(engine.decoders)}, "
            f"styles: {', '.join(engine.styles)}")


# --- A frame ---------------------------------------------------------------------------------------------------
# stages that run only for some frames: listed in a readout only for those
CONTROL_STAGES = ("control_encode",)  # a frame with a control map
PICTURE_STAGES = ("image_encode",)  # an image-to-image frame

PHOTO_EDGES_NOTE = "using the uploaded photo's edge map; clear the photo to draw again"
PHOTO_RESTYLE_NOTE = "restyling the uploaded photo (its edges steer); clear the photo to draw again"


def readout(frame: Frame, notes: tuple[str, ...] = (), markdown: bool = False) -> str:
    """A frame's readout: total, then the per-stage split (the stages the frame ran), then reuse, the frame's notices
    and ``notes``; Markdown (the API's latency text) or plain lines (the canvas tabs' and the camera's)."""
    timings = frame.timings_ms
    total = f"{timings.get('total', 0.0):.0f} ms"
    head = f"{f'**{total}**' if markdown else total} total · decoder: {frame.decoder}"
    if frame.strength < 1:
        head += f" · strength {frame.strength:g}"
    if frame.skipped:  # no stages ran: the split would be all zeros
        lines = [f"{total} total · {CAMERA_UNCHANGED}", *(f"ℹ️ {note}" for note in notes)]
        return ("  \n" if markdown else "\n").join(lines)
    if frame.reused:
        head += " (same inputs as a recent frame: reused, no model work)"
    elif frame.batch_size > 1:
        head += f" (batch of {frame.batch_size}: made together with frames of other users)"
    skipped = (() if frame.control_map is not None else CONTROL_STAGES) + (
        () if frame.strength < 1 else PICTURE_STAGES)
    stages = [s for s in settings.FRAME_STAGES if s in timings and s not in skipped]
    split = " · ".join(f"{stage} {timings[stage]:.1f}" for stage in stages)
    lines = [head, f"{split} (ms)" if split else ""]
    lines += [f"ℹ️ {notice}" for notice in (*frame.notices, *notes)]
    return ("  \n" if markdown else "\n").join(line for line in lines if line)


# --- What went wrong -------------------------------------------------------------------------------------------
BUSY = "The server is busy with other visitors' frames; try again in a moment."
FAULT_CHARS = 200  # a fault's own message, cut to this many characters


def error_text(error: Exception) -> str:
    """What went wrong with a frame, for the user: a bad value as its check words it, the server too busy, or a
    fault of the model or the server by its type (the server keeps serving)."""
    if isinstance(error, InputError):
        return str(error)
    if isinstance(error, EngineBusy):
        return BUSY
    if type(error).__name__ == "OutOfMemoryError":
        return ("The GPU ran out of memory on this frame; try fewer steps or a smaller size. "
                "The server is still running.")
    return f"The model failed on this frame ({type(error).__name__}: {str(error)[:FAULT_CHARS]}). Try again."


def request_shape(kind: str, shape: str) -> str:
    """A server function's request that is not what its contract says: what it should be."""
    return f"a {kind} is {shape}"


def camera_expired() -> str:
    """Why the camera stream stopped by itself."""
    return (f"The camera stream stops after {settings.CAMERA_SESSION_S:.0f} s so that other visitors get their turn "
            "on the GPU.")


# --- Notes on the page that follow from the settings -----------------------------------------------------------
CANVAS_STEPS_INFO = f"for the frame when the pen lifts; drafts while drawing run {settings.DRAFT_STEPS}"
CAMERA_UNCHANGED = "picture unchanged: the last frame again, no model work"
CAMERA_STEADINESS_INFO = ("image mode: how much of the previous frame each new one starts from; more holds the "
                          "picture stiller and follows motion later (0: off)")
CAMERA_STEPS_INFO = f"for each camera frame; a snapshot runs at least {settings.DEFAULT_STEPS}"
CAMERA_INTRO = ("Point your camera: every frame is redrawn by the model, the newest one only (nothing queues "
                "behind). Browsers allow the camera only over HTTPS or on localhost. A stream stops after "
                f"{settings.CAMERA_SESSION_S / 60:g} min so that other visitors get their turn: press Start again.")
CAMERA_ON_ZERO_GPU = ("The camera needs a GPU of its own: on this ZeroGPU Space, where a GPU is lent per request, "
                      "a stream of frames would spend a visitor's daily GPU quota in minutes. Run the app on a "
                      "dedicated GPU (or locally) for the live camera; Sketch, Paint and Playground work here.")
