"""Live drafts: frames while the pen moves, shown in the Sketch tab's output next to the frames the queue makes.

Two paths reach the engine from the Sketch tab:

* **Final frames** (pen lifted, a prompt or slider settled, page load, photo): a Gradio event in the queue under
  the ``"gpu"`` concurrency id, full decoder, JPEG at ``settings.JPEG_QUALITY`` -- the same pixels
  ``/sketch_to_image`` returns. The image travels inline in the event's message (a data URL in ``LiveImage``'s
  value) instead of as a file the browser fetches afterwards.
* **Draft frames** (pen moving, a prompt being typed): the canvas calls its server function ``draft`` (gradio's
  ``server_functions``: one HTTP POST answered with the frame, no queue round trip, no event stream). Measured in
  headless Chromium this is the shortest way into Python and back; Gradio's queue is not on it, so
  ``DraftGate`` does the queue's job for drafts (one at a time, one waiting per tab, a bounded number waiting).

Either way the frame is made by the engine's one entry point, under its lock, wrapped for ZeroGPU by the UI.

``LiveImage`` is the output: an ``<img>`` whose value (set by the final-frame event) is
``{"src": data URL, "digest", "seq", "nonce"}``; the canvas hands it drafts directly in the page. The newest
picture wins: every request from the canvas carries a sequence number, and a frame for an older one than the
frame on screen is not shown. Each frame says which canvas it drew (``digest``, ``sketch_digest`` of the PNG's
pixels), so tests can check a draft against the canvas states a stroke passed through.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
from PIL import Image

T = TypeVar("T")

_HERE = Path(__file__).resolve().parent
_JS = (_HERE / "live.js").read_text(encoding="utf-8")
_CSS = (_HERE / "live.css").read_text(encoding="utf-8")
_HTML = """
<div class="lv-root">
  <img class="lv-img" alt="Generated image">
  <div class="lv-live" aria-live="off"></div>
</div>
"""


def jpeg_data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def sketch_digest(image: Image.Image | None) -> str | None:
    """A short digest of a canvas picture's pixels (RGB), the tag a frame carries of the canvas it drew."""
    if image is None:
        return None
    return hashlib.blake2b(image.convert("RGB").tobytes(), digest_size=8).hexdigest()


class DraftGate:
    """Admission of draft frames, which reach the engine without Gradio's queue; it does for them what the queue
    does for the other events:

    * ``slots`` drafts at a time go to the engine (the queue's concurrency limit for the ``"gpu"`` id: 1 for one
      GPU); the engine's lock then orders a draft with the queue's frame, so it delays others by one frame at most;
    * at most one waiting draft per tab: a newer draft of the same tab takes its place in line, and the older one
      returns ``None`` at once, as does a waiting draft when ``drop`` says the tab's final frame has arrived;
    * at most ``max_waiting`` tabs wait (the queue's ``max_size``); a draft beyond that returns ``None`` at once;
    * tabs are served in the order they started waiting.
    """

    def __init__(self, max_waiting: int, slots: int = 1):
        self.max_waiting = max_waiting
        self.slots = slots
        self._cond = threading.Condition()
        self._waiting: OrderedDict[str, int] = OrderedDict()  # tab -> ticket of its newest draft, in line order
        self._tickets = 0
        self._running = 0

    def run(self, tab: str, fn: Callable[[], T]) -> T | None:
        """``fn()`` once it is this tab's turn, or ``None`` if the draft was dropped first."""
        with self._cond:
            if tab not in self._waiting and len(self._waiting) >= self.max_waiting:
                return None
            self._tickets += 1
            ticket = self._tickets
            self._waiting[tab] = ticket  # an older waiting draft of this tab sees a newer ticket and leaves
            self._cond.notify_all()
            while True:
                if self._waiting.get(tab) != ticket:
                    return None
                if self._running < self.slots and next(iter(self._waiting)) == tab:
                    break
                self._cond.wait()
            del self._waiting[tab]
            self._running += 1
        try:
            return fn()
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def drop(self, tab: str) -> None:
        """The tab's newer picture went to the queue as a final frame: its waiting draft, if any, is dropped."""
        with self._cond:
            if self._waiting.pop(tab, None) is not None:
                self._cond.notify_all()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def running(self) -> int:
        with self._cond:
            return self._running


class LiveImage(gr.HTML):
    """The Sketch tab's output image: final frames arrive as its value, drafts from the canvas in the page.

    Value: ``None`` or ``{"src": "data:image/jpeg;base64,...", "digest": str | None, "seq": int | None,
    "nonce": int}``. ``seq`` is the canvas's request number the frame answers (None: not asked for by the canvas,
    e.g. page load); ``nonce`` makes every frame a new value, so an identical picture after a draft still shows.
    """

    def __init__(self, *, max_height: int, **kwargs: Any):
        super().__init__(value=None, html_template=_HTML, css_template=_CSS, js_on_load=_JS,
                         apply_default_css=False, max_image_height=int(max_height), **kwargs)

    def preprocess(self, payload: Any) -> Any:
        return payload

    def postprocess(self, value: Any) -> Any:
        return value

    def api_info(self) -> dict[str, Any]:
        return {"type": "object", "description": "frame shown: {src: JPEG data URL, digest, seq, nonce}"}

    def example_payload(self) -> Any:
        return None

    def example_value(self) -> Any:
        return None


def frame_value(jpeg: bytes, digest: str | None, seq: int | None, nonce: int) -> dict[str, Any]:
    return {"src": jpeg_data_url(jpeg), "digest": digest, "seq": seq, "nonce": nonce}


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
