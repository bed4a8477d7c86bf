"""A live camera for Gradio: a ``gr.HTML`` subclass around ``getUserMedia``, talking to the server through its
server functions (one HTTP POST per frame, no queue).

Why not ``gr.Image(sources=["webcam"], streaming=True).stream(...)``: its frames back up behind Gradio's queue,
arriving late and for seconds after Stop (docs/PERFORMANCE.md, "Camera"); fastrtc does not support Gradio 6. Here
the page keeps only the newest frame alive, and the server drops what is stale (``web.camera_handlers``).

The page (camera.js, with the frame client it shares with the canvas, frame_client.js) captures the newest video
frame into an off-screen canvas with the video's aspect ratio (longer side ``capture_size``, both sides rounded to
the nearest multiple of ``settings.SIZE_MULTIPLE``, at least one multiple), mirrored when the switch is on, encodes
it as JPEG and sends it to the server function ``camera_frame``. At most ``settings.CAMERA_MAX_IN_FLIGHT`` (two)
requests are outstanding per page: one being made, one waiting, which the server replaces with a newer frame of
the same session (answering the older one ``dropped``). The next frame is captured only when fewer than two are
outstanding, so nothing queues behind. Every number the page uses comes from ``sprint_demo.settings`` as a prop.

Server-function contract (``server_functions``, all take one dict and return one dict, and must never raise:
Gradio turns an exception into a silent ``undefined`` in the page):

``camera_frame(request)``
    request ``{image: "data:image/jpeg;base64,...", inputs: {name: value, ...}, seq: int, session: str,
    captured_at: float}``: ``inputs`` is whatever the app put in with ``setInputs`` (keyed by parameter name),
    ``seq`` grows by one per frame for the page's life (never reset by Stop/Start), ``session`` is a random id per
    page, ``captured_at`` is the page's ``performance.now()`` at capture (echo it back; the page measures ages).
    Answers, one of:

    * ``{src: JPEG data URL, seq, captured_at, server_ms: float, readout: str}`` -- the frame;
    * ``{seq, dropped: true}`` -- a newer frame of this session took this one's place, or the session stopped;
      the page sends its next frame ``replace_interval_ms`` later (the server is busy with other frames);
    * ``{seq, busy: true}`` -- the server is full: the page retries after a back-off that grows with each busy
      answer in a row (``settings.CAMERA_BUSY_BACKOFF_MS``);
    * ``{seq, expired: true, error: str}`` -- the session's time limit passed: the page stops and shows ``error``
      with "Press Start again";
    * ``{seq, error: str}`` -- shown in the status line; the page keeps streaming unless ``max_errors`` come in a
      row.

``camera_stop(request)``
    request ``{session, seq}``: the user pressed Stop, or the page stopped by itself (the camera's track ended, its
    Gradio tab was left -- Gradio keeps a left tab's components in the page, hidden, and the video would keep
    streaming --, the page was hidden, a time limit or ``max_errors`` errors in a row). ``seq`` is the newest frame
    the page sent: the server drops the session's waiting frame and answers ``dropped`` to any frame of the session
    with a sequence number up to ``seq`` that reaches it later (two POSTs may overtake each other). The frame being
    made may be stopped (the app's engine stops it at its next layer unless other frames share its batch or the
    engine is compiled); the page does not show it either way. A later Start may start the session's time limit
    afresh. Answer: anything (ignored).

``camera_snapshot(request)`` (optional: without it the Snapshot button is hidden)
    request ``{image, inputs, session, captured_at}``: the camera frame now (JPEG quality
    ``settings.CAMERA_SNAPSHOT_JPEG_QUALITY``), or once stopped
    the camera frame behind the image on screen; the server makes it at full quality. Answers ``{src, readout?}``
    | ``{busy: true}`` | ``{error: str}``. The page shows it with a download link and sets it as the
    component's value (``change`` fires).

The output is part of the component: ``<img id=output_id>`` (each frame's JPEG data URL) and the latency line
``<div id=latency_id>``. The image carries ``data-seq``, ``data-captured-at``, ``data-shown-at`` (the page's
``performance.now()`` clock) and ``data-shown`` (frames shown so far), and dispatches a ``camera-frame`` event
(bubbling; ``detail``: ``{seq, captured_at, shown_at, server_ms, round_trip_ms}``) for each frame it shows.

Inputs: ``element.querySelector('.cam-root').setInputs(obj)`` sets the object sent with each frame from the next
captured frame on (the app mirrors its prompt and settings into it with a client-side ``js=`` event).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import gradio as gr

from .. import settings
from .page_files import component_script, page_file

_HTML = """
<div class="cam-root">
  <div class="cam-panes">
    <div class="cam-pane">
      <div class="cam-view"><video class="cam-video" muted playsinline autoplay
                                   aria-label="Camera preview"></video></div>
      <div class="cam-controls">
        <button type="button" class="cam-start">Start</button>
        <button type="button" class="cam-stop" disabled>Stop</button>
        <label class="cam-mirror-label" title="Flip the picture left to right, like a mirror">
          <input type="checkbox" class="cam-mirror" checked> Mirror</label>
        <select class="cam-facing" aria-label="Camera" hidden>
          <option value="user" selected>Front camera</option>
          <option value="environment">Back camera</option>
        </select>
        <button type="button" class="cam-snap" disabled
                title="Keep the current frame, made at full quality">Snapshot</button>
      </div>
      <div class="cam-status" role="status" aria-live="polite">Camera off: press Start.</div>
      <div class="cam-note">Frames are sent to the server only to make the image and are not stored.</div>
    </div>
    <div class="cam-pane">
      <div class="cam-out"><img id="${output_id}" class="cam-output" alt="Image made from the camera"></div>
      <div id="${latency_id}" class="cam-latency" aria-live="off"></div>
      <div class="cam-readout"></div>
      <div class="cam-snapshot" hidden>
        <img class="cam-snap-img" alt="Snapshot">
        <a class="cam-snap-save" download="sana-sprint-camera.jpg">Download snapshot</a>
      </div>
    </div>
  </div>
</div>
"""

_CSS = page_file("camera.css")
_JS = component_script("props.js", "frame_client.js", "camera.js")

# The ids land in the HTML template unescaped: only plain ids are accepted.
_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
SERVER_FUNCTIONS = ("camera_frame", "camera_stop", "camera_snapshot")
MAX_CAPTURE_SIZE = 4096  # capture_size's upper bound: 4096 x 4096 pixels is as large as iOS Safari draws a canvas


class CameraStream(gr.HTML):
    """The camera, its controls and the image made from it (see the module docstring for the contract).

    ``capture_size``: the longer side of the frames sent (the model's side, e.g. 512). ``output_id`` /
    ``latency_id``: the ids of the output ``<img>`` and the latency line (unique in the page). ``server_functions``:
    ``camera_frame`` and ``camera_stop``, optionally ``camera_snapshot`` (plain functions, named so: Gradio calls
    them by ``__name__``). ``jpeg_quality``: of the frames sent (0-1). ``max_errors``: errors in a row that stop
    the stream. ``replace_interval_ms``: after a frame of the page was replaced on the server by its own newer one,
    how long the page waits before the next. The page's other numbers come from ``sprint_demo.settings`` as props
    (``SIZE_MULTIPLE``, ``CAMERA_*``). Value: the last snapshot's JPEG data URL ('' before the first); ``change``
    fires for each.
    """

    def __init__(self, value: str | None = None, *, capture_size: int, output_id: str, latency_id: str,
                 server_functions: list[Callable[[dict], dict]],
                 jpeg_quality: float = settings.CAMERA_SEND_JPEG_QUALITY, max_errors: int = settings.CAMERA_MAX_ERRORS,
                 replace_interval_ms: int = settings.CAMERA_REPLACE_INTERVAL_MS, **kwargs: Any):
        for name, given in (("output_id", output_id), ("latency_id", latency_id)):
            if not _ID.fullmatch(given):
                raise ValueError(f"{name} must be a plain HTML id (letters, digits, _ and -), got {given!r}")
        names = [getattr(fn, "__name__", "") for fn in server_functions]
        unknown = sorted(set(names) - set(SERVER_FUNCTIONS))
        missing = [name for name in SERVER_FUNCTIONS[:2] if name not in names]
        if unknown or missing:
            raise ValueError(f"CameraStream needs server functions named camera_frame and camera_stop (and "
                             f"optionally camera_snapshot); missing {missing}, unknown {unknown}")
        if not settings.SIZE_MULTIPLE <= int(capture_size) <= MAX_CAPTURE_SIZE:
            raise ValueError(f"capture_size must be between {settings.SIZE_MULTIPLE} and {MAX_CAPTURE_SIZE}, got "
                             f"{capture_size}")
        super().__init__(
            value=value or "",
            html_template=_HTML,
            css_template=_CSS,
            js_on_load=_JS,
            apply_default_css=False,
            server_functions=server_functions,
            capture_size=int(capture_size),
            size_multiple=settings.SIZE_MULTIPLE,
            output_id=output_id,
            latency_id=latency_id,
            jpeg_quality=float(jpeg_quality),
            snapshot_jpeg_quality=settings.CAMERA_SNAPSHOT_JPEG_QUALITY,
            max_errors=int(max_errors),
            max_in_flight=settings.CAMERA_MAX_IN_FLIGHT,
            error_backoff_ms=settings.CAMERA_ERROR_BACKOFF_MS,
            busy_backoff_ms=list(settings.CAMERA_BUSY_BACKOFF_MS),
            replace_interval_ms=int(replace_interval_ms),
            **kwargs,
        )

    def preprocess(self, payload: Any) -> Any:
        return payload

    def postprocess(self, value: Any) -> Any:
        return value

    def api_info(self) -> dict[str, Any]:
        return {"type": "string", "description": "JPEG data URL (data:image/jpeg;base64,...) of the last snapshot "
                                                 "made from the camera; empty string = none yet"}

    def example_payload(self) -> Any:
        return ""

    def example_value(self) -> Any:
        return ""
