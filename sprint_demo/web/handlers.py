"""What the app's handlers share: the one path to the engine, and the two ways a failure becomes an answer.

The handlers are split by the surface they serve, each a small class around one ``FrameMaker``:

* ``web.canvas_handlers.CanvasHandlers``: the Sketch and Paint canvases: their server functions ``draft_frame`` /
  ``final_frame`` (one HTTP POST answered with the frame, no queue), and the frames the queue makes for them (page
  load, a final the server function could not make, the Sketch tab's photo);
* ``web.camera_handlers.CameraHandlers``: the camera's server functions ``camera_frame`` / ``camera_stop`` /
  ``camera_snapshot``;
* ``web.api_handlers.ApiHandlers``: the named endpoints ``/sketch_to_image``, ``/text_to_image`` (the Playground's
  too), ``/image_to_image`` and ``/engine_stats``.

Each turns the raw values it gets into a ``FrameRequest`` with one call into ``sprint_demo.inputs`` (the checks and
their messages live there), renders it through ``FrameMaker.render`` with the caller's session and priority, and
turns the frame into what the page or the API shows. What goes wrong becomes a server function's answer
(``server_answer``: a server function never raises, Gradio would turn that into a silent ``undefined`` in the page)
or a queue event's ``gr.Error`` (``queue_error``); the user reads ``messages.error_text`` either way, and the server
keeps serving.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
from PIL import Image

from .. import settings
from ..frames import EngineBusy, Frame, FrameRequest, FrameSource, Priority, Superseded
from ..inputs import InputError
from . import messages
from .live import encode_jpeg, frame_value

log = logging.getLogger(__name__)

SESSION_CHARS = 64  # a page's tab or stream id, cut to this many characters


def encode_frame(image: Image.Image) -> bytes:
    """A frame -> the JPEG bytes the app serves for final frames (deterministic for identical pixels)."""
    return encode_jpeg(image, settings.JPEG_QUALITY)


def on_gpu(fn: Callable) -> Callable:
    """On ZeroGPU, ask for a GPU for the duration of ``fn``; everywhere else ``fn`` unchanged."""
    if not settings.ZERO_GPU:
        return fn
    import spaces  # preinstalled on Spaces; never needed elsewhere

    return spaces.GPU(duration=settings.ZERO_GPU_DURATION_S)(fn)


# --- What went wrong, as an answer ---------------------------------------------------------------------------------


def _told(error: Exception) -> str:
    """``messages.error_text``; a fault of the model or the server (not a bad value, not a full server) is logged
    whole."""
    if not isinstance(error, (InputError, EngineBusy)):
        log.error("frame failed", exc_info=error)
    return messages.error_text(error)


def server_answer(error: Exception, **fields: Any) -> dict:
    """What a server function answers instead of a frame (``fields``: e.g. the request's ``seq``): ``dropped`` when
    a newer frame of the session took this one's place, ``busy`` when too many sessions wait, else ``error``."""
    if isinstance(error, Superseded):
        return {**fields, "dropped": True}
    if isinstance(error, EngineBusy):
        return {**fields, "busy": True}
    return {**fields, "error": _told(error)}


def queue_error(error: Exception) -> gr.Error:
    """What a queue event or an API call raises instead of a frame."""
    return gr.Error(_told(error), print_exception=False)


@contextmanager
def request_shape(kind: str, shape: str) -> Iterator[None]:
    """Inside, a request that lacks a field or holds one of the wrong type raises ``InputError`` saying what the
    ``kind`` of request should be (``shape``); a bad value keeps its own ``InputError``."""
    try:
        yield
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError(messages.request_shape(kind, shape)) from None


def request_seq(request: object) -> int | None:
    """The request number an answer echoes: the request's ``seq`` when it is an integer."""
    seq = request.get("seq") if isinstance(request, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


# The style inputs every tab sends with its own (by the names ``inputs``' request functions take them); a request
# without them takes the defaults (no style).
STYLE_INPUTS = ("style", "style_scale")


def named_values(request: dict, names: tuple[str, ...], optional: tuple[str, ...] = STYLE_INPUTS) -> dict[str, Any]:
    """A page request's ``inputs``: an object keyed by exactly ``names``, and any of ``optional`` (TypeError
    otherwise)."""
    values = request["inputs"]
    if not isinstance(values, dict) or not set(names) <= set(values) <= {*names, *optional}:
        raise TypeError(f"inputs must be an object with exactly {', '.join(names)}"
                        + (f" (and optionally {', '.join(optional)})" if optional else ""))
    return values


# --- The engine, as the handlers use it ----------------------------------------------------------------------------


class FrameMaker:
    """One engine (``FrameSource``) for every surface's handlers: frames and edge maps, on a GPU lent for the call
    on ZeroGPU, and a frame as the page's ``LiveImage`` shows it."""

    def __init__(self, engine: FrameSource):
        self.engine = engine
        self.size = engine.size
        self._nonces = itertools.count(1)
        # looked up at each call, so that the engine's methods may be swapped (tests inject faults)
        self._render = on_gpu(lambda *args, **kwargs: self.engine.render(*args, **kwargs))
        self._edges = on_gpu(lambda *args, **kwargs: self.engine.photo_to_control_map(*args, **kwargs))

    def render(self, build: Callable[[], FrameRequest], *, session: str | None = None,
               priority: Priority = Priority.FINAL, refusable: bool = False) -> Frame:
        """The frame of the request ``build()`` makes (an ``inputs`` function; its time is the frame's prep stage).
        ``refusable``: the engine may answer ``EngineBusy`` (callers outside Gradio's queue, which bounds its own)."""
        began = time.perf_counter()
        request = build()
        return self._render(request, prep_ms=(time.perf_counter() - began) * 1000, session=session,
                            priority=priority, refusable=refusable)

    def edge_map(self, photo: Image.Image, thickness: object, size: tuple[int, int] | None = None) -> Image.Image:
        """``FrameSource.photo_to_control_map``: a photo's edge map, made on the model thread."""
        return self._edges(photo, thickness, size)

    def edges_notes(self) -> tuple[str, ...]:
        """The notes of a frame a photo's or a camera frame's edges steer (``messages.edges_note``)."""
        note = messages.edges_note(self.engine)
        return () if note is None else (note,)

    def live_value(self, frame: Frame, digest: str | None, seq: int | None, readout: str,
                   quality: int = settings.JPEG_QUALITY) -> dict:
        """``frame`` as a canvas tab's ``LiveImage`` value (``live.frame_value``), a JPEG at ``quality``."""
        return frame_value(encode_jpeg(frame.image, quality), digest, seq, next(self._nonces), readout)
