"""Stand-ins for the camera's server functions, with the semantics the engine gives them (the contract is in
``sprint_demo/web/camera.py``), a tiny Gradio app around ``CameraStream`` that uses them, and fake camera files.

``StubCameraServer``:

* one worker makes frames, one at a time: it sleeps ``work_s`` (150 ms, a model's time), then answers the input
  frame tinted towards a colour derived from the prompt (``prompt_colour``; ``TINT`` of it), so a test can tell
  prompts apart and still tell which camera a frame came from (``expected_mean``);
* per session at most one frame waits: a newer frame of the session takes the waiting one's place in line, and the
  older one is answered ``{seq, dropped: true}`` at once; sessions are served in the order they started waiting,
  a waiting snapshot first; more than ``max_waiting`` sessions waiting -> ``{seq, busy: true}``;
* ``camera_stop`` drops the session's waiting frame, and every frame of the session up to the stop's ``seq`` that
  reaches the server later; the session's time window restarts with its next frame;
* ``time_limit_s`` per session (from its first frame after creation or a stop) -> ``{seq, expired: true, error}``;
* ``fail_with`` (a message) makes every frame answer ``{seq, error}``; ``max_waiting = 0`` makes every frame
  answer ``busy`` (both can be changed while the app runs);
* a record per session of each piece of work (``Work``: when it started and ended, the prompt and input size) and
  of each stop (``Stop``), on ``time.monotonic()``, for tests to assert on.

``server_functions()`` returns plain functions named ``camera_frame``, ``camera_stop`` and ``camera_snapshot``
(Gradio marks each function object as a server function, which bound methods do not allow).
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TINT = 0.3  # share of the prompt's colour in a stub frame: the camera's colour stays dominant
JPEG_QUALITY = 85
SNAPSHOT_JPEG_QUALITY = 95


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """The stub's colour for a prompt (the first three bytes of its digest)."""
    digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=3).digest()
    return digest[0], digest[1], digest[2]


def expected_mean(camera_rgb: Any, prompt: str) -> np.ndarray:
    """The mean colour a stub frame has for a camera frame of mean colour ``camera_rgb`` and ``prompt``."""
    return (1 - TINT) * np.asarray(camera_rgb, dtype=float) + TINT * np.asarray(prompt_colour(prompt), dtype=float)


def data_url_image(url: str) -> Image.Image:
    """A ``data:image/...;base64,`` URL -> RGB PIL image."""
    head, _, body = url.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ValueError("not a base64 image data URL")
    with Image.open(io.BytesIO(base64.b64decode(body, validate=True))) as image:
        return image.convert("RGB")


def jpeg_data_url(image: Image.Image, quality: int) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Work:
    """One piece of work of the stub's worker (``time.monotonic()`` seconds)."""

    session: str
    seq: int | None  # None: a snapshot
    prompt: str
    size: tuple[int, int]  # the input frame's (width, height)
    input_mean: tuple[float, float, float]
    started: float
    ended: float | None = None


@dataclass
class Stop:
    session: str
    seq: int
    at: float


@dataclass
class _Job:
    session: str
    seq: int | None
    image: Image.Image
    prompt: str
    captured_at: Any
    snapshot: bool
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict | None = None

    def finish(self, answer: dict) -> None:
        self.answer = answer
        self.done.set()


class StubCameraServer:
    """See the module docstring. ``close()`` stops the worker."""

    def __init__(self, work_s: float = 0.15, time_limit_s: float = 120.0, max_waiting: int = 8):
        self.work_s = work_s
        self.time_limit_s = time_limit_s
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._waiting: OrderedDict[tuple[str, bool], _Job] = OrderedDict()  # (session, snapshot) -> newest job
        self._stopped_seq: dict[str, int] = {}
        self._window: dict[str, float] = {}  # session -> start of its time window
        self._closed = False
        self.fail_with: str | None = None  # set: every frame is answered {seq, error: fail_with}, without work
        self.works: dict[str, list[Work]] = {}
        self.stops: dict[str, list[Stop]] = {}
        self.arrivals: dict[str, list[tuple[int, float]]] = {}  # session -> (seq, arrival) of each frame request
        self._worker = threading.Thread(target=self._run, name="stub-camera-worker", daemon=True)
        self._worker.start()

    # --- the server functions -------------------------------------------------------------------------------
    def server_functions(self) -> list[Callable[[dict], dict]]:
        def camera_frame(request: dict) -> dict:
            return self.frame(request)

        def camera_stop(request: dict) -> dict:
            return self.stop(request)

        def camera_snapshot(request: dict) -> dict:
            return self.snapshot(request)

        return [camera_frame, camera_stop, camera_snapshot]

    def frame(self, request: dict) -> dict:
        try:
            seq, session = int(request["seq"]), str(request["session"])[:64]
            inputs = request.get("inputs") or {}
            prompt = str(inputs.get("prompt", ""))
            image = data_url_image(request["image"])
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as error:
            return {"seq": request.get("seq") if isinstance(request, dict) else None,
                    "error": f"bad camera frame request ({error})"}
        now = time.monotonic()
        with self._cond:
            self.arrivals.setdefault(session, []).append((seq, now))
            if seq <= self._stopped_seq.get(session, 0):
                return {"seq": seq, "dropped": True}
            if self.fail_with is not None:
                return {"seq": seq, "error": self.fail_with}
            started = self._window.setdefault(session, now)
            if now - started > self.time_limit_s:
                return {"seq": seq, "expired": True,
                        "error": f"The camera session reached its time limit ({self.time_limit_s:g} s)."}
        return self._submit(_Job(session, seq, image, prompt, request.get("captured_at"), snapshot=False))

    def snapshot(self, request: dict) -> dict:
        try:
            session = str(request["session"])[:64]
            prompt = str((request.get("inputs") or {}).get("prompt", ""))
            image = data_url_image(request["image"])
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as error:
            return {"error": f"bad snapshot request ({error})"}
        answer = self._submit(_Job(session, None, image, prompt, request.get("captured_at"), snapshot=True))
        answer.pop("seq", None)
        return answer

    def stop(self, request: dict) -> dict:
        try:
            session, seq = str(request["session"])[:64], int(request.get("seq") or 0)
        except (KeyError, TypeError, ValueError, AttributeError):
            return {"error": "a camera stop request is {session, seq}"}
        with self._cond:
            self._stopped_seq[session] = max(seq, self._stopped_seq.get(session, 0))
            self._window.pop(session, None)
            self.stops.setdefault(session, []).append(Stop(session, seq, time.monotonic()))
            waiting = self._waiting.pop((session, False), None)
        if waiting is not None:
            waiting.finish({"seq": waiting.seq, "dropped": True})
        return {"stopped": True}

    # --- the line and the worker -----------------------------------------------------------------------------
    def _submit(self, job: _Job) -> dict:
        key = (job.session, job.snapshot)
        with self._cond:
            if key not in self._waiting and len(self._waiting) >= self.max_waiting:
                return {"seq": job.seq, "busy": True}
            older = self._waiting.get(key)
            self._waiting[key] = job  # an existing key keeps its place in line
            self._cond.notify_all()
        if older is not None:
            older.finish({"seq": older.seq, "dropped": True})
        if not job.done.wait(timeout=60):
            return {"seq": job.seq, "error": "the stub worker did not answer in 60 s"}
        return job.answer or {"seq": job.seq, "error": "no answer"}

    def _next(self) -> _Job | None:
        """(Lock held.) The next job: the first waiting snapshot, else the session that has waited longest."""
        if not self._waiting:
            return None
        key = next((k for k in self._waiting if k[1]), next(iter(self._waiting)))
        return self._waiting.pop(key)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._next()
                mean = tuple(float(v) for v in np.asarray(job.image, dtype=float).reshape(-1, 3).mean(axis=0))
                record = Work(job.session, job.seq, job.prompt, job.image.size, mean, time.monotonic())
                self.works.setdefault(job.session, []).append(record)
            try:
                time.sleep(self.work_s)
                made = Image.blend(job.image, Image.new("RGB", job.image.size, prompt_colour(job.prompt)), TINT)
                src = jpeg_data_url(made, SNAPSHOT_JPEG_QUALITY if job.snapshot else JPEG_QUALITY)
                record.ended = time.monotonic()
                server_ms = (record.ended - record.started) * 1000
                job.finish({"src": src, "seq": job.seq, "captured_at": job.captured_at, "server_ms": server_ms,
                            "readout": f"stub: prompt {job.prompt!r}, input {job.image.width}x{job.image.height}"})
            except Exception as error:  # the page must always get an answer
                record.ended = time.monotonic()
                job.finish({"seq": job.seq, "error": f"stub worker failed: {error}"})

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiting = list(self._waiting.values())
            self._waiting.clear()
            self._cond.notify_all()
        for job in waiting:
            job.finish({"seq": job.seq, "dropped": True})

    # --- for tests -------------------------------------------------------------------------------------------
    def works_of(self, session: str) -> list[Work]:
        with self._cond:
            return list(self.works.get(session, []))

    def stops_of(self, session: str) -> list[Stop]:
        with self._cond:
            return list(self.stops.get(session, []))

    def waiting_seq(self, session: str) -> int | None:
        """The seq of the session's frame waiting in line, if any."""
        with self._cond:
            job = self._waiting.get((session, False))
            return None if job is None else job.seq

    def waiting_count(self) -> int:
        """Frames and snapshots waiting in line."""
        with self._cond:
            return len(self._waiting)

    def sessions(self) -> list[str]:
        with self._cond:
            return list(self.works)


# --- a tiny app ------------------------------------------------------------------------------------------------
# The app's half of the inputs: the prompt box mirrored into the camera on every change (no server round trip).
MIRROR_PROMPT_JS = """(prompt) => {
  const root = document.querySelector('#camera .cam-root');
  if (root && root.setInputs) root.setInputs({prompt: prompt});
  return [];
}"""


def build_camera_app(stub: StubCameraServer, capture_size: int = 512, prompt: str = "a red fox") -> Any:
    """Blocks: a prompt Textbox (``#prompt``) mirrored into ``CameraStream`` (``#camera``, output
    ``#camera_output``, latency ``#camera_latency``) whose server functions are ``stub``'s, in a tab "Camera"
    (shown first) next to a tab "Other", as in the app."""
    import gradio as gr

    from sprint_demo.web.camera import CameraStream

    with gr.Blocks(title="camera test") as demo:
        box = gr.Textbox(prompt, label="Prompt", elem_id="prompt")
        with gr.Tabs():
            with gr.Tab("Camera", id="camera_tab"):
                CameraStream(elem_id="camera", capture_size=capture_size, output_id="camera_output",
                             latency_id="camera_latency", server_functions=stub.server_functions())
            with gr.Tab("Other", id="other_tab"):
                gr.Markdown("Another tab: the camera stops when this one is chosen.")
        gr.on(triggers=[demo.load, box.change], fn=None, inputs=[box], js=MIRROR_PROMPT_JS)
    return demo


@dataclass
class CameraApp:
    url: str
    stub: StubCameraServer
    demo: Any


def serve_camera_app(stub: StubCameraServer | None = None, **kwargs: Any) -> Iterator[CameraApp]:
    """A generator for a fixture: the app served in this process on a free loopback port."""
    from sprint_demo.tools.app_process import free_port

    stub = StubCameraServer() if stub is None else stub
    demo = build_camera_app(stub, **kwargs)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield CameraApp(f"http://127.0.0.1:{port}", stub, demo)
    finally:
        demo.close()
        stub.close()


# --- fake cameras ------------------------------------------------------------------------------------------------
def rgb_to_yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited range, the YUV Chromium's fake capture expects."""
    r, g, b = (v / 255 for v in rgb)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


def write_y4m(path: Path, width: int, height: int, rgb: tuple[int, int, int], frames: int = 10,
              fps: int = 30, right_rgb: tuple[int, int, int] | None = None) -> Path:
    """A Y4M video (text header + raw I420 planes per frame) for ``--use-file-for-fake-video-capture``: a
    ``rgb`` background with a square of half its brightness moving across, so frames differ but the mean colour
    stays close to ``rgb``. ``right_rgb``: the right half of each frame is that colour instead, plain (a picture
    whose mirror image differs)."""
    y0, u0, v0 = rgb_to_yuv(rgb)
    y1, u1, v1 = rgb_to_yuv(tuple(c // 2 for c in rgb))
    side = max(2, min(width, height) // 8) // 2 * 2
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for index in range(frames):
            luma = np.full((height, width), y0, np.uint8)
            cb = np.full((height // 2, width // 2), u0, np.uint8)
            cr = np.full((height // 2, width // 2), v0, np.uint8)
            x = (index * (width - side) // max(1, frames - 1)) // 2 * 2
            y = (height - side) // 2 // 2 * 2
            luma[y:y + side, x:x + side] = y1
            cb[y // 2:(y + side) // 2, x // 2:(x + side) // 2] = u1
            cr[y // 2:(y + side) // 2, x // 2:(x + side) // 2] = v1
            if right_rgb is not None:
                half = width // 2 // 2 * 2
                for plane, value, step in zip((luma, cb, cr), rgb_to_yuv(right_rgb), (1, 2, 2)):
                    plane[:, half // step:] = value
            file.write(b"FRAME\n")
            file.write(luma.tobytes() + cb.tobytes() + cr.tobytes())
    return path


def write_y4m_frames(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """A Y4M video of RGB ``frames`` ((height, width, 3) uint8, even sizes) for ``--use-file-for-fake-video-capture``
    (chromium plays it in a loop): BT.601 limited range, chroma averaged over 2x2 blocks."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for frame in frames:
            r, g, b = (frame[..., i].astype(np.float32) / 255 for i in range(3))
            y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
            u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
            v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
            planes = [y] + [c.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)) for c in (u, v)]
            file.write(b"FRAME\n")
            file.write(b"".join(np.clip(np.round(p), 0, 255).astype(np.uint8).tobytes() for p in planes))
    return path
