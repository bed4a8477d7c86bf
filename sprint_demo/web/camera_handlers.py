"""The Camera tab's frames: the camera component's server functions (``web.camera`` holds their contract).

Each stream is an engine session (``camera:<page session>``) at draft priority, so its frames batch with other
users' frames, replace the stream's waiting frame and never wait behind finals; ``web.streams`` drops frames sent
before a Stop and ends a stream at its time limit. A snapshot is a frame a user keeps: the full decoder, final
priority, at least ``settings.DEFAULT_STEPS`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import inputs, settings
from ..frames import DEFAULT_DECODER, Frame, FrameRequest, Priority
from . import messages
from .handlers import (
    SESSION_CHARS,
    FrameMaker,
    encode_frame,
    named_values,
    request_seq,
    request_shape,
    server_answer,
)
from .live import encode_jpeg, jpeg_data_url
from .streams import Streams

# The Camera tab's inputs, by the names ``inputs.camera_request`` takes them: mirrored into the camera component by
# name and sent with every frame.
CAMERA_INPUTS = ("prompt", "mode", "strength", "steps", "seed", "guidance_scale", "control_strength", "decoder",
                 "steadiness")
FRAME_SHAPE = f"{{image, inputs: {{{', '.join(CAMERA_INPUTS)}}}, seq, session, captured_at}}"


class CameraHandlers:
    """The camera's server functions around one ``FrameMaker``; ``streams``: the streams it has seen."""

    def __init__(self, maker: FrameMaker):
        self.maker = maker
        self.streams = Streams(settings.CAMERA_SESSION_S)

    def server_functions(self) -> list[Callable[[dict], dict]]:
        """``camera_frame``, ``camera_stop`` and ``camera_snapshot`` as plain functions (see
        ``CanvasHandlers.server_functions``)."""

        def camera_frame(request: dict) -> dict:
            return self.frame(request)

        def camera_stop(request: dict) -> dict:
            return self.stop(request)

        def camera_snapshot(request: dict) -> dict:
            return self.snapshot(request)

        return [camera_frame, camera_stop, camera_snapshot]

    def _request(self, image: object, values: dict[str, Any]) -> FrameRequest:
        """The request of a camera frame with the tab's ``values`` (``CAMERA_INPUTS``)."""
        return inputs.camera_request(image, **values, long_side=settings.CAMERA_CAPTURE_SIZE,
                                     edge_map=self.maker.edge_map)

    def _readout(self, values: dict[str, Any], frame: Frame) -> str:
        """A camera frame's readout; a frame its edges steer says when Canny stands in for HED."""
        return messages.readout(frame, self.maker.edges_notes() if values["mode"] == "edges" else ())

    def frame(self, request: dict) -> dict:
        """One camera frame, made at draft priority as the stream's session."""
        try:
            with request_shape("camera frame request", FRAME_SHAPE):
                seq, session = int(request["seq"]), _session(request)
                values, image = named_values(request, CAMERA_INPUTS), request["image"]
            verdict = self.streams.admit(session, seq)
            if verdict == "stopped":
                return {"seq": seq, "dropped": True}
            if verdict == "expired":
                return {"seq": seq, "expired": True, "error": messages.camera_expired()}
            frame = self.maker.render(lambda: self._request(image, values), session=session,
                                      priority=Priority.DRAFT, refusable=True)
        except Exception as error:  # every failure is an answer: the stream goes on
            return server_answer(error, seq=request_seq(request))
        return {"src": jpeg_data_url(encode_jpeg(frame.image, settings.CAMERA_JPEG_QUALITY)), "seq": seq,
                "captured_at": request.get("captured_at"), "server_ms": frame.timings_ms["total"],
                "readout": self._readout(values, frame)}

    def stop(self, request: dict) -> dict:
        """The stream stopped: its waiting frame is dropped, its frame in flight is cancelled (it stops at the next
        layer unless other frames share its batch or the engine is compiled), and frames sent before the Stop that
        arrive later are not made."""
        try:
            with request_shape("camera stop", "{session, seq}"):
                session, seq = _session(request), int(request.get("seq") or 0)
        except Exception as error:  # a malformed stop: an answer, never an exception
            return server_answer(error)
        self.streams.stop(session, seq)
        self.maker.engine.cancel(session)
        return {"stopped": True}

    def snapshot(self, request: dict) -> dict:
        """The camera frame now, made as a frame a user keeps: with the full decoder, at final priority and at least
        ``settings.DEFAULT_STEPS`` steps (more if the tab's Steps control asks for more)."""
        try:
            with request_shape("camera snapshot request", "{image, inputs, session, captured_at}"):
                values, image = named_values(request, CAMERA_INPUTS), request["image"]
            values = values | {"steps": max(inputs.check_steps(values["steps"]), settings.DEFAULT_STEPS),
                               "decoder": DEFAULT_DECODER}
            frame = self.maker.render(lambda: self._request(image, values), refusable=True)
        except Exception as error:  # every failure is an answer
            return server_answer(error)
        return {"src": jpeg_data_url(encode_frame(frame.image)), "readout": self._readout(values, frame)}


def _session(request: dict) -> str:
    """The engine session of a camera request's stream."""
    return "camera:" + str(request["session"])[:SESSION_CHARS]
