"""Live frames: drafts while the pen moves, the final frame when it lifts, shown in a canvas tab's output.

The canvas reaches the engine through its server functions (gradio's ``server_functions``: one HTTP POST
answered with the frame, no queue round trip, no event stream), the shortest way into Python and back
(docs/PERFORMANCE.md, "The app around the model"); ``web.canvas_handlers`` makes their frames:

* **Draft frames** (pen moving, a prompt being typed): server function ``draft_frame``, the tiny decoder where
  the engine has one, JPEG at ``settings.DRAFT_JPEG_QUALITY``.
* **Final frames** the canvas asks for (pen lifted, undo, clear, a loaded sketch, the prompt and sliders settled):
  server function ``final_frame``, the decoder chosen for final frames, JPEG at ``settings.JPEG_QUALITY`` -- the same
  pixels ``/sketch_to_image`` returns.

Gradio's queue is not on that path; the engine does its job (``sprint_demo.batcher``): each tab is a session with
one waiting frame, the newest; finals go before drafts and stop the tab's draft in flight; too many tabs waiting
turn a frame away. When a final is turned away or fails, the canvas asks the queue instead (its custom event
``final``), which also makes the frames the canvas does not ask for (page load, a photo's edge map, held in session
state).

``LiveImage`` is the output: an ``<img>`` with download and full-screen buttons (the final frame on show), and the
latency readout. Its value (set by the queue's frames) is ``{"src": data URL, "digest", "seq", "nonce",
"readout"}``; the canvas hands it the frames of its server functions directly in the page. The newest picture wins:
every request from the canvas carries a sequence number, and a frame for an older one than the frame on screen is
not shown. Each frame says which canvas picture it drew (``digest``, ``picture_digest`` of the PNG's pixels), so
tests can check a frame against the canvas states a stroke passed through.
"""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any, TypeVar

import gradio as gr
from PIL import Image

from .page_files import component_script, page_file

T = TypeVar("T")

_JS = component_script("props.js", "live.js")
_CSS = page_file("live.css")
_HTML = """
<div class="lv-root">
  <div class="lv-frame">
    <img class="lv-img" alt="Generated image">
    <div class="lv-tools">
      <a class="lv-save" download="sana-sprint.jpg" title="Download this image" aria-label="Download this image">
        <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 4v11m-5-5 5 5 5-5M5 20h14"/></svg></a>
      <button class="lv-full" type="button" title="Full screen" aria-label="Full screen">
        <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5"/></svg></button>
    </div>
  </div>
  <div class="lv-live" aria-live="off"></div>
  <div class="lv-readout" id="${readout_id}" aria-live="polite"></div>
</div>
"""


def jpeg_data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def picture_digest(image: Image.Image | None) -> str | None:
    """A short digest of a canvas picture's pixels (RGB: a sketch or a painting), the tag a frame carries of the
    picture it drew."""
    if image is None:
        return None
    return hashlib.blake2b(image.convert("RGB").tobytes(), digest_size=8).hexdigest()


class LiveImage(gr.HTML):
    """A canvas tab's output image and its latency readout (element id ``readout_id``: ``#latency`` on the Sketch
    tab): the queue's frames arrive as its value, the canvas's frames in the page.

    Value: ``None`` or ``{"src": "data:image/jpeg;base64,...", "digest": str | None, "seq": int | None,
    "nonce": int, "readout": str}``. ``seq`` is the canvas's request number the frame answers (None: not asked
    for by the canvas, e.g. page load); ``nonce`` makes every frame a new value, so an identical picture after a
    draft still shows; ``readout`` is the latency text (plain lines).
    """

    def __init__(self, *, max_height: int, readout_id: str = "latency", **kwargs: Any):
        super().__init__(value=None, html_template=_HTML, css_template=_CSS, js_on_load=_JS,
                         apply_default_css=False, max_image_height=int(max_height), readout_id=readout_id,
                         **kwargs)

    def preprocess(self, payload: Any) -> Any:
        return payload

    def postprocess(self, value: Any) -> Any:
        return value

    def api_info(self) -> dict[str, Any]:
        return {"type": "object", "description": "frame shown: {src: JPEG data URL, digest, seq, nonce, readout}"}

    def example_payload(self) -> Any:
        return None

    def example_value(self) -> Any:
        return None


def frame_value(jpeg: bytes, digest: str | None, seq: int | None, nonce: int, readout: str = "") -> dict[str, Any]:
    return {"src": jpeg_data_url(jpeg), "digest": digest, "seq": seq, "nonce": nonce, "readout": readout}


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
