"""A light drawing canvas for Gradio: a ``gr.HTML`` subclass around a plain ``<canvas>``.

Why not ``gr.Sketchpad``: it exports and uploads background, composite and layers as PNG files on every change,
several times slower from mouse-up to a new image (docs/PERFORMANCE.md, "The app around the model"). This
component keeps everything in the browser and sends one PNG data URL per finished stroke, as the component's value
(a string); nothing is uploaded.

How it works (read from gradio 6.31 ``gradio/components/html.py`` and its frontend ``HTML-*.js``, not copied):

* ``html_template`` is rendered once; it does not mention ``value``, so value updates never re-render (Gradio
  morphs the DOM only when the rendered template string changes) and the drawing is never wiped.
* ``js_on_load`` gets ``element``, ``props`` and ``watch``. Setting ``props.value`` sends the value to the
  server side of the component, and Gradio's HTML wrapper dispatches ``change`` itself on every new value:
  ``trigger('change')`` would fire it twice.
* A value set from Python (an example sketch) reaches ``watch('value', ...)``, which paints it into the canvas as
  an undoable step. Our own ``props.value = ...`` does not come back through ``watch``.

Drawing: pointer events (mouse, pen and touch alike) with pointer capture, ``touch-action: none`` so a finger
draws instead of scrolling the page, coalesced events for fast pens, and strokes smoothed with quadratic curves
through segment midpoints. Two canvases: an off-screen one of fixed resolution (``size`` x ``size``, the model's
frame side) whose PNG is the value, and the visible one, whose backing store follows its CSS size times the
screen's devicePixelRatio (ResizeObserver) so strokes stay sharp on HiDPI screens. Both draw the same strokes in
model coordinates (pointer positions mapped through the element's bounding box), so the PNG the model sees is the
same on a phone and on a 4K monitor. History is a list of actions (stroke, clear, loaded image) replayed on undo
or resize, so undo costs no memory per step beyond the stroke's points.

The Paint tab's canvas (``SketchCanvas.for_paint``: ``palette=True``) paints in colour: swatches
(``settings.PAINT_PALETTE``) and a colour picker (``<input type=color>``) set the brush's colour, a photo button
loads a picture from the device into the canvas as an undoable step (cropped about its centre to the square, never
uploaded as a file), and the eraser paints back the picture underneath (white paper where there is none);
``root.loadPicture(src)`` loads any image the same way (the Paint tab's "Paint over this").

The script is three units (``page_files.component_script``): ``canvas.js`` draws; ``canvas_frames.js`` turns the
strokes into drafts and final frames, through ``frame_client.js``, the request loop the camera shares; the two meet
only at the off-screen canvas and the hooks the drawing calls (a stroke started, moved, ended; a new picture).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from .. import settings
from ..sketches import png_data_url
from .page_files import component_script, page_file

_HTML = """
<div class="sc-root">
  <div class="sc-toolbar">
    <label class="sc-size" title="Brush width in canvas pixels">Brush
      <input type="range" class="sc-brush" min="${min_brush}" max="${max_brush}" step="1" value="${brush}">
    </label>
    <button type="button" class="sc-tool sc-pen sc-active" title="PEN_TITLE">&#9998; Pen</button>
    <button type="button" class="sc-tool sc-eraser" title="Erase (ERASER_WHAT, ${eraser_factor}x brush width)">
      &#9003; Eraser</button>
    <button type="button" class="sc-undo" title="Undo the last stroke (Ctrl+Z)">&#8630; Undo</button>
    <button type="button" class="sc-clear" title="Clear the canvas (undoable)">&#10005; Clear</button>
  </div>PALETTE
  <canvas class="sc-canvas" width="${size}" height="${size}" tabindex="0"
          aria-label="CANVAS_LABEL"></canvas>
</div>
"""
# The Paint canvas's second toolbar row: a swatch per palette colour, the colour picker, the photo button.
_PALETTE = """
  <div class="sc-toolbar sc-palette" role="group" aria-label="Colour">SWATCHES
    <input type="color" class="sc-color" value="COLOR" title="Any colour" aria-label="Any colour">
    <label class="sc-photo" title="Load a photo or picture to paint over (undoable)">&#8679; Photo
      <input type="file" class="sc-photo-file" accept="image/png,image/jpeg,image/webp" hidden></label>
  </div>"""
_SWATCH = ('\n    <button type="button" class="sc-swatch" data-color="{0}" title="{0}" aria-label="colour {0}" '
           'style="background: {0}"></button>')


def canvas_template(palette: tuple[str, ...] = ()) -> str:
    """The component's HTML: the Sketch canvas's (black ink, the eraser paints white paper), or with a ``palette``
    the Paint canvas's (its colours, the colour picker, the photo button; the eraser paints back the picture)."""
    if not palette:
        return (_HTML.replace("PEN_TITLE", "Draw (black ink)").replace("ERASER_WHAT", "paints white paper")
                .replace("PALETTE", "").replace("CANVAS_LABEL", "Drawing canvas: draw with mouse, pen or finger"))
    swatches = "".join(_SWATCH.format(color) for color in palette)
    row = _PALETTE.replace("SWATCHES", swatches).replace("COLOR", settings.DEFAULT_PAINT_COLOR)
    return (_HTML.replace("PEN_TITLE", "Paint in the chosen colour")
            .replace("ERASER_WHAT", "paints back the picture underneath, or white paper")
            .replace("PALETTE", row).replace("CANVAS_LABEL", "Painting canvas: paint with mouse, pen or finger"))


_CSS = page_file("canvas.css")
# The drawing (canvas.js) and its live frames (canvas_frames.js) over the frame client the camera shares.
_JS = component_script("props.js", "frame_client.js", "canvas_frames.js", "canvas.js")


def sketch_value(path: str, size: int) -> str:
    """An image file -> the canvas value for it: drawn on white paper, scaled to fit ``size`` x ``size``."""
    with Image.open(path) as image:
        image.load()
        rgba = image.convert("RGBA")
    paper = Image.new("RGB", (size, size), "white")
    rgba.thumbnail((size, size), Image.Resampling.LANCZOS)
    offset = ((size - rgba.width) // 2, (size - rgba.height) // 2)
    paper.paste(rgba, offset, rgba)
    return png_data_url(paper)


class SketchCanvas(gr.HTML):
    """A drawing canvas whose value is a PNG data URL (white paper, black ink; with ``palette``, colour) of
    ``size`` x ``size`` pixels.

    The value changes once per finished stroke, undo, clear or loaded picture; ``change`` fires then. Set the value
    from Python (a ``data:image/png;base64,...`` string, see ``sketch_value``) to load a sketch into the canvas.

    Frames are shown in the ``LiveImage`` whose elem_id is ``output_id`` (canvas_frames.js says when and how):
    server functions (``server_functions``) named ``draft_frame`` and ``final_frame``, if given, make the drafts and
    the final frames the canvas asks for; ``final`` fires when the canvas asks the queue for a final frame instead
    (a photo's edge map replaces the sketch, or the server function turned it away), with ``{seq, tab}`` as its
    event data. ``palette``: paint in colour (``settings.PAINT_PALETTE``; ``for_paint``, the module docstring).
    """

    EVENTS = [*gr.HTML.EVENTS, "final"]

    @classmethod
    def for_paint(cls, value: str | None = None, **kwargs: Any) -> SketchCanvas:
        """The Paint tab's canvas: colour (the palette, the colour picker), the photo button, an eraser that paints
        back the picture underneath, and a wider brush than the Sketch tab's."""
        return cls(value, palette=True, brush=settings.DEFAULT_PAINT_BRUSH, **kwargs)

    def __init__(self, value: str | None = None, *, size: int = settings.DEFAULT_SIZE,
                 brush: int = settings.DEFAULT_BRUSH, output_id: str = "", palette: bool = False, **kwargs: Any):
        self.palette = bool(palette)
        super().__init__(
            value=value,
            html_template=canvas_template(settings.PAINT_PALETTE if palette else ()),
            css_template=_CSS,
            js_on_load=_JS,
            apply_default_css=False,
            size=int(size),
            brush=int(brush),
            min_brush=settings.MIN_BRUSH,
            max_brush=settings.MAX_BRUSH,
            eraser_factor=settings.ERASER_BRUSH_FACTOR,
            output_id=output_id,
            draft_interval_ms=settings.DRAFT_INTERVAL_MS,
            settle_ms=settings.SETTLE_MS,
            **kwargs,
        )

    def api_info(self) -> dict[str, Any]:
        if self.palette:
            return {"type": "string", "description": "PNG data URL (data:image/png;base64,...) of the painting, in "
                                                     "colour; empty string = white paper"}
        return {"type": "string", "description": "PNG data URL (data:image/png;base64,...) of the sketch: dark "
                                                 "strokes on white; empty string = no sketch"}

    def example_payload(self) -> Any:
        return png_data_url(Image.new("RGB", (settings.MIN_SIZE, settings.MIN_SIZE), "white"))

    def example_value(self) -> Any:
        return self.example_payload()
