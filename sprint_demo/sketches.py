"""Sketch images in code: a deterministic stroke drawing (and a coloured painting), and the PNG data URL the canvas
sends.

The benchmark, the load test and the tests all draw their sketches with ``stroke_sketch`` (paintings with
``stroke_painting``) and send them with ``png_data_url``, so every tool feeds the engine the same kind of input the
browser canvas does.
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
        draw.line(_stroke_ends(size, i), fill="black", width=max(3, size // 128))
    return canvas


def _stroke_ends(size: int, i: int) -> list[tuple[int, int]]:
    """Where stroke ``i`` of a ``size`` x ``size`` drawing starts and ends (the same whatever the total)."""
    return [((i * 97) % size, (i * 193 + size // 3) % size), ((i * 151 + size // 2) % size, (i * 61) % size)]


PAINT_COLOURS = ((229, 57, 53), (30, 136, 229), (253, 216, 53), (67, 160, 71), (142, 36, 170), (251, 140, 0))


def stroke_painting(size: int, strokes: int) -> Image.Image:
    """A ``size`` x ``size`` painting, as the Paint canvas makes one: a sky, a field and a sun in flat colour, then
    ``strokes`` deterministic wide strokes in the colours of ``PAINT_COLOURS``. As with ``stroke_sketch``, stroke
    ``i`` is the same whatever the total, so each added stroke is a new painting one stroke further on."""
    canvas = Image.new("RGB", (size, size), (135, 190, 235))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, size * 2 // 3, size, size], fill=(90, 160, 70))
    draw.ellipse([size * 3 // 5, size // 10, size * 4 // 5, size * 3 // 10], fill=(250, 210, 60))
    for i in range(strokes):
        draw.line(_stroke_ends(size, i), fill=PAINT_COLOURS[i % len(PAINT_COLOURS)], width=max(6, size // 40))
    return canvas
