"""The named API endpoints (``gradio_client``; ``web.ui`` documents them): ``/sketch_to_image``,
``/text_to_image`` (also the Playground's frames), ``/image_to_image`` and the undocumented ``/engine_stats``.

Each frame answers (JPEG file, latency Markdown); the files are content-addressed JPEGs Gradio serves
(``FrameFiles``). The callers come through Gradio's queue, which bounds them itself, so the engine never refuses
them; a bad value or a fault raises ``gr.Error`` naming it (``handlers.queue_error``).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from .. import inputs, settings
from ..frames import DEFAULT_DECODER, FrameRequest
from . import messages
from .handlers import FrameMaker, encode_frame, queue_error

FRAME_FILES_KEPT = 256  # JPEGs kept in our own folder; Gradio copies each into its cache before we drop it


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


class ApiHandlers:
    """The API's endpoints around one ``FrameMaker``. Their parameter names and order are the API's."""

    def __init__(self, maker: FrameMaker):
        self.maker = maker
        self.files = FrameFiles()

    def _served(self, build: Callable[[], FrameRequest]) -> tuple[str, str]:
        """The frame of ``build()``'s request as the API answers it: (JPEG file, latency Markdown)."""
        try:
            frame = self.maker.render(build)
        except Exception as error:  # a message naming the value or the fault; the server keeps serving
            raise queue_error(error) from None
        return self.files.write(frame.image), messages.readout(frame, markdown=True)

    def sketch_to_image(self, sketch: str, prompt: str, steps: int, seed: int, guidance_scale: float,
                        control_strength: float, thickness: int, decoder: str = DEFAULT_DECODER,
                        style: str = settings.DEFAULT_STYLE,
                        style_scale: float = settings.DEFAULT_STYLE_SCALE) -> tuple[str, str]:
        """``/sketch_to_image``: a sketch (PNG data URL, "" for none) steering the engine's square frame."""
        size = (self.maker.size, self.maker.size)
        return self._served(lambda: inputs.sketch_request(
            sketch or None, prompt, steps, seed, guidance_scale, control_strength, thickness, size, decoder=decoder,
            style=style, style_scale=style_scale))

    def text_to_image(self, prompt: str, steps: int, seed: int, guidance_scale: float, width: int, height: int,
                      decoder: str = DEFAULT_DECODER, style: str = settings.DEFAULT_STYLE,
                      style_scale: float = settings.DEFAULT_STYLE_SCALE, prompt_b: str = "",
                      blend: float = settings.DEFAULT_BLEND, seed_b: int | None = None,
                      seed_blend: float = settings.DEFAULT_BLEND) -> tuple[str, str]:
        """``/text_to_image`` and the Playground; ``prompt_b`` / ``blend``, ``seed_b`` / ``seed_blend``: prompt and
        seed travel (none by default)."""
        return self._served(lambda: inputs.text_request(prompt, steps, seed, guidance_scale, width, height, decoder,
                                                        style, style_scale, prompt_b, blend, seed_b, seed_blend))

    def image_to_image(self, image: str, prompt: str, strength: float, steps: int, seed: int, guidance_scale: float,
                       decoder: str = DEFAULT_DECODER, style: str = settings.DEFAULT_STYLE,
                       style_scale: float = settings.DEFAULT_STYLE_SCALE) -> tuple[str, str]:
        """``/image_to_image``: a picture (PNG / JPEG / WebP data URL) redrawn at ``strength``; the frame keeps its
        aspect ratio (``inputs.fit_size``)."""
        return self._served(lambda: inputs.image_request(
            image or None, prompt, strength, steps, seed, guidance_scale, self.maker.size, decoder, style=style,
            style_scale=style_scale))

    def engine_stats(self) -> dict[str, dict[str, int]]:
        """``/engine_stats`` (undocumented): ``{"batches": {rows: batches made with that many rows}, "frames":
        {"made", "reused", "skipped": frames}}`` since the warm-up (all replicas together), read by the load test
        and the camera bench (``FrameSource.frame_counts``)."""
        engine = self.maker.engine
        return {"batches": {str(rows): count for rows, count in sorted(engine.batch_sizes.items())},
                "frames": dict(engine.frame_counts)}
