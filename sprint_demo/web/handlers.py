"""The app's frame functions: what the page and the API ask the engine for, and what they get back.

``web.ui`` lays the page out and wires its events to a ``Handlers`` instance. Each function here decodes its
inputs once, builds one ``FrameRequest`` (``sprint_demo.inputs``: the checks and their messages live there), calls
``Engine.render`` with the caller's session and priority, and turns the frame, or what went wrong, into what the
page shows: ``gr.Error`` naming a bad value or the model fault, never a dead server.

Two ways in:

* the canvas's **server functions** ``draft_frame`` / ``final_frame`` (one HTTP POST answered with the frame, no
  queue): ``{png, inputs: {name: value for name in SKETCH_INPUTS}, seq, tab}`` (and ``decoder`` for a final) ->
  ``live.frame_value`` (``{src, digest, seq, nonce, readout}``), or ``{seq, dropped: true}`` when a newer frame
  of the tab took its place, ``{seq, busy: true}`` when too many tabs wait, ``{seq, error}``. The tab is the
  engine session: one frame waiting per tab, the newest; drafts at draft priority and ``settings.DRAFT_STEPS``
  steps, finals before them at the tab's steps, a final stopping the tab's draft in flight;
* **queue events** (Gradio's queue, ``trigger_mode="always_last"``): page load, a photo, a final the canvas could
  not get from its server function, the Playground, and the named API endpoints.

The Paint tab's canvas takes the same two ways in (``canvas_functions("paint")``, ``paint_final``) with its own
inputs (``PAINT_INPUTS``): its painting is redrawn by image-to-image (``paint_frame``). The Sketch tab's photo can
be restyled the same way instead of giving its edges only (``PhotoRestyle``, held where the photo's edge map is).
A photo's frame, edges alone or restyled, runs at the photo's own aspect ratio (``inputs.fit_size``), as NVlabs
runs one; while the classical Canny detector stands in for HED with a real model, every frame a photo's or camera
frame's edges steer says so (``messages.edges_note``), and so does the photo's edge map.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from .. import inputs, settings
from ..batcher import EngineBusy, Priority, Superseded
from ..frames import DEFAULT_DECODER, Frame, FrameRequest
from ..inputs import InputError
from . import messages
from .live import encode_jpeg, frame_value, jpeg_data_url, sketch_digest
from .streams import Streams

log = logging.getLogger(__name__)

# The Sketch tab's frame inputs, by the names ``inputs.sketch_request`` takes them: the canvas sends them under these
# names and the page's components are wired in this order.
SKETCH_INPUTS = ("prompt", "steps", "seed", "guidance_scale", "control_strength", "thickness")
# The Paint tab's, by the names ``inputs.image_request`` takes them (``edges``: the painting's dark lines also steer
# the ControlNet).
PAINT_INPUTS = ("prompt", "strength", "steps", "seed", "guidance_scale", "edges", "control_strength")
CANVAS_INPUTS = {"sketch": SKETCH_INPUTS, "paint": PAINT_INPUTS}
# The Camera tab's, mirrored into the camera component by name and sent with every frame.
CAMERA_INPUTS = ("prompt", "mode", "strength", "steps", "seed", "guidance_scale", "control_strength", "decoder")
FRAME_FILES_KEPT = 256  # JPEGs kept in our own folder; Gradio copies each into its cache before we drop it
# stages that run only for some frames: listed in a readout only for those
CONTROL_STAGES = ("control_encode",)  # a frame with a control map
PICTURE_STAGES = ("image_encode",)  # an image-to-image frame


def encode_frame(image: Image.Image) -> bytes:
    """A frame -> the JPEG bytes the app serves for final frames (deterministic for identical pixels)."""
    return encode_jpeg(image, settings.JPEG_QUALITY)


def format_latency(frame: Frame, extra_notices: tuple[str, ...] = (), markdown: bool = True) -> str:
    """The readout: total, then the per-stage split (the stages the frame ran), then reuse and notices; Markdown
    (the API's latency text) or plain lines (the Sketch tab's readout)."""
    timings = frame.timings_ms
    total = f"{timings.get('total', 0.0):.0f} ms"
    head = f"{f'**{total}**' if markdown else total} total · decoder: {frame.decoder}"
    if frame.strength < 1:
        head += f" · strength {frame.strength:g}"
    if frame.reused:
        head += " (same inputs as a recent frame: reused, no model work)"
    elif frame.batch_size > 1:
        head += f" (batch of {frame.batch_size}: made together with frames of other users)"
    skipped = (() if frame.control_map is not None else CONTROL_STAGES) + (
        () if frame.strength < 1 else PICTURE_STAGES)
    stages = [s for s in settings.FRAME_STAGES if s in timings and s not in skipped]
    split = " · ".join(f"{stage} {timings[stage]:.1f}" for stage in stages)
    lines = [head, f"{split} (ms)" if split else ""]
    lines += [f"ℹ️ {notice}" for notice in (*frame.notices, *extra_notices)]
    return ("  \n" if markdown else "\n").join(line for line in lines if line)


def on_gpu(fn: Callable) -> Callable:
    """On ZeroGPU, ask for a GPU for the duration of ``fn``; everywhere else ``fn`` unchanged."""
    if not settings.ZERO_GPU:
        return fn
    import spaces  # preinstalled on Spaces; never needed elsewhere

    return spaces.GPU(duration=settings.ZERO_GPU_DURATION_S)(fn)


class Busy(gr.Error):
    """Too many visitors' frames wait already (``EngineBusy``): this one was turned away, not queued."""


def user_error(error: Exception) -> gr.Error:
    """What went wrong, as a message for the user (a model fault is logged whole)."""
    if isinstance(error, InputError):
        return gr.Error(str(error), print_exception=False)
    if isinstance(error, EngineBusy):
        return Busy("The server is busy with other visitors' frames; try again in a moment.", print_exception=False)
    log.error("frame failed", exc_info=error)
    if type(error).__name__ == "OutOfMemoryError":
        return gr.Error("The GPU ran out of memory on this frame; try fewer steps or a smaller size. "
                        "The server is still running.", print_exception=False)
    return gr.Error(f"The model failed on this frame ({type(error).__name__}: {str(error)[:200]}). Try again.",
                    print_exception=False)


def camera_decoder(engine: Any) -> str:
    """The lane camera frames use by default: the tiny autoencoder wherever there is one. Every camera frame is a
    new picture, so it pays an encode as well as a decode: with real weights TAESANA costs a fraction of the DC-AE
    (0.03 and 0.6 TFLOP against 5.2 and 8.4 at 1024 px), and even on the preview model, whose decoders cost about
    the same, its encoder makes a camera frame faster (docs/PERFORMANCE.md, "Camera")."""
    return "tiny" if engine.has_tiny_decoder else DEFAULT_DECODER


def named_values(request: dict, names: tuple[str, ...]) -> dict[str, Any]:
    """A page request's ``inputs``: an object keyed by exactly ``names`` (TypeError otherwise)."""
    values = request["inputs"]
    if not isinstance(values, dict) or set(values) != set(names):
        raise TypeError(f"inputs must be an object with exactly {', '.join(names)}")
    return values


class FinalAsked(gr.EventData):
    """The canvas's ``final`` event: it asks the queue for the final frame of request ``seq`` of tab ``tab`` (the
    server function could not make it, or a photo's edge map replaces the sketch). Other triggers carry neither."""

    def __init__(self, target: Any, data: Any):
        super().__init__(target, data)
        data = data if isinstance(data, dict) else {}
        self.seq: int | None = data["seq"] if isinstance(data.get("seq"), int) else None
        self.tab: str | None = str(data["tab"])[:64] if data.get("tab") else None


@dataclass(frozen=True)
class PhotoRestyle:
    """The Sketch tab's photo to restyle (image-to-image), held in the tab's photo state in place of a bare edge
    map: the photo at its frame size (``inputs.fit_picture``), its edge map at that size (the edges steer through
    the ControlNet; the tab shows it), and the strength it is redrawn at."""

    picture: Image.Image
    control_map: Image.Image
    strength: float


class FrameFiles:
    """Content-addressed JPEG files for Gradio to serve (the API's images). Gradio copies a returned file into its
    own cache, so only the newest ``FRAME_FILES_KEPT`` are kept here."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sprint-frames-"))
        self._recent: deque[Path] = deque()
        self._lock = threading.Lock()

    def write(self, image: Image.Image) -> str:
        data = encode_frame(image)
        path = self.folder / f"{hashlib.blake2b(data, digest_size=12).hexdigest()}.jpg"
        with self._lock:
            if not path.exists():
                path.write_bytes(data)
                self._recent.append(path)
                while len(self._recent) > FRAME_FILES_KEPT:
                    self._recent.popleft().unlink(missing_ok=True)
        return str(path)


class Handlers:
    """The frame functions of one app around one engine (``engine.Engine`` or ``serve_ray.RayEngine``)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.size = int(engine.size)
        self.files = FrameFiles()
        self._nonces = itertools.count(1)
        # looked up at each call, so that the engine's methods may be swapped (tests inject faults)
        self._render = on_gpu(lambda *args, **kwargs: self.engine.render(*args, **kwargs))
        self._edges = on_gpu(lambda *args, **kwargs: self.engine.photo_to_control_map(*args, **kwargs))
        # Drafts ask for the tiny decoder only where the engine has one; else they are full frames, sent smaller.
        self.draft_decoder = settings.DRAFT_DECODER if engine.has_tiny_decoder else DEFAULT_DECODER
        self.camera_decoder = camera_decoder(engine)
        self.streams = Streams(settings.CAMERA_SESSION_S)

    # --- the one path to the engine -----------------------------------------------------------------------------

    def render(self, request: FrameRequest, *, session: str | None = None, priority: Priority = Priority.FINAL,
               prep_ms: float = 0.0, queued: bool = False) -> Frame:
        """``Engine.render``; any failure but ``Superseded`` becomes a ``gr.Error`` for the user. ``queued``: the
        caller came through Gradio's queue, which bounds its callers itself (the engine does not refuse it)."""
        try:
            return self._render(request, prep_ms=prep_ms, session=session, priority=priority,
                                refusable=not queued)
        except Superseded:
            raise
        except Exception as error:  # noqa: BLE001 - every fault becomes a message; the server keeps serving
            raise user_error(error) from None

    def edge_map(self, photo: Image.Image, thickness: object,
                 size: tuple[int, int] | None = None) -> Image.Image:
        """``Engine.photo_to_control_map`` (default size: the photo's own frame); any failure (a bad photo or
        thickness, a fault of the edge detector) becomes a ``gr.Error`` for the user."""
        try:
            return self._edges(photo, thickness, size)
        except Exception as error:  # noqa: BLE001 - a bad upload or a fault: a message, the server keeps serving
            raise user_error(error) from None

    def edges_noted(self, request: FrameRequest) -> FrameRequest:
        """``request`` (steered by a photo's or a camera frame's edges) with ``messages.edges_note`` among its
        notices while the classical detector stands in for HED."""
        note = messages.edges_note(self.engine)
        return request if note is None else replace(request, notices=(*request.notices, note))

    def sketch_frame(self, picture: Image.Image | None, values: dict[str, Any], *, decoder: str = DEFAULT_DECODER,
                     control_map: Image.Image | None = None, session: str | None = None,
                     priority: Priority = Priority.FINAL, markdown: bool = False,
                     queued: bool = True) -> tuple[Frame, str]:
        """The Sketch tab's frame of ``picture`` (decoded once, by the caller) with the tab's ``values`` (named as in
        ``SKETCH_INPUTS``), and its readout: the engine's square, or a photo's ``control_map`` at its own size."""
        began = time.perf_counter()
        size = (self.size, self.size) if control_map is None else control_map.size
        try:
            request = inputs.sketch_request(picture, **values, size=size, control_map=control_map, decoder=decoder)
        except InputError as error:
            raise user_error(error) from None
        if control_map is not None:
            request = self.edges_noted(request)
        frame = self.render(request, session=session, priority=priority, queued=queued,
                            prep_ms=(time.perf_counter() - began) * 1000)
        extra = ("using the uploaded photo's edge map; clear the photo to draw again",) if control_map else ()
        return frame, format_latency(frame, extra, markdown=markdown)

    def paint_frame(self, picture: Image.Image, values: dict[str, Any], *, decoder: str = DEFAULT_DECODER,
                    session: str | None = None, priority: Priority = Priority.FINAL, markdown: bool = False,
                    queued: bool = True) -> tuple[Frame, str]:
        """The Paint tab's frame: ``picture`` (decoded once, by the caller) redrawn with the tab's ``values`` (named
        as in ``PAINT_INPUTS``, or with a photo's ``control_map``: the Sketch tab's restyle), and its readout."""
        began = time.perf_counter()
        try:
            request = inputs.image_request(picture, **values, long_side=self.size, decoder=decoder)
        except InputError as error:
            raise user_error(error) from None
        if values.get("control_map") is not None:
            request = self.edges_noted(request)
        frame = self.render(request, session=session, priority=priority, queued=queued,
                            prep_ms=(time.perf_counter() - began) * 1000)
        return frame, format_latency(frame, markdown=markdown)

    # --- the canvases' server functions ---------------------------------------------------------------------------

    def canvas_frame(self, request: dict, final: bool, tab_kind: str = "sketch") -> dict:
        """A frame a canvas asked for (see the module docstring); ``tab_kind``: "sketch" or "paint", whose inputs
        (``CANVAS_INPUTS``) and frame function it takes. Never raises: the canvas asks the queue for a final frame
        this could not make, and the queue shows the error."""
        names, make = CANVAS_INPUTS[tab_kind], self.sketch_frame if tab_kind == "sketch" else self.paint_frame
        try:
            seq, tab = int(request["seq"]), str(request["tab"])[:64]
            values = named_values(request, names)
            picture = inputs.decode_image(request["png"], what=tab_kind)
            decoder = (request.get("decoder") or DEFAULT_DECODER) if final else self.draft_decoder
            if not final:  # drafts keep up with the pen: one step whatever the Steps control says (settings)
                values = values | {"steps": settings.DRAFT_STEPS}
        except InputError as error:
            return {"seq": None, "error": str(error)}
        except (KeyError, TypeError, ValueError, AttributeError):
            shape = f"{{png, inputs: {{{', '.join(names)}}}, seq, tab}}"
            return {"seq": None, "error": f"a canvas frame request is {shape}"}
        try:
            frame, readout = make(picture, values, decoder=decoder, session=tab, queued=False,
                                  priority=Priority.FINAL if final else Priority.DRAFT)
        except Superseded:
            return {"seq": seq, "dropped": True}
        except Busy:
            return {"seq": seq, "busy": True}
        except gr.Error as error:
            return {"seq": seq, "error": error.message}
        jpeg = encode_frame(frame.image) if final else encode_jpeg(frame.image, settings.DRAFT_JPEG_QUALITY)
        return frame_value(jpeg, sketch_digest(picture), seq, next(self._nonces), readout)

    def draft_frame(self, request: dict) -> dict:
        """The Sketch canvas's server function for draft frames (see ``canvas_frame``)."""
        return self.canvas_frame(request, final=False)

    def final_frame(self, request: dict) -> dict:
        """The Sketch canvas's server function for final frames (see ``canvas_frame``)."""
        return self.canvas_frame(request, final=True)

    def canvas_functions(self, tab_kind: str = "sketch") -> list[Callable[[dict], dict]]:
        """The ``draft_frame`` and ``final_frame`` server functions of a canvas of ``tab_kind`` ("sketch" or
        "paint"), as plain functions (Gradio marks its server functions with an attribute, which a bound method
        cannot carry), for the canvas's ``server_functions``."""

        def draft_frame(request: dict) -> dict:
            return self.canvas_frame(request, final=False, tab_kind=tab_kind)

        def final_frame(request: dict) -> dict:
            return self.canvas_frame(request, final=True, tab_kind=tab_kind)

        return [draft_frame, final_frame]

    # --- Camera: the camera component's server functions (web.camera; never raise) -------------------------------

    def camera_request(self, picture: Image.Image, values: dict[str, Any], decoder: str | None = None) -> FrameRequest:
        """A camera frame with the tab's ``values`` (named as in ``CAMERA_INPUTS``) -> the request: image-to-image
        of the frame ("image" mode), or text-to-image steered by the frame's edge map ("edges" mode: HED, or the
        offline edge fallback, made on the model thread). Raises InputError naming a bad value, gr.Error for a
        failed edge map."""
        mode = values["mode"]
        if mode not in settings.CAMERA_MODES:
            raise InputError(f"mode must be one of {', '.join(settings.CAMERA_MODES)}, got {mode!r}")
        common = dict(prompt=values["prompt"], steps=values["steps"], seed=values["seed"],
                      guidance_scale=values["guidance_scale"], long_side=settings.CAMERA_CAPTURE_SIZE,
                      decoder=decoder or values["decoder"], control_strength=values["control_strength"])
        if mode == "image":
            return inputs.image_request(picture, strength=values["strength"], **common)
        size = inputs.fit_size(picture.width, picture.height, settings.CAMERA_CAPTURE_SIZE)
        edges = self.edge_map(picture, settings.DEFAULT_THICKNESS, size)
        return self.edges_noted(inputs.image_request(picture, strength=1.0, control_map=edges, **common))

    @staticmethod
    def _camera_picture(request: dict) -> tuple[dict[str, Any], Image.Image]:
        """A camera request's inputs (by name, exactly ``CAMERA_INPUTS``: else TypeError) and its decoded frame."""
        values = named_values(request, CAMERA_INPUTS)
        picture = inputs.decode_image(request["image"], what="camera frame")
        if picture is None:
            raise InputError("camera frame is empty")
        return values, picture

    def camera_frame(self, request: dict) -> dict:
        """One camera frame (see ``web.camera`` for the contract): made at draft priority as the stream's session,
        so it batches with other users' frames, replaces the stream's waiting frame and never waits behind finals."""
        try:
            seq, session = int(request["seq"]), "camera:" + str(request["session"])[:64]
            values, picture = self._camera_picture(request)
        except InputError as error:
            return {"seq": request.get("seq") if isinstance(request, dict) else None, "error": str(error)}
        except (KeyError, TypeError, ValueError, AttributeError):
            return {"seq": None, "error": "a camera frame request is {image, inputs: {"
                                          f"{', '.join(CAMERA_INPUTS)}}}, seq, session, captured_at}}"}
        verdict = self.streams.admit(session, seq)
        if verdict == "stopped":
            return {"seq": seq, "dropped": True}
        if verdict == "expired":
            return {"seq": seq, "expired": True,
                    "error": f"The camera stream stops after {settings.CAMERA_SESSION_S:.0f} s so that other "
                             "visitors get their turn on the GPU."}
        try:
            began = time.perf_counter()
            camera = self.camera_request(picture, values)
            frame = self.render(camera, session=session, priority=Priority.DRAFT,
                                prep_ms=(time.perf_counter() - began) * 1000)
        except Superseded:
            return {"seq": seq, "dropped": True}
        except Busy:
            return {"seq": seq, "busy": True}
        except InputError as error:
            return {"seq": seq, "error": str(error)}
        except gr.Error as error:
            return {"seq": seq, "error": error.message}
        return {"src": jpeg_data_url(encode_jpeg(frame.image, settings.CAMERA_JPEG_QUALITY)), "seq": seq,
                "captured_at": request.get("captured_at"), "server_ms": frame.timings_ms["total"],
                "readout": format_latency(frame, markdown=False)}

    def camera_stop(self, request: dict) -> dict:
        """The stream stopped: its waiting frame is dropped, its frame in flight is cancelled (it stops at the next
        layer unless other frames share its batch or the engine is compiled), and frames sent before the Stop that
        arrive later are not made."""
        try:
            session, seq = "camera:" + str(request["session"])[:64], int(request.get("seq") or 0)
        except (KeyError, TypeError, ValueError, AttributeError):
            return {"error": "a camera stop is {session, seq}"}
        self.streams.stop(session, seq)
        self.engine.cancel(session)
        return {"stopped": True}

    def camera_snapshot(self, request: dict) -> dict:
        """The camera frame now, made as a frame a user keeps: with the full decoder, at final priority and at least
        ``settings.DEFAULT_STEPS`` steps (more if the tab's Steps control asks for more)."""
        try:
            values, picture = self._camera_picture(request)
            values = values | {"steps": max(inputs.check_steps(values["steps"]), settings.DEFAULT_STEPS)}
            frame = self.render(self.camera_request(picture, values, decoder=DEFAULT_DECODER), queued=False)
        except Busy:
            return {"busy": True}
        except InputError as error:
            return {"error": str(error)}
        except gr.Error as error:
            return {"error": error.message}
        except (KeyError, TypeError, ValueError, AttributeError):
            return {"error": "a camera snapshot request is {image, inputs, session, captured_at}"}
        return {"src": jpeg_data_url(encode_frame(frame.image)), "readout": format_latency(frame, markdown=False)}

    def camera_functions(self) -> list[Callable[[dict], dict]]:
        """The camera component's server functions as plain functions (see ``canvas_functions``)."""

        def camera_frame(request: dict) -> dict:
            return self.camera_frame(request)

        def camera_stop(request: dict) -> dict:
            return self.camera_stop(request)

        def camera_snapshot(request: dict) -> dict:
            return self.camera_snapshot(request)

        return [camera_frame, camera_stop, camera_snapshot]

    # --- queue events ---------------------------------------------------------------------------------------------

    def sketch_final(self, sketch: str, prompt: str, steps: int, seed: int, guidance_scale: float,
                     control_strength: float, thickness: int, control_map: Image.Image | None, decoder: str,
                     event: FinalAsked) -> dict:
        """The Sketch tab's final frame through the queue (page load, the canvas's ``final`` event): the photo's
        edge map when there is one, else the sketch. As the tab's session, it replaces the tab's waiting frame."""
        values = dict(zip(SKETCH_INPUTS, (prompt, steps, seed, guidance_scale, control_strength, thickness)))
        if isinstance(control_map, PhotoRestyle):  # the photo itself redrawn, its edges steering
            return self.restyle_final(control_map, values, decoder, event)
        picture = None
        if control_map is None:
            try:
                picture = inputs.decode_image(sketch or None, what="sketch")
            except InputError as error:
                raise user_error(error) from None
        try:
            frame, readout = self.sketch_frame(picture, values, decoder=decoder, control_map=control_map,
                                               session=event.tab)
        except Superseded:  # a newer frame of the tab is on its way
            return gr.skip()
        return frame_value(encode_frame(frame.image), sketch_digest(picture), event.seq, next(self._nonces), readout)

    def photo_frame(self, photo: Image.Image | None, thickness: int, sketch: str, prompt: str, steps: int, seed: int,
                    guidance_scale: float, control_strength: float, decoder: str,
                    restyle: bool = settings.DEFAULT_PHOTO_RESTYLE,
                    photo_strength: float = settings.DEFAULT_STRENGTH) -> Iterator[tuple]:
        """A photo uploaded (or cleared, or the thickness moved with a photo in): its edge map at the photo's own
        frame size (``inputs.fit_size``), shown as soon as it is made (labelled with ``messages.edges_note`` when
        there is one), then the frame it steers, at that size, in the same event (no round trip through the
        browser). Yields (edge map shown, edge map state, frame). ``restyle``: the state is a ``PhotoRestyle`` and
        the frame the photo itself redrawn at ``photo_strength`` (``photo_restyle``)."""
        control = None
        if photo is not None:
            control = (self.photo_restyle(photo, thickness, photo_strength) if restyle
                       else self.edge_map(photo, thickness))
        shown = control.control_map if isinstance(control, PhotoRestyle) else control
        note = messages.edges_note(self.engine) if control is not None else None
        yield gr.update(value=shown, label=messages.edge_map_label(note)), control, gr.skip()
        yield gr.skip(), gr.skip(), self.sketch_final(sketch, prompt, steps, seed, guidance_scale, control_strength,
                                                      thickness, control, decoder, FinalAsked(None, None))

    def sketch_to_image(self, sketch: str, prompt: str, steps: int, seed: int, guidance_scale: float,
                        control_strength: float, thickness: int, decoder: str = DEFAULT_DECODER) -> tuple[str, str]:
        """``/sketch_to_image``: (JPEG file, latency Markdown)."""
        values = dict(zip(SKETCH_INPUTS, (prompt, steps, seed, guidance_scale, control_strength, thickness)))
        try:
            picture = inputs.decode_image(sketch or None, what="sketch")
        except InputError as error:
            raise user_error(error) from None
        frame, text = self.sketch_frame(picture, values, decoder=decoder, markdown=True)
        return self.files.write(frame.image), text

    def image_to_image(self, image: str, prompt: str, strength: float, steps: int, seed: int, guidance_scale: float,
                       decoder: str = DEFAULT_DECODER) -> tuple[str, str]:
        """``/image_to_image``: a picture (PNG / JPEG / WebP data URL) redrawn at ``strength`` -> (JPEG file,
        latency Markdown); the picture keeps its aspect ratio (``inputs.fit_size``)."""
        try:
            picture = inputs.decode_image(image or None, what="image")
        except InputError as error:
            raise user_error(error) from None
        values = dict(prompt=prompt, strength=strength, steps=steps, seed=seed, guidance_scale=guidance_scale)
        frame, text = self.paint_frame(picture, values, decoder=decoder, markdown=True)
        return self.files.write(frame.image), text

    def engine_stats(self) -> dict[str, dict[str, int]]:
        """``/engine_stats`` (undocumented): ``{"batches": {rows: batches made with that many rows}}`` since the
        warm-up, read by the load test (empty where the engine keeps none, e.g. Ray Serve replicas)."""
        sizes = getattr(self.engine, "batch_sizes", {})
        return {"batches": {str(rows): count for rows, count in sorted(dict(sizes).items())}}

    def text_to_image(self, prompt: str, steps: int, seed: int, guidance_scale: float, width: int, height: int,
                      decoder: str = DEFAULT_DECODER) -> tuple[str, str]:
        """``/text_to_image`` and the Playground: (JPEG file, latency Markdown)."""
        try:
            request = inputs.text_request(prompt, steps=steps, seed=seed, guidance_scale=guidance_scale, width=width,
                                          height=height, decoder=decoder)
        except InputError as error:
            raise user_error(error) from None
        frame = self.render(request, queued=True)
        return self.files.write(frame.image), format_latency(frame)

    # --- Paint (and the Sketch tab's photo restyle: image-to-image) ----------------------------------------------

    def paint_final(self, painting: str, prompt: str, strength: float, steps: int, seed: int, guidance_scale: float,
                    edges: bool, control_strength: float, decoder: str, event: FinalAsked) -> dict:
        """The Paint tab's final frame through the queue (the tab opened, the canvas's ``final`` event): the
        painting (white paper while the canvas has none) redrawn. As the tab's session, it replaces the tab's waiting
        frame."""
        values = dict(zip(PAINT_INPUTS, (prompt, strength, steps, seed, guidance_scale, edges, control_strength)))
        try:
            picture = inputs.decode_image(painting or None, what="paint")
        except InputError as error:
            raise user_error(error) from None
        picture = picture or Image.new("RGB", (self.size, self.size), "white")
        try:
            frame, readout = self.paint_frame(picture, values, decoder=decoder, session=event.tab)
        except Superseded:  # a newer frame of the tab is on its way
            return gr.skip()
        return frame_value(encode_frame(frame.image), sketch_digest(picture), event.seq, next(self._nonces), readout)

    def photo_restyle(self, photo: Image.Image, thickness: int, strength: float) -> PhotoRestyle:
        """The Sketch tab's photo, ready to restyle: at its frame size (long side the engine's), with its edge map
        at that size (the same map the edges-only frame takes)."""
        try:
            strength = inputs.check_strength(strength)
            picture = inputs.fit_picture(inputs.decode_image(photo, what="photo"), self.size)
        except InputError as error:
            raise user_error(error) from None
        return PhotoRestyle(picture, self.edge_map(picture, thickness, picture.size), strength)

    def restyle_final(self, restyle: PhotoRestyle, values: dict[str, Any], decoder: str, event: FinalAsked) -> dict:
        """The Sketch tab's frame of a restyled photo: ``inputs.image_request(photo, ...,
        control_map=<its edge map>)`` at the restyle's strength, with the tab's ``values`` (``SKETCH_INPUTS``; the
        edge map was made at the tab's thickness)."""
        paint = {name: values[name] for name in ("prompt", "steps", "seed", "guidance_scale", "control_strength")}
        try:
            frame, readout = self.paint_frame(restyle.picture, paint | {"strength": restyle.strength,
                                                                        "control_map": restyle.control_map},
                                              decoder=decoder, session=event.tab)
        except Superseded:
            return gr.skip()
        readout += "\nℹ️ restyling the uploaded photo (its edges steer); clear the photo to draw again"
        return frame_value(encode_frame(frame.image), None, event.seq, next(self._nonces), readout)
