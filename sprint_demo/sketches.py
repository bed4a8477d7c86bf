"""Sketch images in code: a deterministic stroke drawing, and the PNG data URL the canvas sends.

The benchmark, the load test and the tests all draw their sketches with ``stroke_sketch`` and send them with
``png_data_url``, so every tool feeds the engine the same kind of input the browser canvas does.
"""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw


def png_data_url(image: Image.Image) -> str:
    """A PIL image -> ``data:image/png;base64,...`` (the canvas value format)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def stroke_sketch(size: int, strokes: int) -> Image.Image:
    """A white ``size`` x ``size`` canvas with ``strokes`` deterministic black strokes.

    Stroke ``i`` is the same line whatever the total, so ``stroke_sketch(s, n + 1)`` is ``stroke_sketch(s, n)``
    plus one stroke, as when a user draws one more line; ``strokes=0`` is blank paper.
    """
    canvas = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(strokes):
        a = (i * 97) % size, (i * 193 + size // 3) % size
        b = (i * 151 + size // 2) % size, (i * 61) % size
        draw.line([a, b], fill="black", width=max(3, size // 128))
    return canvas
