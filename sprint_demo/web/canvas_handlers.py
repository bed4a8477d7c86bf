"""The Sketch and Paint canvases' frames: their server functions, and the frames the queue makes for them.

* **Server functions** ``draft_frame`` / ``final_frame`` (one HTTP POST answered with the frame, no queue):
  ``{png, inputs: {name: value for name in <the tab's inputs>}, seq, tab}`` (and ``decoder`` for a final) ->
  ``live.frame_value`` (``{src, digest, seq, nonce, readout}``), or ``{seq, dropped: true}`` when a newer frame of
  the tab took its place, ``{seq, busy: true}`` when too many tabs wait, ``{seq, error}``. The tab is the engine
  session: one frame waiting per tab, the newest; drafts at draft priority and ``settings.DRAFT_STEPS`` steps,
  finals before them at the tab's steps, a final stopping the tab's draft in flight. The Sketch tab's inputs are
  ``SKETCH_INPUTS`` (its sketch steers through the ControlNet), the Paint tab's ``PAINT_INPUTS`` (its painting is
  redrawn by image-to-image).
* **Queue events** (Gradio's queue, ``trigger_mode="always_last"``): a tab's final frame (``sketch_final`` at page
  load, ``paint_final`` when the tab opens, and both when the canvas asks the queue for a final its server function
  could not make: its ``final`` event, ``FinalAsked``), and the Sketch tab's photo (``photo_frame``).

The Sketch tab's photo replaces the sketch: its edge map steers the frame, or, restyled, the photo itself is
redrawn by image-to-image, its edges steering (``Photo``, held in the tab's state). A photo's frame runs at the
photo's own aspect ratio (``inputs.fit_size``), as NVlabs runs one; while the classical Canny detector stands in
for HED with a real model, every frame a photo's edges steer says so (``messages.edges_note``), and so does the
photo's edge map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from .. import inputs, settings
from ..frames import DEFAULT_DECODER, Frame, Priority, Superseded
from . import messages
from .handlers import SESSION_CHARS, FrameMaker, named_values, queue_error, request_seq, request_shape, server_answer
from .live import picture_digest

# The Sketch tab's frame inputs, by the names ``inputs.sketch_request`` takes them: the canvas sends them under these
# names and the page's components are wired in this order.
SKETCH_INPUTS = ("prompt", "steps", "seed", "guidance_scale", "control_strength", "thickness")
# The Paint tab's, by the names ``inputs.image_request`` takes them (``edges``: the painting's dark lines also steer
# the ControlNet).
PAINT_INPUTS = ("prompt", "strength", "steps", "seed", "guidance_scale", "edges", "control_strength")
CANVAS_INPUTS = {"sketch": SKETCH_INPUTS, "paint": PAINT_INPUTS}


class FinalAsked(gr.EventData):
    """The data of a canvas tab's queued final: the canvas's ``final`` event asks for the final frame of request
    ``seq`` of tab ``tab``; the tab's other triggers (page load, the tab opened) carry neither."""

    def __init__(self, target: Any, data: Any):
        super().__init__(target, data)
        data = data if isinstance(data, dict) else {}
        self.seq: int | None = data["seq"] if isinstance(data.get("seq"), int) else None
        self.tab: str | None = str(data["tab"])[:SESSION_CHARS] if data.get("tab") else None


@dataclass(frozen=True)
class Photo:
    """The Sketch tab's photo as its frames take it (held in the tab's state): its edge map at the photo's frame
    size (``inputs.fit_size``, long side the engine's), and, when it is restyled, the photo itself at that size
    and the strength it is redrawn at."""

    edge_map: Image.Image
    picture: Image.Image | None = None  # None: the edges alone steer a text-to-image frame
    strength: float = 1.0


class CanvasHandlers:
    """The frames of the Sketch and Paint tabs."""

    def __init__(self, maker: FrameMaker):
        self.maker = maker
        # Drafts ask for the tiny decoder only where the engine has one; else they are full frames, sent smaller.
        self.draft_decoder = settings.DRAFT_DECODER if maker.engine.has_tiny_decoder else DEFAULT_DECODER

    # --- a tab's frame ----------------------------------------------------------------------------------------------

    def sketch_frame(self, picture: Image.Image | None, values: dict[str, Any], *, decoder: str,
                     session: str | None = None, priority: Priority = Priority.FINAL,
                     refusable: bool = False) -> Frame:
        """The Sketch tab's frame of ``picture`` (its sketch) with the tab's ``values`` (``SKETCH_INPUTS``)."""
        size = (self.maker.size, self.maker.size)
        return self.maker.render(lambda: inputs.sketch_request(picture, **values, size=size, decoder=decoder),
                                 session=session, priority=priority, refusable=refusable)

    def paint_frame(self, picture: Image.Image | None, values: dict[str, Any], *, decoder: str,
                    session: str | None = None, priority: Priority = Priority.FINAL,
                    refusable: bool = False) -> Frame:
        """The Paint tab's frame: ``picture`` (its painting) redrawn with the tab's ``values`` (``PAINT_INPUTS``)."""
        return self.maker.render(
            lambda: inputs.image_request(picture, **values, long_side=self.maker.size, decoder=decoder),
            session=session, priority=priority, refusable=refusable)

    def frame_of_photo(self, photo: Photo, values: dict[str, Any], decoder: str,
                       session: str | None) -> tuple[Frame, tuple[str, ...]]:
        """The Sketch tab's frame of its ``photo`` with the tab's ``values`` (``SKETCH_INPUTS``; the edge map was
        made at the tab's thickness), at the photo's size, and the notes its readout adds."""
        edge_map = photo.edge_map
        if photo.picture is None:
            frame = self.maker.render(lambda: inputs.sketch_request(
                None, **values, size=edge_map.size, control_map=edge_map, decoder=decoder), session=session)
            return frame, (*self.maker.edges_notes(), messages.PHOTO_EDGES_NOTE)
        frame = self.maker.render(lambda: inputs.image_request(
            photo.picture, **values, strength=photo.strength, long_side=self.maker.size, decoder=decoder,
            control_map=edge_map), session=session)
        return frame, (*self.maker.edges_notes(), messages.PHOTO_RESTYLE_NOTE)

    # --- the canvases' server functions (never raise) ---------------------------------------------------------------

    def server_functions(self, tab_kind: str) -> list[Callable[[dict], dict]]:
        """The ``draft_frame`` and ``final_frame`` server functions of the canvas of ``tab_kind`` ("sketch" or
        "paint"), as plain functions (Gradio marks its server functions with an attribute, which a bound method
        cannot carry), for the canvas's ``server_functions``."""

        def draft_frame(request: dict) -> dict:
            return self.server_frame(request, final=False, tab_kind=tab_kind)

        def final_frame(request: dict) -> dict:
            return self.server_frame(request, final=True, tab_kind=tab_kind)

        return [draft_frame, final_frame]

    def server_frame(self, request: dict, final: bool, tab_kind: str) -> dict:
        """A frame a canvas asked for (the module docstring). The canvas asks the queue for a final frame this
        could not make, and the queue shows the error."""
        names = CANVAS_INPUTS[tab_kind]
        make = self.sketch_frame if tab_kind == "sketch" else self.paint_frame
        try:
            with request_shape("canvas frame request", f"{{png, inputs: {{{', '.join(names)}}}, seq, tab}}"):
                seq, tab = int(request["seq"]), str(request["tab"])[:SESSION_CHARS]
                values = named_values(request, names)
                picture = inputs.decode_image(request["png"], what=tab_kind)
                decoder = (request.get("decoder") or DEFAULT_DECODER) if final else self.draft_decoder
            if not final:  # drafts keep up with the pen: one step whatever the Steps control says (settings)
                values = values | {"steps": settings.DRAFT_STEPS}
            frame = make(picture, values, decoder=decoder, session=tab, refusable=True,
                         priority=Priority.FINAL if final else Priority.DRAFT)
        except Exception as error:  # every failure is an answer: the server keeps serving
            return server_answer(error, seq=request_seq(request))
        quality = settings.JPEG_QUALITY if final else settings.DRAFT_JPEG_QUALITY
        return self.maker.live_value(frame, picture_digest(picture), seq, messages.readout(frame), quality)

    # --- queue events -----------------------------------------------------------------------------------------------

    def sketch_final(self, sketch: str, prompt: str, steps: int, seed: int, guidance_scale: float,
                     control_strength: float, thickness: int, photo: Photo | None, decoder: str,
                     event: FinalAsked, style: str = settings.DEFAULT_STYLE,
                     style_scale: float = settings.DEFAULT_STYLE_SCALE) -> dict:
        """The Sketch tab's final frame through the queue (page load, the canvas's ``final`` event): the photo's
        when there is one, else the sketch's. As the tab's session, it replaces the tab's waiting frame."""
        values = dict(zip(SKETCH_INPUTS, (prompt, steps, seed, guidance_scale, control_strength, thickness)))
        values |= {"style": style, "style_scale": style_scale}
        return self._sketch_tab_final(sketch, values, photo, decoder, event.tab, event.seq)

    def photo_frame(self, upload: Image.Image | None, thickness: int, sketch: str, prompt: str, steps: int, seed: int,
                    guidance_scale: float, control_strength: float, decoder: str,
                    restyle: bool = settings.DEFAULT_PHOTO_RESTYLE,
                    photo_strength: float = settings.DEFAULT_RESTYLE_STRENGTH, style: str = settings.DEFAULT_STYLE,
                    style_scale: float = settings.DEFAULT_STYLE_SCALE) -> Iterator[tuple]:
        """A photo uploaded (or cleared, or the thickness, the restyle switch or its strength moved with a photo
        in): its edge map (``Photo``), shown as soon as it is made (labelled with ``messages.edges_note`` when there
        is one), then the frame it steers, in the same event (no round trip through the browser). Yields (edge map
        shown, the tab's photo state, frame). ``restyle``: the photo itself is redrawn at ``photo_strength``."""
        try:
            photo = None if upload is None else self.read_photo(upload, thickness, photo_strength if restyle else None)
        except Exception as error:  # a bad upload or a fault of the edge detector: a message
            raise queue_error(error) from None
        note = None if photo is None else messages.edges_note(self.maker.engine)
        shown = None if photo is None else photo.edge_map
        yield gr.update(value=shown, label=messages.edge_map_label(note)), photo, gr.skip()
        values = dict(zip(SKETCH_INPUTS, (prompt, steps, seed, guidance_scale, control_strength, thickness)))
        values |= {"style": style, "style_scale": style_scale}
        yield gr.skip(), gr.skip(), self._sketch_tab_final(sketch, values, photo, decoder, None, None)

    def read_photo(self, upload: Image.Image, thickness: object, strength: object | None) -> Photo:
        """The Sketch tab's ``upload`` at its frame size with its edge map at that size; ``strength``: restyled at
        that strength (None: its edges alone)."""
        strength = None if strength is None else inputs.check_strength(strength)
        picture = inputs.fit_picture(inputs.decode_image(upload, what="photo"), self.maker.size)
        edge_map = self.maker.edge_map(picture, thickness, picture.size)
        return Photo(edge_map) if strength is None else Photo(edge_map, picture, strength)

    def paint_final(self, painting: str, prompt: str, strength: float, steps: int, seed: int, guidance_scale: float,
                    edges: bool, control_strength: float, decoder: str, event: FinalAsked,
                    style: str = settings.DEFAULT_STYLE, style_scale: float = settings.DEFAULT_STYLE_SCALE) -> dict:
        """The Paint tab's final frame through the queue (the tab opened, the canvas's ``final`` event): the
        painting (white paper while the canvas has none) redrawn. As the tab's session, it replaces the tab's
        waiting frame."""
        values = dict(zip(PAINT_INPUTS, (prompt, strength, steps, seed, guidance_scale, edges, control_strength)))
        values |= {"style": style, "style_scale": style_scale}
        try:
            picture = inputs.decode_image(painting or None, what="paint")
            picture = picture or Image.new("RGB", (self.maker.size, self.maker.size), "white")
            frame = self.paint_frame(picture, values, decoder=decoder, session=event.tab)
        except Superseded:  # a newer frame of the tab is on its way
            return gr.skip()
        except Exception as error:  # a message for the user; the server keeps serving
            raise queue_error(error) from None
        return self.maker.live_value(frame, picture_digest(picture), event.seq, messages.readout(frame))

    def _sketch_tab_final(self, sketch: str, values: dict[str, Any], photo: Photo | None, decoder: str,
                          tab: str | None, seq: int | None) -> dict:
        """The Sketch tab's final frame through the queue, as the tab's session ``tab`` (None: none) answering
        request ``seq``: its ``photo``'s when there is one, else its ``sketch``'s."""
        picture, notes = None, ()
        try:
            if photo is None:
                picture = inputs.decode_image(sketch or None, what="sketch")
                frame = self.sketch_frame(picture, values, decoder=decoder, session=tab)
            else:
                frame, notes = self.frame_of_photo(photo, values, decoder, tab)
        except Superseded:  # a newer frame of the tab is on its way
            return gr.skip()
        except Exception as error:  # a message for the user; the server keeps serving
            raise queue_error(error) from None
        return self.maker.live_value(frame, picture_digest(picture), seq, messages.readout(frame, notes))
