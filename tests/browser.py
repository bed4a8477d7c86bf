"""Helpers for driving the app in Debian's chromium through Playwright (sync API); the app itself is served by
``support.live_app``.

Never runs ``playwright install``: the browser is ``/usr/bin/chromium`` (``apt-get install -y chromium``).
Also a command-line tool that takes the README screenshot, and one that measures the browser round trip of
strokes (the benchmark in docs/PERFORMANCE.md; it asserts nothing)::

    python3 tests/browser.py screenshot docs/screenshot.png
    python3 tests/browser.py measure-transit [strokes [slow strokes]]
    python3 tests/browser.py measure-camera [seconds]
    python3 tests/browser.py measure-paint [slow strokes]
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # also as a script: support.py and sprint_demo import
from support import live_app  # noqa: E402

from sprint_demo import settings  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

# In-page probe: timestamps of every pointerup and of every new image shown in an output, so latency is measured
# inside the page (no Playwright round trips in the numbers); each load says whether it was a draft or a final frame
# (``kind``, the canvas tabs' outputs only). ``frames``: every frame the Sketch tab's output showed (kind, digest of
# the canvas it drew, request number). ``drafts``: one entry per draft the canvas sent; with ``probe.sample`` set,
# each holds the canvas picture at that moment (what the draft carries), for checking frames against it.
# ``requests``: every fetch the page makes from then on ({path: last URL segment, fn: a server function's name}),
# to tell a frame from the canvas's server function (``component_server``) from one through the queue (``join``).
PROBE_JS = """
() => {
  if (window.__probe) return;
  const probe = window.__probe = { ups: [], loads: {}, frames: [], drafts: [], requests: [], sample: false };
  const pageFetch = window.fetch;
  window.fetch = function (input, init) {
    let fn = null;
    try { fn = init && typeof init.body === 'string' ? (JSON.parse(init.body).fn_name || null) : null; } catch (e) {}
    const url = String((input && input.url) || input).split('?')[0];
    probe.requests.push({ path: url.split('/').filter(Boolean).pop(), fn: fn, t: performance.now() });
    return pageFetch.apply(this, arguments);
  };
  window.addEventListener('pointerup', () => probe.ups.push(performance.now()), true);
  document.addEventListener('load', (event) => {
    const img = event.target;
    if (!(img instanceof HTMLImageElement)) return;
    for (let el = img; el; el = el.parentElement) {
      if (el.id === 'sketch_output' || el.id === 'paint_output' || el.id === 't2i_output') {
        const entry = { src: img.currentSrc || img.src, t: performance.now(), kind: img.dataset.kind || null };
        (probe.loads[el.id] = probe.loads[el.id] || []).push(entry);
        // on screen: the frame after the one that follows the load (two animation frames later)
        requestAnimationFrame(() => requestAnimationFrame(() => { entry.paint = performance.now(); }));
        break;
      }
    }
  }, true);
  document.addEventListener('live-frame', (event) => probe.frames.push(event.detail), true);
  document.addEventListener('sketch-draft', (event) => probe.drafts.push({
    seq: event.detail.seq, t: performance.now(), png: probe.sample ? event.target.sketchDataURL() : null }), true);
}
"""


def require_chromium() -> str:
    """The chromium path, or an AssertionError saying how to install it (the browser tests fail, never skip)."""
    if not os.path.exists(CHROMIUM):
        raise AssertionError(f"{CHROMIUM} is missing: install Debian's chromium with `apt-get install -y chromium` "
                             f"(never `playwright install`)")
    return CHROMIUM


@contextlib.contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def open_app(context, url: str):
    """A page on the app with the probe installed, once the first frame (page load) is shown."""
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.evaluate(PROBE_JS)
    page.wait_for_selector("#sketch canvas", state="visible", timeout=60_000)
    page.wait_for_selector("#sketch_output img", state="attached", timeout=60_000)
    return page


@contextlib.contextmanager
def app_page(chromium, url: str, sample: bool = False, **context_options):
    """A page on the app (``open_app``) in a browser context of its own, closed afterwards; a desktop window unless
    ``context_options`` say otherwise. ``sample``: the probe copies the canvas with each draft it sends."""
    if chromium is None:
        require_chromium()  # raises AssertionError with the install hint
    context = chromium.new_context(**({"viewport": {"width": 1280, "height": 1000}} | context_options))
    try:
        page = open_app(context, url)
        if sample:
            page.evaluate("() => { window.__probe.sample = true; }")
        yield page
    finally:
        context.close()


# --- The Camera tab in chromium with a fake camera ------------------------------------------------------------
FAKE_CAMERA = ["--use-fake-device-for-media-stream"]  # a test pattern (--use-file-for-fake-video-capture: a Y4M)
GRANT_CAMERA = ["--use-fake-ui-for-media-stream"]  # answers the permission prompt with "allow"
# In-page probe: every frame the camera output shows (the component's camera-frame event: seq, captured_at,
# shown_at), with the output's src and the readout (the test stub names the prompt it used) at that moment.
CAMERA_PROBE_JS = """() => {
  if (window.__cam) return;
  window.__cam = [];
  document.addEventListener('camera-frame', (event) => window.__cam.push(Object.assign({
    src: document.querySelector('#camera_output').src,
    readout: document.querySelector('#camera .cam-readout').textContent }, event.detail)), true);
}"""


def launch_with_camera(playwright, *extra: str, grant: bool = True):
    """Chromium with the fake camera (permission granted unless ``grant`` is False); ``extra``: more flags."""
    args = CHROMIUM_ARGS + FAKE_CAMERA + (GRANT_CAMERA if grant else []) + list(extra)
    return playwright.chromium.launch(executable_path=require_chromium(), headless=True, args=args)


def open_camera_tab(chromium, url: str):
    """A page on ``url`` with its Camera tab chosen, the start button shown and ``CAMERA_PROBE_JS`` installed."""
    page = chromium.new_page(viewport={"width": 1200, "height": 1000})
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Camera").click(timeout=60_000)
    page.wait_for_selector("#camera .cam-start", state="visible", timeout=30_000)
    page.evaluate(CAMERA_PROBE_JS)
    return page


def camera_session(page) -> str:
    """The camera component's session id (the server's camera session is "camera:" and this id)."""
    return page.evaluate("() => document.querySelector('#camera .cam-root').cameraSession")


def start_camera(page, frames: int = 1, timeout_ms: float = 20_000) -> None:
    """Press Start and wait until ``frames`` more frames are shown (``CAMERA_PROBE_JS`` counts them)."""
    before = page.evaluate("() => window.__cam.length")
    page.click("#camera .cam-start")
    page.wait_for_function(f"() => window.__cam.length >= {before + frames}", timeout=timeout_ms)


def output_src(page, elem_id: str = "sketch_output") -> str | None:
    return page.evaluate(f"() => {{ const i = document.querySelector('#{elem_id} img'); "
                         f"return i ? (i.currentSrc || i.src) : null; }}")


def wait_new_image(page, old_src: str | None, elem_id: str = "sketch_output", timeout_ms: float = 30_000) -> str:
    """Wait until the output shows a loaded image whose src differs from ``old_src`` and that is not a draft (the
    Sketch tab's output marks drafts and final frames); returns the new src."""
    page.wait_for_function(
        """([id, old]) => { const i = document.querySelector('#' + id + ' img');
             return i && (i.currentSrc || i.src) && (i.currentSrc || i.src) !== old && i.complete
                    && i.naturalWidth > 0 && i.dataset.kind !== 'draft'; }""",
        arg=[elem_id, old_src], timeout=timeout_ms, polling="raf")
    return output_src(page, elem_id)


def wait_idle(page, elem_id: str = "sketch_output", quiet_ms: int = 1200, timeout_s: float = 30.0) -> str:
    """Wait until the output has not changed for ``quiet_ms`` (the queue has drained); returns the final src."""
    deadline = time.monotonic() + timeout_s
    last, since = output_src(page, elem_id), time.monotonic()
    while time.monotonic() < deadline:
        page.wait_for_timeout(100)
        now = output_src(page, elem_id)
        if now != last:
            last, since = now, time.monotonic()
        elif (time.monotonic() - since) * 1000 >= quiet_ms:
            return last
    raise TimeoutError(f"#{elem_id} kept changing for {timeout_s} s")


def canvas_box(page, canvas: str = "#sketch canvas") -> dict:
    page.locator(canvas).scroll_into_view_if_needed()
    return page.locator(canvas).bounding_box()


def draw_stroke(page, points: list[tuple[float, float]], steps: int = 4, canvas: str = "#sketch canvas") -> None:
    """A real mouse stroke through ``points`` given as fractions (0..1) of the canvas box."""
    box = canvas_box(page, canvas)
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def canvas_data_url(page, canvas: str = "#sketch canvas") -> str:
    """The canvas value as it would be sent now (the off-screen SIZE x SIZE canvas, not the display one)."""
    return page.evaluate("(selector) => document.querySelector(selector).sketchDataURL()", canvas)


def open_paint_tab(page) -> str:
    """The Paint tab selected, once its first frame (the tab's opening) is shown and nothing more arrives; returns
    that frame's src."""
    page.get_by_role("tab", name="Paint").click()
    page.wait_for_selector("#paint canvas", state="visible", timeout=60_000)
    page.wait_for_function("() => { const i = document.querySelector('#paint_output img'); "
                           "return i && i.getAttribute('src') && i.complete && i.naturalWidth > 0; }",
                           timeout=60_000, polling="raf")
    return wait_idle(page, "paint_output")


def slow_stroke(page, canvas: str, seconds: float = 2.0, row: float = 0.5, drafts_wanted: int = 0,
                limit_s: float = 30.0) -> int:
    """A slow continuous stroke on ``canvas`` (a small mouse move every ~20 ms) at height ``row`` of the canvas box,
    for ``seconds``, or on until ``drafts_wanted`` drafts have been shown (at most ``limit_s``, in a zigzag that
    stays on the canvas); returns the drafts shown while drawing (the probe's frames of kind 'draft' since then)."""
    box = canvas_box(page, canvas)
    page.evaluate("() => { window.__probe.frames = []; window.__probe.drafts = []; }")
    x0, y0 = box["x"] + box["width"] * 0.1, box["y"] + box["height"] * row
    page.mouse.move(x0, y0)
    page.mouse.down()
    started, step, shown = time.monotonic(), 0, 0
    while time.monotonic() - started < limit_s:
        step += 1
        across = (step * 0.008) % 1.6  # 0 -> 0.8 of the box width, then back
        page.mouse.move(x0 + box["width"] * min(across, 1.6 - across), y0 + 12 * ((step // 8) % 2))
        page.wait_for_timeout(20)
        if time.monotonic() - started >= seconds:
            shown = page.evaluate("() => window.__probe.frames.filter((f) => f.kind === 'draft').length")
            if shown >= drafts_wanted:
                break
    page.mouse.up()
    return shown


def fetch_image(page, src: str):
    """The image bytes behind ``src`` (a served file, or an inline data URL: then ``page`` is not used) -> RGB PIL
    image (decoded by PIL, not by the browser)."""
    import base64

    from PIL import Image

    if src.startswith("data:"):
        body = base64.b64decode(src.split(",", 1)[1])
    else:
        body = page.request.get(src).body()
    with Image.open(io.BytesIO(body)) as image:
        return image.convert("RGB")


def data_url_pixels(url: str):
    """A frame's data URL -> its RGB pixels (int16 numpy array, decoded by PIL), for comparing frames."""
    import numpy as np

    return np.asarray(fetch_image(None, url), dtype=np.int16)


def wait_final_after(page, seq: int, timeout_ms: float = 60_000) -> dict:
    """The probe's record of the first final frame for a request numbered above ``seq``, once shown."""
    page.wait_for_function(f"() => window.__probe.frames.some((f) => f.kind === 'final' && f.seq > {seq})",
                           timeout=timeout_ms)
    return page.evaluate(f"() => window.__probe.frames.find((f) => f.kind === 'final' && f.seq > {seq})")


def latency_total_ms(page) -> float:
    """The server-side total of the frame on show, from the latency readout."""
    import re

    match = re.search(r"([\d.]+) ms\s+total", page.inner_text("#latency"))
    assert match, page.inner_text("#latency")
    return float(match.group(1))


def in_viewport(box: dict, viewport: dict) -> bool:
    return (box["y"] >= -1 and box["y"] + box["height"] <= viewport["height"] + 1
            and box["x"] >= -1 and box["x"] + box["width"] <= viewport["width"] + 1)


def assert_image_in_view_with_canvas(page, canvas_selector: str, image_selector: str, viewport: dict) -> None:
    """A tab's output image and its canvas are both on screen without overlapping: side by side on a wide screen;
    on a phone the image above the canvas, still in view when the page scrolls on down the canvas."""
    canvas = page.locator(canvas_selector)
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(200)
    canvas_box = canvas.bounding_box()
    image_box = page.locator(image_selector).bounding_box()
    assert in_viewport(canvas_box, viewport), canvas_box
    assert in_viewport(image_box, viewport), image_box
    assert image_box["y"] + image_box["height"] <= canvas_box["y"] + 1 or \
        image_box["x"] >= canvas_box["x"] + canvas_box["width"] - 1, "the image covers the canvas"
    if viewport["width"] >= 1000:  # desktop: side by side
        assert image_box["x"] >= canvas_box["x"] + canvas_box["width"]
    else:  # phone: the image above the canvas, and still in view when the page scrolls on down the canvas
        page.evaluate("(dy) => window.scrollBy(0, dy)", canvas_box["height"] * 0.5)
        page.wait_for_timeout(200)
        assert in_viewport(page.locator(image_selector).bounding_box(), viewport)


def measure_transit(strokes: int = 10, long_strokes: int = 3) -> dict:
    """Benchmark (asserts nothing): the app on the preview engine in this process, driven like a user.

    * ``overhead``: per short stroke, pointer-up to its final frame on screen (two animation frames after the
      image's load event) minus the server-side total in the readout, i.e. what the browser, Gradio and the
      network add to the model's time; once with the Live drafts switch off (transit alone) and once on (a draft
      still in flight at pointer-up also delays the final frame). Median, min, max over ``strokes`` strokes, after
      one warm-up stroke each.
    * ``drafts``: per slow continuous 2-second stroke (a small mouse move every ~20 ms), the drafts shown while
      drawing, and the live readout's first-frame latency and frames/s.
    """
    import random
    import statistics

    def spread(values: list[float]) -> dict:
        return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
                "max": round(max(values), 1), "strokes": len(values)}

    report: dict = {}
    with live_app() as (url, engine, _demo), browser() as chromium:
        context = chromium.new_context(viewport={"width": 1280, "height": 1000})
        page = open_app(context, url)
        wait_idle(page)
        switch = page.locator("#live_drafts input[type=checkbox]")
        rnd = random.Random(0)
        for live in (False, True):
            switch.set_checked(live)
            wait_idle(page, quiet_ms=800)
            rows = []
            for index in range(strokes + 1):
                if index and index % 10 == 0:  # on a canvas full of ink a stroke may no longer change the frame
                    page.locator("#sketch .sc-clear").click()
                    wait_idle(page, quiet_ms=800)
                loads_before = page.evaluate("() => (window.__probe.loads.sketch_output || []).length")
                frames_before = page.evaluate("() => window.__probe.frames.length")
                points = [(rnd.uniform(0.1, 0.9), rnd.uniform(0.1, 0.9)) for _ in range(3)]
                draw_stroke(page, points, steps=3)
                page.wait_for_function(f"() => window.__probe.frames.slice({frames_before})"
                                       f".some((f) => f.kind === 'final')", timeout=60_000)
                page.wait_for_timeout(150)
                up = page.evaluate("() => window.__probe.ups.at(-1)")
                loads = page.evaluate("() => window.__probe.loads.sketch_output")[loads_before:]
                shown = [load for load in loads if load["kind"] != "draft" and load["t"] > up and "paint" in load]
                if index and shown:  # the first stroke warms caches
                    rows.append(shown[0]["paint"] - up - latency_total_ms(page))
            report["overhead_ms_live_" + ("on" if live else "off")] = spread(rows)
        drafts = []
        for index in range(long_strokes):
            page.evaluate("() => { window.__probe.frames = []; }")
            box = canvas_box(page)
            x0, y0 = box["x"] + box["width"] * 0.1, box["y"] + box["height"] * (0.2 + 0.15 * (index % 5))
            page.mouse.move(x0, y0)
            page.mouse.down()
            started, step = time.monotonic(), 0
            while time.monotonic() - started < 2.0:
                step += 1
                page.mouse.move(x0 + step * box["width"] * 0.008, y0 + 12 * ((step // 8) % 2))
                page.wait_for_timeout(20)
            shown = page.evaluate("() => window.__probe.frames.filter((f) => f.kind === 'draft').length")
            page.mouse.up()
            wait_idle(page, quiet_ms=800)
            drafts.append({"drafts_while_drawing": shown, "live_line": page.inner_text("#sketch_output .lv-live")})
        report["drafts_per_2s_stroke"] = drafts
        report["model"] = f"{engine.model_name} at {engine.size}x{engine.size}"
    return report


def measure_camera(seconds: int = 60) -> dict:
    """Benchmark (asserts nothing): the Camera tab of the app on the preview engine, in this process, one stream from
    chromium's fake camera (640x480, sent at ``settings.CAMERA_CAPTURE_SIZE``), image-to-image on the default lane
    for ``seconds``. Frames shown per second and the age of the frame on screen (stamped at capture in the page,
    read when the image is shown), per 10-second window, so a backlog building up would show as growing ages."""
    import statistics

    from playwright.sync_api import sync_playwright

    with live_app() as (url, engine, _demo), sync_playwright() as playwright:
        chromium = launch_with_camera(playwright)
        try:
            page = open_camera_tab(chromium, url)
            page.wait_for_timeout(1000)
            page.click("#camera .cam-start")
            page.wait_for_function("() => window.__cam.length >= 3", timeout=60_000)
            page.evaluate("() => { window.__cam.length = 0; }")
            t0 = page.evaluate("() => performance.now()")
            page.wait_for_timeout(seconds * 1000)
            frames = page.evaluate("() => window.__cam")
            readout = page.inner_text("#camera .cam-readout")
            page.click("#camera .cam-stop")
        finally:
            chromium.close()
    windows = []
    for start in range(0, seconds, 10):
        shown = [f for f in frames if start * 1000 <= f["shown_at"] - t0 < (start + 10) * 1000]
        ages = [f["shown_at"] - f["captured_at"] for f in shown]
        windows.append({"from_s": start, "frames_per_s": round(len(shown) / 10, 2),
                        "age_ms_median": round(statistics.median(ages)) if ages else None,
                        "age_ms_max": round(max(ages)) if ages else None})
    ages = [f["shown_at"] - f["captured_at"] for f in frames]
    return {"model": f"{engine.model_name}, capture {settings.CAMERA_CAPTURE_SIZE} px (640x480 camera)",
            "seconds": seconds, "frames_per_s": round(len(frames) / seconds, 2),
            "age_ms_median": round(statistics.median(ages)), "age_ms_max": round(max(ages)),
            "windows": windows, "last_readout": readout}


def measure_paint(strokes: int = 5) -> dict:
    """Benchmark (asserts nothing): on the Paint tab (the app on the preview engine in this process), ``strokes``
    slow continuous 2-second strokes in colour (``slow_stroke``), each on a painting one stroke further on: the
    drafts shown while drawing, the live readout (first-frame latency, frames/s) and the final frame's readout."""
    report: dict = {"drafts_per_2s_stroke": []}
    with live_app() as (url, engine, _demo), browser() as chromium:
        context = chromium.new_context(viewport={"width": 1280, "height": 1000})
        page = open_app(context, url)
        open_paint_tab(page)
        swatches = page.locator("#paint .sc-swatch")
        for index in range(strokes):
            swatches.nth(4 + index % 8).click()  # a colour of the palette (not black, white or grey)
            shown = slow_stroke(page, "#paint canvas", row=0.2 + 0.15 * (index % 5))
            wait_idle(page, "paint_output", quiet_ms=800)
            report["drafts_per_2s_stroke"].append({
                "drafts_while_drawing": shown, "live_line": page.inner_text("#paint_output .lv-live"),
                "final": page.inner_text("#paint_latency").splitlines()[0]})
        drafts = settings.DRAFT_DECODER if engine.has_tiny_decoder else "full"
        report["model"] = f"{engine.model_name} at {engine.size}x{engine.size}, drafts with the {drafts} decoder"
    return report


def take_screenshot(path: Path) -> None:
    """The README screenshot: the app on the preview engine with an example sketch, a stroke and its image."""
    with live_app() as (url, _engine, _demo), browser() as chromium:
        context = chromium.new_context(viewport={"width": 1280, "height": 960}, device_scale_factor=1)
        page = open_app(context, url)
        page.locator("#sketch_examples img").first.click()
        page.wait_for_timeout(500)
        src = wait_idle(page)
        draw_stroke(page, [(0.15, 0.85), (0.35, 0.7), (0.6, 0.75), (0.85, 0.6)])
        wait_new_image(page, src)
        wait_idle(page)
        page.evaluate("() => window.scrollTo(0, 0)")
        png = page.screenshot(full_page=False)
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGB")
        image.thumbnail((1100, 1100))
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, format="PNG", optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "screenshot":
        take_screenshot(Path(sys.argv[2]))
    elif 2 <= len(sys.argv) <= 4 and sys.argv[1] == "measure-transit":
        import json

        print(json.dumps(measure_transit(*(int(arg) for arg in sys.argv[2:])), indent=1))
    elif 2 <= len(sys.argv) <= 3 and sys.argv[1] == "measure-camera":
        import json

        print(json.dumps(measure_camera(*(int(arg) for arg in sys.argv[2:])), indent=1))
    elif 2 <= len(sys.argv) <= 3 and sys.argv[1] == "measure-paint":
        import json

        print(json.dumps(measure_paint(*(int(arg) for arg in sys.argv[2:])), indent=1))
    else:
        print(__doc__)
        sys.exit(2)
