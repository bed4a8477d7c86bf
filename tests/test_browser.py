"""The app in a real browser: Debian's chromium driven by Playwright, real mouse, keyboard and touch input.

The app runs in this process on the real preview engine; the engine object is shared with the test so a direct
engine call can be compared with what the page shows. Served frames are JPEG files made by ``ui.encode_frame``
and passed through by Gradio unchanged; the test fetches the bytes behind the ``<img>`` and decodes them with
PIL, so "the final image equals a direct engine call" is checked exactly (no JPEG tolerance is needed; a
truncated prompt must differ by more than ``CLEARLY_DIFFERENT`` grey levels on average).

Timings (mouse-up to new image loaded, measured inside the page, against the engine's own ``total`` for the same
frame from the latency readout) are printed and written to ``TIMINGS_JSON`` for the lead.

If /usr/bin/chromium is missing these tests FAIL (never skip): ``apt-get install -y chromium``.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as helpers  # noqa: E402  (tests/browser.py)
import support  # noqa: E402  (tests/support.py)

from sprint_demo import inputs  # noqa: E402
from sprint_demo.web.handlers import encode_frame  # noqa: E402

pytestmark = pytest.mark.browser
TIMINGS_JSON = Path("/tmp/sprint_browser_timings.json")
CLEARLY_DIFFERENT = 0.3  # mean absolute difference (0-255 levels) that a truncated prompt's frame must exceed
STROKES = [  # five strokes, as fractions of the canvas box
    [(0.15, 0.2), (0.4, 0.35), (0.7, 0.25)],
    [(0.2, 0.8), (0.5, 0.6), (0.8, 0.85)],
    [(0.5, 0.1), (0.45, 0.5), (0.55, 0.9)],
    [(0.1, 0.5), (0.3, 0.45), (0.9, 0.55)],
    [(0.3, 0.3), (0.6, 0.6), (0.3, 0.7), (0.25, 0.4)],
]



def _need(chromium):
    if chromium is None:
        helpers.require_chromium()  # raises AssertionError with the install hint
    return chromium


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _engine_total_ms(page) -> float:
    text = page.inner_text("#latency")
    match = re.search(r"([\d.]+) ms\s+total", text)
    assert match, text
    return float(match.group(1))


def test_five_mouse_strokes_each_show_a_new_image(chromium, live_app):
    url, engine, _demo = live_app
    with helpers.app_page(chromium, url) as page:
        src = helpers.wait_idle(page)
        seen, rows = {src}, []
        for index, stroke in enumerate(STROKES):
            helpers.draw_stroke(page, stroke)
            new = helpers.wait_new_image(page, src)
            assert new not in seen, f"stroke {index + 1}: the image did not change"
            seen.add(new)
            src = new
            rows.append({"stroke": index + 1, "engine_total_ms": _engine_total_ms(page)})
        # one value per stroke, not per pointer move
        assert page.evaluate("() => document.querySelector('#sketch canvas').dataset.sent") == str(len(STROKES))
        probe = page.evaluate("() => window.__probe")

    ups, loads = probe["ups"], probe["loads"]["sketch_output"]
    assert len(ups) == len(STROKES), ups
    for row, up in zip(rows, ups):
        row["mouseup_to_image_ms"] = round(min(load["t"] for load in loads if load["t"] > up
                                               and load["kind"] != "draft") - up, 1)
    median_ui = statistics.median(row["mouseup_to_image_ms"] for row in rows)
    median_engine = statistics.median(row["engine_total_ms"] for row in rows)
    report = {
        "model": engine.model_name, "frame_size": engine.size, "strokes": rows,
        "median_mouseup_to_image_ms": median_ui, "median_engine_total_ms": median_engine,
        "median_overhead_ms": round(median_ui - median_engine, 1),
    }
    TIMINGS_JSON.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nmouse-up to image: median {median_ui:.0f} ms; engine frame total: median {median_engine:.0f} ms "
          f"({engine.size}x{engine.size}, {engine.model_name}); per stroke: {rows}; written to {TIMINGS_JSON}")
    assert median_ui >= median_engine  # sanity: the page cannot be faster than the model


def test_fast_typing_ends_on_the_image_for_the_whole_prompt(chromium, live_app):
    url, engine, _demo = live_app
    prompt = "a lighthouse on a cliff at dusk"
    with helpers.app_page(chromium, url) as page:
        src = helpers.wait_idle(page)
        helpers.draw_stroke(page, STROKES[0])
        src = helpers.wait_new_image(page, src)
        page.locator("#prompt textarea").click()
        page.keyboard.type(prompt, delay=25)
        final_src = helpers.wait_idle(page, quiet_ms=1500)
        assert final_src != src
        assert page.locator("#prompt textarea").input_value() == prompt
        shown = _pixels(helpers.fetch_image(page, final_src))
        canvas = helpers.canvas_data_url(page)

    def frame(text: str) -> np.ndarray:
        import io

        from PIL import Image

        image = support.sketch_frame(engine, canvas, text).image
        return _pixels(Image.open(io.BytesIO(encode_frame(image))))

    expected = frame(prompt)
    assert shown.shape == expected.shape
    match = np.abs(shown - expected).mean()
    assert match == 0.0, f"final image differs from the engine's frame for the whole prompt by {match:.3f}"
    for truncated in (prompt[:-1], prompt.rsplit(" ", 1)[0]):
        gap = np.abs(shown - frame(truncated)).mean()
        print(f"\nserved vs frame for {truncated!r}: mean |diff| {gap:.2f} levels (vs 0 for the whole prompt)")
        assert gap > CLEARLY_DIFFERENT, f"{truncated!r} gives nearly the same image ({gap:.3f})"


def test_touch_stroke_draws_sends_and_does_not_scroll(chromium, live_app):
    url, engine, _demo = live_app
    with helpers.app_page(chromium, url, viewport={"width": 412, "height": 700}, has_touch=True, is_mobile=True,
                          device_scale_factor=2) as page:
        src = helpers.wait_idle(page)
        box = helpers.canvas_box(page)
        before_value = helpers.canvas_data_url(page)
        scroll_before = page.evaluate("() => [window.scrollX, window.scrollY]")
        assert page.evaluate("() => document.documentElement.scrollHeight > window.innerHeight"), "page cannot scroll"
        cdp = page.context.new_cdp_session(page)
        x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.8
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
        for step in range(1, 13):  # an upward swipe: without touch-action: none this would scroll the page
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [
                {"x": x0 + step * box["width"] * 0.03, "y": y0 - step * box["height"] * 0.05}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        new_src = helpers.wait_new_image(page, src)
        assert new_src != src
        assert helpers.canvas_data_url(page) != before_value, "the touch stroke did not draw"
        assert page.evaluate("() => document.querySelector('#sketch canvas').dataset.sent") == "1"
        assert page.evaluate("() => [window.scrollX, window.scrollY]") == scroll_before, "the page scrolled"
        # HiDPI: the visible canvas has a backing pixel per device pixel; the value keeps the model's resolution
        backing, css = page.evaluate("() => { const c = document.querySelector('#sketch canvas'); "
                                     "return [c.width, c.clientWidth]; }")  # clientWidth: no border
        assert abs(backing - 2 * css) <= 2, (backing, css)
        from sprint_demo.inputs import decode_image

        assert decode_image(helpers.canvas_data_url(page)).size == (engine.size, engine.size)


def _blank(data_url: str) -> bool:
    from sprint_demo.inputs import decode_image, is_blank

    return is_blank(decode_image(data_url))


def _ink(data_url: str) -> int:
    from sprint_demo.inputs import decode_image

    return int((np.asarray(decode_image(data_url).convert("L")) < 128).sum())


def _same_as_engine(page, src: str, frame) -> bool:
    import io

    from PIL import Image

    expected = _pixels(Image.open(io.BytesIO(encode_frame(frame.image))))
    shown = _pixels(helpers.fetch_image(page, src))
    return shown.shape == expected.shape and bool(np.array_equal(shown, expected))


def _shows_engine_frame(page, elem_id: str, frame, timeout_s: float = 60.0) -> bool:
    """Whether ``#elem_id`` comes to show ``frame`` within ``timeout_s``: a slider's redraws arrive one after another
    (each intermediate value may make a frame), so the last one is awaited by its pixels, not by a quiet spell."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _same_as_engine(page, helpers.output_src(page, elem_id), frame):
            return True
        page.wait_for_timeout(250)
    return False


def test_example_sketch_loads_and_undo_and_clear_work(chromium, live_app):
    url, engine, _demo = live_app
    examples = json.loads((support.REPO / "assets" / "examples.json").read_text())
    with helpers.app_page(chromium, url) as page:
        src = helpers.wait_idle(page)
        page.locator("#sketch_examples img").nth(1).click()
        helpers.wait_new_image(page, src)
        loaded_src = helpers.wait_idle(page)
        assert page.locator("#prompt textarea").input_value() == examples[1]["prompt"]
        loaded_canvas = helpers.canvas_data_url(page)
        assert not _blank(loaded_canvas)
        helpers.draw_stroke(page, STROKES[1])
        stroked_src = helpers.wait_new_image(page, loaded_src)
        page.locator("#sketch .sc-undo").click()  # back to the example exactly: same pixels, same frame, same URL
        assert helpers.wait_new_image(page, stroked_src) == loaded_src
        assert helpers.canvas_data_url(page) == loaded_canvas
        page.locator("#sketch .sc-eraser").click()  # erasing paints paper: less ink, a new frame
        helpers.draw_stroke(page, [(0.05, 0.5), (0.5, 0.45), (0.95, 0.5)])
        erased_src = helpers.wait_new_image(page, loaded_src)
        assert _ink(helpers.canvas_data_url(page)) < _ink(loaded_canvas)
        page.locator("#sketch .sc-clear").click()
        cleared_src = helpers.wait_new_image(page, erased_src)
        assert _blank(helpers.canvas_data_url(page))
        assert _same_as_engine(page, cleared_src, support.sketch_frame(engine, None, examples[1]["prompt"]))


def test_photo_upload_replaces_the_sketch_until_cleared(chromium, live_app):
    url, _engine, _demo = live_app
    with helpers.app_page(chromium, url) as page:
        src = helpers.wait_idle(page)
        helpers.draw_stroke(page, STROKES[2])
        sketch_src = helpers.wait_new_image(page, src)
        page.get_by_text("Or start from a photo").click()
        page.locator("#photo input[type=file]").set_input_files(str(support.REPO / "assets" / "example_photo.jpg"))
        page.wait_for_selector("#photo_map img", timeout=60_000)
        photo_src = helpers.wait_new_image(page, sketch_src)
        assert "photo" in page.inner_text("#latency")
        width, height = inputs.fit_size(1024, 768, _engine.size)  # the photo's own aspect ratio, not the square
        assert helpers.data_url_pixels(photo_src).shape[:2] == (height, width) and height < width
        page.locator("#photo button[aria-label='Remove Image']").click()
        assert helpers.wait_new_image(page, photo_src) == sketch_src  # the sketch's frame again
        assert page.locator("#photo_map img").count() == 0


def test_playground_refreshes_while_typing_and_on_aspect(chromium, live_app):
    from sprint_demo.web.ui import aspect_size

    url, engine, _demo = live_app
    prompt = "a red kite over the sea"
    with helpers.app_page(chromium, url) as page:
        page.get_by_role("tab", name="Playground").click()
        page.wait_for_selector("#t2i_output img", timeout=60_000)
        src = helpers.wait_idle(page, "t2i_output")
        page.locator("#t2i_prompt textarea").click()
        page.keyboard.type(prompt, delay=25)
        typed_src = helpers.wait_idle(page, "t2i_output", quiet_ms=1500)
        assert typed_src != src
        assert _same_as_engine(page, typed_src, support.text_frame(engine, prompt))
        page.get_by_label("16:9").check()
        wide_src = helpers.wait_new_image(page, typed_src, "t2i_output")
        width, height = aspect_size("16:9", engine.size)
        assert _same_as_engine(page, wide_src, support.text_frame(engine, prompt, width=width, height=height))
        # dragging a slider refreshes during the drag, and the last frame is for the value it was let go at
        box = page.locator("#t2i_guidance input[type=range]").bounding_box()
        y = box["y"] + box["height"] / 2
        page.evaluate("() => { window.__probe.loads.t2i_output = []; }")
        page.mouse.move(box["x"] + box["width"] * 0.3, y)
        page.mouse.down()
        for step in range(1, 21):
            page.mouse.move(box["x"] + box["width"] * (0.3 + 0.02 * step), y)
            page.wait_for_timeout(60)
        page.mouse.up()
        dragged_src = helpers.wait_idle(page, "t2i_output", quiet_ms=1500)
        shown_during = len({load["src"] for load in page.evaluate("() => window.__probe.loads.t2i_output")})
        assert shown_during >= 2, f"only {shown_during} frame(s) shown while dragging"
        guidance = float(page.locator("#t2i_guidance input[type=number]").input_value())
        assert _same_as_engine(page, dragged_src, support.text_frame(engine, prompt, guidance_scale=guidance,
                                                                     width=width, height=height))
        seed_before = page.locator("#t2i_seed input").input_value()
        page.locator("#t2i_seed_random").click()
        helpers.wait_new_image(page, dragged_src, "t2i_output")
        assert page.locator("#t2i_seed input").input_value() != seed_before


def test_the_decoder_choice_redraws_with_the_tiny_autoencoder_and_says_so(chromium, live_app):
    url, engine, _demo = live_app
    with helpers.app_page(chromium, url) as page:
        page.get_by_role("tab", name="Playground").click()
        page.wait_for_selector("#t2i_output img", timeout=60_000)
        src = helpers.wait_idle(page, "t2i_output")
        assert "decoder: full" in page.locator("#t2i_latency").inner_text()
        page.locator("#t2i_decoder").get_by_label("tiny (fast, for slow machines)").check()
        tiny_src = helpers.wait_new_image(page, src, "t2i_output")
        assert _same_as_engine(page, tiny_src, support.text_frame(engine, "", decoder="tiny"))
        assert "decoder: tiny" in page.locator("#t2i_latency").inner_text()


def test_every_tab_has_a_style_menu_and_the_playground_travels_live(chromium, live_app):
    """The Style menu and its strength slider on each tab; in the Playground, a style and the travel sliders
    redraw like the other controls, each frame the engine's for those values."""
    url, engine, _demo = live_app
    with helpers.app_page(chromium, url) as page:
        for tab, elem_id in (("Sketch", "style"), ("Paint", "paint_style"), ("Camera", "camera_style"),
                             ("Playground", "t2i_style")):  # a tab's content is mounted when it is first opened
            page.get_by_role("tab", name=tab).click()
            page.wait_for_selector(f"#{elem_id}_scale", timeout=30_000)
            assert page.locator(f"#{elem_id}").count() == 1
        page.wait_for_selector("#t2i_output img", timeout=60_000)
        src = helpers.wait_idle(page, "t2i_output")
        page.locator("#t2i_prompt textarea").fill("a red kite")
        src = helpers.wait_new_image(page, src, "t2i_output")
        page.locator("#t2i_style input").click()
        page.get_by_role("option", name="anime").click()
        helpers.wait_new_image(page, src, "t2i_output")
        assert _shows_engine_frame(page, "t2i_output", support.text_frame(engine, "a red kite", style="anime"))
        page.get_by_text("Travel between two prompts or two seeds").click()
        page.locator("#t2i_prompt_b textarea").fill("a green boat")
        page.locator("#t2i_blend input[type=number]").fill("1")
        page.locator("#t2i_blend input[type=number]").press("Enter")
        assert _shows_engine_frame(page, "t2i_output", support.text_frame(engine, "a green boat", style="anime"))


GALLERY_SLACK_PX = 24  # padding and border the example gallery may have under its last row of thumbnails
GALLERY_BOX_JS = """() => {
  const box = document.querySelector('#sketch_examples').getBoundingClientRect();
  const thumbs = [...document.querySelectorAll('#sketch_examples img')].map((i) => i.getBoundingClientRect());
  return { bottom: box.bottom, right: box.right, count: thumbs.length, thumbHeight: thumbs[0].height,
           thumbsBottom: Math.max(...thumbs.map((t) => t.bottom)),
           thumbsRight: Math.max(...thumbs.map((t) => t.right)) };
}"""


@pytest.mark.parametrize("viewport", [{"width": 1400, "height": 1000}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
def test_example_gallery_box_fits_its_thumbnails(chromium, live_app, viewport):
    url, _engine, _demo = live_app
    examples = json.loads((support.REPO / "assets" / "examples.json").read_text())
    with helpers.app_page(chromium, url, viewport=viewport) as page:
        # every thumbnail there and loaded (``every`` of no images is true: wait for all of them to be in the page)
        page.wait_for_function("(n) => { const images = [...document.querySelectorAll('#sketch_examples img')]; "
                               "return images.length === n && "
                               "images.every((i) => i.complete && i.naturalWidth > 0); }",
                               arg=len(examples), timeout=60_000)
        box = page.evaluate(GALLERY_BOX_JS)
    assert box["count"] == len(examples), box
    assert box["thumbHeight"] > 50, box  # thumbnails are shown, not collapsed
    empty_below = box["bottom"] - box["thumbsBottom"]
    assert 0 <= empty_below <= GALLERY_SLACK_PX, f"{empty_below:.0f} px of empty gallery under the thumbnails: {box}"
    assert box["thumbsRight"] <= box["right"], f"thumbnails run past the gallery's right edge: {box}"


@pytest.mark.parametrize("component", ["canvas", "camera", "live"])
def test_component_scripts_compile_in_chromium(chromium, component):
    """Each component's js_on_load as Gradio runs it (the body of a function of its six arguments: the shared files
    and the component's own, put together by page_files.component_script): a syntax error would otherwise only show
    as a component that does nothing, with the error in the console. Two files defining the same top-level function
    compile (the last one wins), so names are checked apart; a top-level const or let twice fails to compile."""
    import importlib

    source = importlib.import_module(f"sprint_demo.web.{component}")._JS
    functions = re.findall(r"^(?:async )?function (\w+)", source, flags=re.MULTILINE)
    assert len(functions) > 2 and len(set(functions)) == len(functions), functions
    context = _need(chromium).new_context()
    try:
        page = context.new_page()
        error = page.evaluate("""(source) => {
            try { new Function('element', 'trigger', 'props', 'server', 'upload', 'watch', source); return null; }
            catch (e) { return e.name + ': ' + e.message; } }""", source)
    finally:
        context.close()
    assert error is None, f"the {component} component's script does not compile: {error}"
