"""Live drafts: frames while the pen moves, the final frame when it lifts, the switch, the phone layout, and the
canvas's server functions on their own.

Browser tests drive Debian's chromium (Playwright) against the app on the preview engine, with slow strokes made of
small mouse moves and waits; they fail (never skip) without /usr/bin/chromium and assert no timings. A draft is
checked against the canvas pictures the stroke passed through: the page probe (``tests/browser.py``) copies the
canvas each time the canvas sends a draft, and every draft shown must name (``digest``) one of those copies.

The final frame after pointer-up is compared with ``/sketch_to_image`` called through ``gradio_client`` for the
final canvas and the tab's inputs: both are the engine's full-decoder frame encoded by ``ui.encode_frame`` (the
same deterministic JPEG encoder at the same quality), one inline as a data URL, one as a file, so their decoded
pixels are compared exactly.
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as helpers  # noqa: E402  (tests/browser.py)
import support  # noqa: E402  (tests/support.py)

from sprint_demo import settings  # noqa: E402
from sprint_demo.inputs import decode_image  # noqa: E402
from sprint_demo.web.canvas_handlers import SKETCH_INPUTS  # noqa: E402
from sprint_demo.web.live import encode_jpeg, picture_digest  # noqa: E402

DRAFTS_WANTED = 2  # a slow stroke goes on until this many drafts have been shown (or STROKE_LIMIT_S passed)
STROKE_LIMIT_S = 30.0


# --- The app in a browser ----------------------------------------------------------------------------------


def test_drafts_arrive_during_a_slow_stroke_each_for_a_canvas_the_stroke_passed_through(chromium, live_app):
    url, _engine, _demo = live_app
    with helpers.app_page(chromium, url, sample=True) as page:
        helpers.wait_idle(page)
        shown_while_drawing = helpers.slow_stroke(
            page, "#sketch canvas", drafts_wanted=DRAFTS_WANTED, limit_s=STROKE_LIMIT_S
        )
        last_draft_seq = page.evaluate("() => Math.max(0, ...window.__probe.drafts.map((d) => d.seq))")
        final = helpers.wait_final_after(page, last_draft_seq)
        probe = page.evaluate("() => window.__probe")
        final_canvas = helpers.canvas_data_url(page)
        live_line = page.inner_text("#sketch_output .lv-live")

    assert shown_while_drawing >= DRAFTS_WANTED, shown_while_drawing
    sent = {d["seq"]: picture_digest(decode_image(d["png"])) for d in probe["drafts"]}
    shown = [f for f in probe["frames"] if f["kind"] == "draft"]
    assert shown and len(sent) >= len(shown)
    for frame in shown:
        assert frame["seq"] in sent, f"draft {frame['seq']} was never sent"
        assert frame["digest"] == sent[frame["seq"]], f"draft {frame['seq']} drew another canvas than it carried"
    assert len({f["digest"] for f in shown}) >= 2, "the drafts did not follow the stroke"
    assert all(a["seq"] < b["seq"] for a, b in zip(shown, shown[1:])), "an older draft replaced a newer one"
    # the final frame drew the finished stroke, which no draft (sent while drawing) could have
    assert final["digest"] == picture_digest(decode_image(final_canvas))
    assert "frames/s" in live_line and "first frame" in live_line, live_line


def test_final_frame_after_pointer_up_equals_the_api_frame_for_the_final_canvas(chromium, live_app):
    from gradio_client import Client

    url, _engine, _demo = live_app
    prompt = "a sailing boat"
    with helpers.app_page(chromium, url, sample=True) as page:
        page.locator("#prompt textarea").fill(prompt)
        helpers.wait_idle(page, quiet_ms=1500)
        helpers.slow_stroke(page, "#sketch canvas", drafts_wanted=1, limit_s=STROKE_LIMIT_S)
        last_draft_seq = page.evaluate("() => Math.max(0, ...window.__probe.drafts.map((d) => d.seq))")
        helpers.wait_final_after(page, last_draft_seq)
        helpers.wait_idle(page, quiet_ms=1500)
        shown_src = page.evaluate("() => document.querySelector('#sketch_output img').src")
        kind = page.evaluate("() => document.querySelector('#sketch_output img').dataset.kind")
        requests = page.evaluate("() => window.__probe.requests")
        canvas = helpers.canvas_data_url(page)
        with page.expect_download(timeout=30_000) as download:  # the image's download button saves that frame
            page.locator("#sketch_output .lv-save").click()
        saved = Path(download.value.path()).read_bytes()
        suggested = download.value.suggested_filename

    assert kind == "final"
    assert "final_frame" in [r["fn"] for r in requests], requests  # the canvas's server function made it
    client = Client(url, verbose=False, analytics_enabled=False)
    try:
        path, latency = client.predict(sketch=canvas, prompt=prompt, api_name="/sketch_to_image")
    finally:
        client.close()
    assert "ms" in latency and "total" in latency, latency
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB"), dtype=np.int16)
    shown = helpers.data_url_pixels(shown_src)
    assert shown.shape == expected.shape
    assert np.array_equal(shown, expected), f"mean |diff| {np.abs(shown - expected).mean():.3f}"
    assert saved == base64.b64decode(shown_src.split(",", 1)[1]) and suggested.endswith(".jpg"), suggested


def test_live_drafts_switch_off_sends_no_drafts_and_still_shows_the_final(chromium, live_app):
    url, _engine, _demo = live_app
    with helpers.app_page(chromium, url, sample=True) as page:
        helpers.wait_idle(page)
        switch = page.locator("#live_drafts input[type=checkbox]")
        assert switch.is_checked() == settings.LIVE_DRAFTS
        switch.uncheck()
        page.wait_for_timeout(300)
        src = helpers.output_src(page)
        box = helpers.canvas_box(page)
        page.evaluate("() => { window.__probe.frames = []; window.__probe.drafts = []; }")
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2)
        page.mouse.down()
        for step in range(80):  # ~2 s of slow drawing
            page.mouse.move(box["x"] + box["width"] * (0.2 + 0.007 * step), box["y"] + box["height"] * 0.3)
            page.wait_for_timeout(25)
        page.mouse.up()
        new_src = helpers.wait_new_image(page, src, timeout_ms=60_000)
        helpers.wait_idle(page)
        probe = page.evaluate("() => window.__probe")
        canvas = helpers.canvas_data_url(page)

    assert new_src != src
    assert probe["drafts"] == []
    assert [f["kind"] for f in probe["frames"]] and {f["kind"] for f in probe["frames"]} == {"final"}
    assert probe["frames"][-1]["digest"] == picture_digest(decode_image(canvas))


def _short_stroke(page, y: float) -> None:
    box = helpers.canvas_box(page)
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * y)
    page.mouse.down()
    for step in range(6):
        page.mouse.move(box["x"] + box["width"] * (0.2 + 0.1 * step), box["y"] + box["height"] * (y + 0.02 * step))
        page.wait_for_timeout(20)
    page.mouse.up()


def test_a_final_the_engine_turns_away_comes_through_the_queue(chromium, monkeypatch):
    """With no room for waiting tabs (``max_waiting`` 0: every frame of the canvas's server functions is turned
    away), the canvas asks the queue for its final frame, which arrives for the final canvas."""
    with support.live_app() as (url, engine, _demo), helpers.app_page(chromium, url, sample=True) as page:
        monkeypatch.setattr(engine.batcher, "max_waiting", 0)
        helpers.wait_idle(page)
        page.evaluate("() => { window.__probe.frames = []; window.__probe.requests = []; }")
        src = helpers.output_src(page)
        _short_stroke(page, 0.4)
        helpers.wait_new_image(page, src, timeout_ms=60_000)
        helpers.wait_idle(page)
        probe = page.evaluate("() => window.__probe")
        canvas = helpers.canvas_data_url(page)
    asked = [r["fn"] or r["path"] for r in probe["requests"]]
    assert "final_frame" in asked and "join" in asked[asked.index("final_frame"):], asked  # turned away, then queued
    assert probe["frames"][-1]["kind"] == "final"
    assert probe["frames"][-1]["digest"] == picture_digest(decode_image(canvas))


def test_a_model_fault_on_a_final_frame_is_shown_and_the_next_stroke_works(chromium, live_app):
    """The final frame's model call fails (in the server function, then again in the queue it falls back to): the
    page shows the fault's message, and the next stroke gets its image."""
    url, engine, _demo = live_app
    failures = []

    def failing(request, *args, **kwargs):  # the engine's one entry point, failing twice
        if len(failures) < 2:
            failures.append(request.decoder)
            raise RuntimeError("simulated kernel fault")
        return type(engine).render(engine, request, *args, **kwargs)

    with helpers.app_page(chromium, url, sample=True) as page:
        helpers.wait_idle(page)
        page.locator("#live_drafts input[type=checkbox]").uncheck()  # only finals: the two failures are theirs
        helpers.wait_idle(page, quiet_ms=800)
        engine.render = failing
        try:
            _short_stroke(page, 0.3)
            toast = page.locator("[data-testid='toast-body']").filter(has_text="simulated kernel fault")
            toast.first.wait_for(state="visible", timeout=60_000)
            src = helpers.output_src(page)
            _short_stroke(page, 0.6)
            helpers.wait_new_image(page, src, timeout_ms=60_000)
            kind = page.evaluate("() => document.querySelector('#sketch_output img').dataset.kind")
        finally:
            del engine.render
    assert failures == ["full", "full"] and kind == "final"


@pytest.mark.parametrize("viewport", [{"width": 390, "height": 844}, {"width": 1400, "height": 1000}],
                         ids=["phone", "desktop"])
def test_the_image_is_in_view_while_the_canvas_is(chromium, live_app, viewport):
    url, _engine, _demo = live_app
    with helpers.app_page(chromium, url, sample=True, viewport=viewport, has_touch=viewport["width"] < 600) as page:
        helpers.wait_idle(page)
        helpers.assert_image_in_view_with_canvas(page, "#sketch canvas", "#sketch_output img", viewport)
        banner = page.locator("#banner")
        if banner.count():  # one line; the rest behind a disclosure
            line = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('#banner summary'))"
                                 ".lineHeight) || 24")
            assert page.locator("#banner summary").bounding_box()["height"] <= 1.6 * line


# --- The server functions on their own -------------------------------------------------------------------
def _canvas_functions(engine):
    """The canvas's server functions (draft, final) of an app around ``engine``."""
    from sprint_demo.web.canvas import SketchCanvas
    from sprint_demo.web.ui import create_demo

    demo = create_demo(engine)
    (canvas,) = [block for block in demo.blocks.values()
                 if isinstance(block, SketchCanvas) and block.elem_id == "sketch"]  # not the Paint tab's
    return canvas.draft_frame, canvas.final_frame


def _bar_sketch(size: int, box: tuple[int, int, int, int]) -> tuple[Image.Image, str]:
    """A white canvas with one black bar, and its PNG data URL (what the canvas sends)."""
    from sprint_demo.sketches import png_data_url

    sketch = Image.new("RGB", (size, size), "white")
    sketch.paste((0, 0, 0), box)
    return sketch, png_data_url(sketch)


def test_draft_server_function_tags_the_frame_with_the_canvas_it_drew():
    preview_engine = support.preview_engine()
    draft, _final = _canvas_functions(preview_engine)
    sketch, png = _bar_sketch(preview_engine.size, (40, 40, 200, 48))
    inputs = dict(zip(SKETCH_INPUTS, ["a cat", 1, 7, settings.DEFAULT_GUIDANCE, 1.0, 2]))
    answer = draft({"png": png, "inputs": inputs, "seq": 5, "tab": "t"})
    assert answer["seq"] == 5 and answer["digest"] == picture_digest(sketch), answer.keys()
    decoder = settings.DRAFT_DECODER if preview_engine.has_tiny_decoder else "full"  # tiny where there is one
    expected = support.sketch_frame(preview_engine, sketch, "a cat", 1, 7, settings.DEFAULT_GUIDANCE, 1.0, 2,
                                    decoder=decoder).image
    shown = helpers.data_url_pixels(answer["src"])
    assert answer["src"].startswith("data:image/jpeg;base64,") and shown.shape == (*expected.size[::-1], 3)
    # a draft is the engine's frame as a JPEG at the draft quality (the same encoder: equal pixels)
    with Image.open(io.BytesIO(encode_jpeg(expected, settings.DRAFT_JPEG_QUALITY))) as image:
        assert np.array_equal(shown, np.asarray(image.convert("RGB"), dtype=np.int16))
    bad = draft({"png": "data:image/png;base64,bm90IGFuIGltYWdl", "inputs": inputs, "seq": 6, "tab": "t"})
    assert "sketch" in bad["error"] and "src" not in bad
    assert "thickness" in draft({"png": png, "inputs": inputs | {"thickness": 99}, "seq": 7, "tab": "t"})["error"]
    assert "error" in draft({"inputs": inputs})  # malformed: no png
    positional = draft({"png": png, "inputs": list(inputs.values()), "seq": 7, "tab": "t"})  # by name only
    assert "inputs: {prompt, steps, seed, guidance_scale, control_strength, thickness}" in positional["error"]
    assert "error" in draft({"png": png, "inputs": inputs | {"extra": 1}, "seq": 7, "tab": "t"})
    assert "src" in draft({"png": png, "inputs": inputs, "seq": 8, "tab": "t"})  # still serving


def test_final_server_function_returns_the_api_s_pixels_with_the_chosen_decoder_and_a_readout():
    from sprint_demo.web.handlers import encode_frame

    preview_engine = support.preview_engine()
    _draft, final = _canvas_functions(preview_engine)
    sketch, png = _bar_sketch(preview_engine.size, (60, 100, 300, 110))
    inputs = dict(zip(SKETCH_INPUTS, ["a bridge", 2, 11, settings.DEFAULT_GUIDANCE, 0.8, 3]))
    for decoder in preview_engine.decoders:
        answer = final({"png": png, "inputs": inputs, "decoder": decoder, "seq": 3, "tab": "t"})
        expected = support.sketch_frame(preview_engine, sketch, "a bridge", 2, 11, settings.DEFAULT_GUIDANCE, 0.8, 3,
                                        decoder=decoder).image
        with Image.open(io.BytesIO(encode_frame(expected))) as image:  # the bytes /sketch_to_image serves
            served = np.asarray(image.convert("RGB"), dtype=np.int16)
        assert np.array_equal(helpers.data_url_pixels(answer["src"]), served)
        assert answer["seq"] == 3 and answer["digest"] == picture_digest(sketch)
        assert f"decoder: {decoder}" in answer["readout"] and "**" not in answer["readout"]  # plain lines
    default = final({"png": png, "inputs": inputs, "seq": 4, "tab": "t"})  # no decoder named: the default, full
    assert "decoder: full" in default["readout"]
    assert "steps" in final({"png": png, "inputs": inputs | {"steps": 9}, "seq": 5, "tab": "t"})["error"]
    assert "src" in final({"png": png, "inputs": inputs, "seq": 6, "tab": "t"})  # still serving


def test_banner_is_one_line_with_the_whole_text_behind_a_disclosure():
    from sprint_demo.web.ui import banner_html

    text = ("Preview mode: the weights could not be loaded here, so images come from a tiny random model. "
            "Reason: <no network>")
    markup = banner_html(text)
    assert markup.startswith("<details><summary>") and "Reason: &lt;no network&gt;" in markup
    summary = markup.split("<summary>")[1].split("</summary>")[0]
    assert "Reason" not in summary and "tiny random model" in summary
