"""The Paint tab (a colour canvas redrawn by image-to-image) and the Sketch tab's photo restyle.

Browser tests drive Debian's chromium (Playwright, real mouse input) against the app on the preview engine; they
fail (never skip) without /usr/bin/chromium and assert no timings. As in tests/test_live_drawing.py, every frame
names (``digest``) the canvas picture it drew, so a frame is checked against the colour PNG the canvas holds; the
final frame is compared with ``/image_to_image`` called through ``gradio_client`` for that PNG and the tab's values
(the same engine frame through the same JPEG encoder: exact).

The handler tests call ``CanvasHandlers`` (and a camera frame ``CameraHandlers``) as the page's events do: the
Paint canvas's server functions and its queue path, and the Sketch tab's photo with "Restyle the photo" on (the
image-to-image frame of the photo, its edges steering) and off (the edge-map frame).
"""

from __future__ import annotations

import io
import sys
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as helpers  # noqa: E402  (tests/browser.py)
import support  # noqa: E402  (tests/support.py)

from sprint_demo import inputs, settings  # noqa: E402
from sprint_demo.inputs import decode_image  # noqa: E402
from sprint_demo.sketches import png_data_url, stroke_painting  # noqa: E402
from sprint_demo.web import messages  # noqa: E402
from sprint_demo.web.camera_handlers import CAMERA_INPUTS, CameraHandlers  # noqa: E402
from sprint_demo.web.canvas import SketchCanvas  # noqa: E402
from sprint_demo.web.canvas_handlers import (  # noqa: E402
    PAINT_INPUTS,
    SKETCH_INPUTS,
    CanvasHandlers,
    FinalAsked,
    Photo,
)
from sprint_demo.web.handlers import FrameMaker  # noqa: E402
from sprint_demo.web.live import encode_jpeg, picture_digest  # noqa: E402

PAINT = "#paint canvas"
PHOTO = support.REPO / "assets" / "example_photo.jpg"  # 1024 x 768
RED = "#e53935"  # a palette swatch (settings.PAINT_PALETTE)
DRAFTS_WANTED = 2


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _served(image: Image.Image, quality: int = settings.JPEG_QUALITY) -> np.ndarray:
    """The pixels a frame has once served: the app's JPEG of it, decoded."""
    with Image.open(io.BytesIO(encode_jpeg(image, quality))) as decoded:
        return _pixels(decoded)


def _near(pixels: np.ndarray, colour: str, levels: int = 40) -> int:
    """How many pixels lie within ``levels`` of ``colour`` ("#rrggbb") in every channel."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(pixels - rgb).max(axis=-1) <= levels).sum())


# --- The Paint canvas's frames, without a browser --------------------------------------------------------
def _handlers(engine) -> CanvasHandlers:
    return CanvasHandlers(FrameMaker(engine))


def _canvases(engine) -> dict[str, SketchCanvas]:
    from sprint_demo.web.ui import create_demo

    demo = create_demo(engine)
    return {block.elem_id: block for block in demo.blocks.values() if isinstance(block, SketchCanvas)}


def test_the_paint_canvas_is_the_sketch_canvas_with_a_palette():
    canvases = _canvases(support.preview_engine())
    assert set(canvases) == {"sketch", "paint"}
    paint, sketch = canvases["paint"], canvases["sketch"]
    assert paint.palette and not sketch.palette
    assert all(f'data-color="{colour}"' in paint.html_template for colour in settings.PAINT_PALETTE)
    assert 'type="color"' in paint.html_template and 'type="file"' in paint.html_template
    assert "sc-color" not in sketch.html_template and "sc-photo" not in sketch.html_template
    assert paint.js_on_load == sketch.js_on_load  # one script (canvas.js and its frames, canvas_frames.js)


def test_paint_server_functions_redraw_the_painting_and_name_the_picture_they_drew():
    engine = support.preview_engine()
    paint = _canvases(engine)["paint"]
    painting = stroke_painting(engine.size, 4)
    png = png_data_url(painting)
    values = dict(zip(PAINT_INPUTS, ["a harbour", 0.5, 1, 7, settings.DEFAULT_GUIDANCE, False, 1.0]))
    final = paint.final_frame({"png": png, "inputs": values, "decoder": "full", "seq": 3, "tab": "p"})
    expected = support.image_frame(engine, painting, "a harbour", strength=0.5, steps=1, seed=7)
    assert np.array_equal(helpers.data_url_pixels(final["src"]), _served(expected.image))
    assert final["seq"] == 3 and final["digest"] == picture_digest(painting)
    assert "strength 0.5" in final["readout"] and "image_encode" in final["readout"]

    draft = paint.draft_frame({"png": png, "inputs": values, "seq": 4, "tab": "p"})
    decoder = settings.DRAFT_DECODER if engine.has_tiny_decoder else "full"
    expected = support.image_frame(engine, painting, "a harbour", strength=0.5, steps=1, seed=7, decoder=decoder)
    assert np.array_equal(helpers.data_url_pixels(draft["src"]), _served(expected.image, settings.DRAFT_JPEG_QUALITY))

    edges = paint.final_frame({"png": png, "inputs": values | {"edges": True}, "seq": 5, "tab": "p"})
    expected = support.image_frame(engine, painting, "a harbour", strength=0.5, steps=1, seed=7, edges=True)
    assert np.array_equal(helpers.data_url_pixels(edges["src"]), _served(expected.image))
    assert "control_encode" in edges["readout"] and "control_encode" not in final["readout"]

    assert "strength" in paint.final_frame({"png": png, "inputs": values | {"strength": 0}, "seq": 6,
                                            "tab": "p"})["error"]
    sketch_values = dict(zip(SKETCH_INPUTS, ["a cat", 1, 7, settings.DEFAULT_GUIDANCE, 1.0, 2]))
    refused = paint.final_frame({"png": png, "inputs": sketch_values, "seq": 7, "tab": "p"})
    assert f"inputs: {{{', '.join(PAINT_INPUTS)}}}" in refused["error"]
    assert "src" in paint.final_frame({"png": png, "inputs": values, "seq": 8, "tab": "p"})  # still serving


def test_the_queue_s_paint_final_redraws_white_paper_while_the_canvas_is_empty():
    engine = support.preview_engine()
    handlers = _handlers(engine)
    value = handlers.paint_final("", "a cat", 0.6, 1, 3, settings.DEFAULT_GUIDANCE, False, 1.0, "full",
                                 FinalAsked(None, {"seq": 2, "tab": "q"}))
    paper = Image.new("RGB", (engine.size, engine.size), "white")
    expected = support.image_frame(engine, paper, "a cat", strength=0.6, steps=1, seed=3)
    assert np.array_equal(helpers.data_url_pixels(value["src"]), _served(expected.image))
    assert value["seq"] == 2 and value["digest"] == picture_digest(paper)
    with pytest.raises(gr.Error, match="paint"):
        handlers.paint_final("data:image/png;base64,bm90IGFuIGltYWdl", "a cat", 0.6, 1, 3, 4.5, False, 1.0, "full",
                             FinalAsked(None, None))


# --- The Sketch tab's photo restyle, without a browser ---------------------------------------------------
def test_the_sketch_tab_s_photo_restyle_is_the_photo_s_image_to_image_frame_and_off_its_edge_map_frame():
    engine = support.preview_engine()
    handlers = _handlers(engine)
    with Image.open(PHOTO) as image:
        photo = image.convert("RGB")
    tab = ("", "a lighthouse", 1, 5, settings.DEFAULT_GUIDANCE, 0.8, "full")  # sketch, prompt ... decoder
    thickness = 2

    (shown, state, _), (_, _, value) = handlers.photo_frame(photo, thickness, *tab, restyle=True, photo_strength=0.5)
    assert isinstance(state, Photo) and state.strength == 0.5
    width, height = inputs.fit_size(*photo.size, engine.size)
    assert state.picture.size == state.edge_map.size == (width, height) and height < width  # aspect kept
    # the tab shows the map the frame takes (the preview model: no word about the edge detector)
    assert shown["value"] is state.edge_map and shown["label"] == messages.EDGE_MAP_LABEL
    edge_map = engine.photo_to_control_map(photo, thickness)  # the photo's own frame: the same map
    assert edge_map.size == (width, height) and np.array_equal(_pixels(state.edge_map), _pixels(edge_map))
    assert _pixels(state.edge_map).max() == 255

    def restyled(prompt: str) -> np.ndarray:
        request = inputs.image_request(photo, prompt, 0.5, 1, 5, settings.DEFAULT_GUIDANCE, engine.size,
                                       control_strength=0.8, control_map=state.edge_map)
        assert request.control_map is not None and request.init_image is not None and request.strength == 0.5
        return _served(engine.render(request).image)

    assert np.array_equal(helpers.data_url_pixels(value["src"]), restyled("a lighthouse"))
    assert "strength 0.5" in value["readout"] and "restyling the uploaded photo" in value["readout"]
    # a prompt typed with the photo restyled: the canvas asks the queue (sketch_final, with the tab's state)
    again = handlers.sketch_final("", "a castle", 1, 5, settings.DEFAULT_GUIDANCE, 0.8, thickness, state, "full",
                                  FinalAsked(None, {"seq": 9, "tab": "t"}))
    assert again["seq"] == 9 and np.array_equal(helpers.data_url_pixels(again["src"]), restyled("a castle"))

    # off (the default): the photo's edge map steers the sketch's frame
    (shown_off, state_off, _), (_, _, value_off) = handlers.photo_frame(photo, thickness, *tab)
    assert state_off.picture is None and shown_off["value"] is state_off.edge_map
    assert np.array_equal(_pixels(state_off.edge_map), _pixels(edge_map))
    expected = support.sketch_frame(engine, None, "a lighthouse", 1, 5, settings.DEFAULT_GUIDANCE, 0.8, thickness,
                                    control_map=edge_map, size=edge_map.size)
    assert expected.image.size == (width, height)  # the edge-map frame runs at the photo's aspect ratio too
    assert np.array_equal(helpers.data_url_pixels(value_off["src"]), _served(expected.image))
    assert "strength" not in value_off["readout"] and "edge map" in value_off["readout"]
    again_off = handlers.sketch_final("", "a lighthouse", 1, 5, settings.DEFAULT_GUIDANCE, 0.8, thickness, state_off,
                                      "full", FinalAsked(None, {"seq": 10, "tab": "t"}))
    assert again_off["seq"] == 10 and np.array_equal(helpers.data_url_pixels(again_off["src"]),
                                                     helpers.data_url_pixels(value_off["src"]))

    with pytest.raises(gr.Error, match="strength"):
        list(handlers.photo_frame(photo, thickness, *tab, restyle=True, photo_strength=0))


def test_a_photo_s_frames_say_when_canny_stands_in_for_hed(monkeypatch):
    """A model other than the preview with the classical detector making the photo's edges: the edge map's label
    and the readout of every frame the photo steers (edges alone, restyled, and a camera frame in edges mode) say
    that Canny stands in for HED; the preview model's say nothing of it."""
    from dataclasses import replace

    from sprint_demo import conditioning
    from sprint_demo.engine import Engine
    from sprint_demo.models.loading import load_pipeline

    monkeypatch.setattr(conditioning, "_load_hed", lambda: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.setattr(conditioning, "_detectors", {})
    engine = Engine(replace(load_pipeline("preview", device="cpu"), model_name="/weights/sprint"))
    engine.renderer.use_resolution_binning = False  # the preview's transformer has no aspect bins
    maker = FrameMaker(engine)
    handlers, camera_handlers = CanvasHandlers(maker), CameraHandlers(maker)
    with Image.open(PHOTO) as image:
        photo = image.convert("RGB")
    tab = ("", "a lighthouse", 1, 5, settings.DEFAULT_GUIDANCE, 0.8, "full")
    try:
        (shown, _, _), (_, _, value) = handlers.photo_frame(photo, 2, *tab)
        note = messages.edges_note(engine)
        assert note is not None and "not HED" in note and "offline" in note
        assert note in shown["label"] and shown["label"].startswith(messages.EDGE_MAP_LABEL)
        assert note in value["readout"]
        (_, _, _), (_, _, restyled) = handlers.photo_frame(photo, 2, *tab, restyle=True, photo_strength=0.5)
        assert note in restyled["readout"]
        camera = dict(zip(CAMERA_INPUTS, ("a lighthouse", "edges", 0.5, 1, 5, settings.DEFAULT_GUIDANCE, 0.8,
                                          "full", settings.DEFAULT_STEADINESS)))
        frame = camera_handlers.frame({"image": png_data_url(photo.resize((512, 384))), "inputs": camera, "seq": 1,
                                       "session": "s", "captured_at": 0})
        assert note in frame["readout"]
        drawn = handlers.sketch_final(png_data_url(stroke_painting(engine.size, 3)), *tab[1:6], 2, None, "full",
                                      FinalAsked(None, None))
        assert note not in drawn["readout"]  # a sketch's own map: no detector involved
    finally:
        engine.close()
    preview = _handlers(support.preview_engine())
    (shown, _, _), (_, _, value) = preview.photo_frame(photo, 2, *tab)
    assert shown["label"] == messages.EDGE_MAP_LABEL and "Canny" not in value["readout"]


# --- The Paint tab in a browser --------------------------------------------------------------------------
@contextmanager
def _paint_page(chromium, url: str, **context_options):
    """The app with the Paint tab open and its first frame shown; the probe copies the canvas with each draft."""
    with helpers.app_page(chromium, url, sample=True, **context_options) as page:
        helpers.open_paint_tab(page)
        yield page


def _api_frame(url: str, painting: str, strength: float) -> np.ndarray:
    """``/image_to_image`` for ``painting`` with the Paint tab's other defaults (the JPEG file's pixels)."""
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False)
    try:
        path, _latency = client.predict(image=painting, prompt="", strength=strength, api_name="/image_to_image")
    finally:
        client.close()
    with Image.open(path) as image:
        return _pixels(image)


@pytest.mark.browser
@pytest.mark.slow
def test_a_coloured_stroke_gives_drafts_then_the_final_frame_of_the_coloured_painting(chromium, live_app):
    url, _engine, _demo = live_app
    with _paint_page(chromium, url) as page:
        page.locator(f"#paint .sc-swatch[data-color='{RED}']").click()
        shown_while_drawing = helpers.slow_stroke(page, PAINT, drafts_wanted=DRAFTS_WANTED)
        last_draft_seq = page.evaluate("() => Math.max(0, ...window.__probe.drafts.map((d) => d.seq))")
        final = helpers.wait_final_after(page, last_draft_seq)
        helpers.wait_idle(page, "paint_output")
        probe = page.evaluate("() => window.__probe")
        canvas = helpers.canvas_data_url(page, PAINT)
        shown_src = helpers.output_src(page, "paint_output")
        readout = page.inner_text("#paint_latency")
        live_line = page.inner_text("#paint_output .lv-live")

    assert shown_while_drawing >= DRAFTS_WANTED
    picture = decode_image(canvas)
    assert _near(_pixels(picture), RED) > 500, "the canvas holds no red stroke"
    assert final["digest"] == picture_digest(picture)  # the server decoded these very colour pixels
    sent = {d["seq"]: picture_digest(decode_image(d["png"])) for d in probe["drafts"]}
    drafts = [f for f in probe["frames"] if f["kind"] == "draft"]
    assert drafts and all(sent.get(f["seq"]) == f["digest"] for f in drafts), "a draft drew another canvas"
    assert len({f["digest"] for f in drafts}) >= 2, "the drafts did not follow the stroke"
    assert f"strength {settings.DEFAULT_PAINT_STRENGTH:g}" in readout and "frames/s" in live_line
    assert np.array_equal(helpers.data_url_pixels(shown_src), _api_frame(url, canvas, settings.DEFAULT_PAINT_STRENGTH))


@pytest.mark.browser
@pytest.mark.slow
def test_the_strength_slider_redraws_the_painting_at_its_new_strength(chromium, live_app):
    url, _engine, _demo = live_app
    with _paint_page(chromium, url) as page:
        helpers.draw_stroke(page, [(0.2, 0.3), (0.5, 0.6), (0.8, 0.4)], canvas=PAINT)
        before = helpers.wait_idle(page, "paint_output")
        page.locator("#paint_strength input[type=range]").focus()
        for _ in range(2):  # two steps up, by keyboard
            page.keyboard.press("ArrowRight")
        helpers.wait_new_image(page, before, "paint_output")
        after = helpers.wait_idle(page, "paint_output")
        strength = float(page.locator("#paint_strength input[type=number]").input_value())
        readout = page.inner_text("#paint_latency")
        canvas = helpers.canvas_data_url(page, PAINT)

    assert strength == pytest.approx(settings.DEFAULT_PAINT_STRENGTH + 2 * settings.STRENGTH_STEP)
    assert f"strength {strength:g}" in readout
    shown = helpers.data_url_pixels(after)
    assert np.abs(shown - helpers.data_url_pixels(before)).mean() > 1.0
    assert np.array_equal(shown, _api_frame(url, canvas, strength))


@pytest.mark.browser
@pytest.mark.slow
def test_paint_over_this_loads_the_frame_on_show_into_the_canvas_as_an_undoable_step(chromium, live_app):
    url, _engine, _demo = live_app
    with _paint_page(chromium, url) as page:
        helpers.draw_stroke(page, [(0.1, 0.2), (0.6, 0.7), (0.9, 0.2)], canvas=PAINT)
        src = helpers.wait_idle(page, "paint_output")
        painted = helpers.canvas_data_url(page, PAINT)
        saved = page.locator("#paint_output .lv-save").get_attribute("href")  # what the download button saves
        page.evaluate("() => { window.__probe.frames = []; }")
        page.locator("#paint_over").click()
        helpers.wait_new_image(page, src, "paint_output")
        helpers.wait_idle(page, "paint_output")
        loaded = helpers.canvas_data_url(page, PAINT)
        frames = page.evaluate("() => window.__probe.frames")
        page.locator("#paint .sc-undo").click()
        undone = helpers.canvas_data_url(page, PAINT)

    assert saved == src
    difference = np.abs(_pixels(decode_image(loaded)) - helpers.data_url_pixels(saved))
    assert difference.mean() < 1.0, f"the canvas is not the frame: mean |diff| {difference.mean():.2f}"
    assert frames[-1]["kind"] == "final" and frames[-1]["digest"] == picture_digest(decode_image(loaded))
    assert undone == painted


@pytest.mark.browser
@pytest.mark.slow
def test_a_photo_loads_as_the_background_and_the_eraser_paints_it_back(chromium, live_app):
    url, engine, _demo = live_app
    stroke = [(0.2, 0.5), (0.5, 0.55), (0.8, 0.5)]
    with _paint_page(chromium, url) as page:
        src = helpers.output_src(page, "paint_output")
        page.locator("#paint .sc-photo-file").set_input_files(str(PHOTO))
        src = helpers.wait_new_image(page, src, "paint_output")
        with_photo = helpers.canvas_data_url(page, PAINT)
        photo_final = page.evaluate("() => window.__probe.frames.filter((f) => f.kind === 'final').at(-1)")
        page.locator(f"#paint .sc-swatch[data-color='{RED}']").click()
        helpers.draw_stroke(page, stroke, canvas=PAINT)
        src = helpers.wait_new_image(page, src, "paint_output")
        painted = helpers.canvas_data_url(page, PAINT)
        page.locator("#paint .sc-eraser").click()
        helpers.draw_stroke(page, stroke, canvas=PAINT)
        helpers.wait_new_image(page, src, "paint_output")
        erased = helpers.canvas_data_url(page, PAINT)
        for _ in range(3):
            page.locator("#paint .sc-undo").click()
        blank = helpers.canvas_data_url(page, PAINT)

    photo_canvas = _pixels(decode_image(with_photo))
    with Image.open(PHOTO) as image:  # centre-cropped to the square, then scaled (the browser's own resampling)
        expected = _pixels(ImageOps.fit(image.convert("RGB"), (engine.size, engine.size), Image.LANCZOS))
    assert np.abs(photo_canvas - expected).mean() < 6.0
    assert photo_final["digest"] == picture_digest(decode_image(with_photo))
    assert _near(_pixels(decode_image(painted)), RED) > 300 > _near(photo_canvas, RED)
    restored = np.abs(_pixels(decode_image(erased)) - photo_canvas)
    assert restored.max() <= 2, f"the eraser did not paint the photo back: up to {restored.max()} levels off"
    assert _pixels(decode_image(blank)).min() == 255  # undone: the photo too, back to white paper


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("viewport", [{"width": 390, "height": 844}, {"width": 1400, "height": 1000}],
                         ids=["phone", "desktop"])
def test_the_painted_image_is_in_view_while_the_canvas_is(chromium, live_app, viewport):
    url, _engine, _demo = live_app
    with _paint_page(chromium, url, viewport=viewport, has_touch=viewport["width"] < 600) as page:
        helpers.assert_image_in_view_with_canvas(page, PAINT, "#paint_output img", viewport)
