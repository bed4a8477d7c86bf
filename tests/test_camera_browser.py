"""The camera component (``sprint_demo/web/camera.py``) in a real browser: Debian's chromium with its fake camera
(``--use-fake-device-for-media-stream``, permission granted by ``--use-fake-ui-for-media-stream``), or a Y4M file
as the camera (``--use-file-for-fake-video-capture``, one browser process per file), against the stand-in server
functions of ``camera_stub.StubCameraServer`` (one worker, 150 ms a frame) in a tiny app served in this process.

Frames are counted and timed inside the page (the output image's ``camera-frame`` event, on ``performance.now()``);
the server side is checked on the stub's records (``time.monotonic()``). Figures are printed and written to
``FIGURES_JSON``.

If /usr/bin/chromium is missing these tests FAIL (never skip): ``apt-get install -y chromium``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as helpers  # noqa: E402  (tests/browser.py)
import camera_stub  # noqa: E402  (tests/camera_stub.py)

pytestmark = pytest.mark.browser
FIGURES_JSON = Path("/tmp/sprint_camera_figures.json")
RED, BLUE = (220, 30, 30), (30, 40, 220)
PROMPT_A, PROMPT_B = "a blue lake", "a watercolour"  # stub colours (246, 225, 45) and (88, 5, 122)
COLOUR_TOLERANCE = 12.0  # mean level difference allowed between a shown frame and the stub's expected colour

figures: dict = {}


def record(name: str, values: dict) -> None:
    figures[name] = values
    print(f"\n{name}: {json.dumps(values)}")
    FIGURES_JSON.write_text(json.dumps(figures, indent=1))


@pytest.fixture(scope="module")
def app():
    yield from camera_stub.serve_camera_app(prompt=PROMPT_A)


def shown_count(page) -> int:
    return len(page.evaluate("() => window.__cam"))


def now_ms(page) -> float:
    return page.evaluate("() => performance.now()")


def output_image(page):
    return camera_stub.data_url_image(page.evaluate("() => document.querySelector('#camera_output').src"))


def mean_rgb(image) -> np.ndarray:
    return np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0)


def halves(image) -> tuple[str, str]:
    """Which of red and blue dominates the left and the right half of an image."""
    pixels = np.asarray(image, dtype=float)
    width = pixels.shape[1]
    return tuple("red" if part[..., 0].mean() > part[..., 2].mean() else "blue"
                 for part in (pixels[:, : width // 2 - 8], pixels[:, width // 2 + 8:]))


def work_for(stub, sess: str, seq: int):
    return next(work for work in stub.works_of(sess) if work.seq == seq)


def status(page) -> str:
    return page.inner_text("#camera .cam-status")


@pytest.mark.slow
def test_frames_per_second_and_order(app, playwright):
    """(a) 10 s of streaming: frames shown per second against the 150 ms stub, every frame's seq newer than the
    last, frame ages (capture to screen); and the page's furniture (one camera: no front/back choice)."""
    chromium = helpers.launch_with_camera(playwright)
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        assert page.inner_text("#camera .cam-note") == ("Frames are sent to the server only to make the image "
                                                        "and are not stored.")
        assert page.inner_text("#camera .cam-start") == "Start"
        helpers.start_camera(page, 2)
        page.evaluate("() => { window.__cam.length = 0; }")
        t0 = now_ms(page)
        page.wait_for_timeout(10_000)
        # one instant: the frames shown so far and the image on screen (a frame may come between two reads)
        snap = page.evaluate("() => { const o = document.querySelector('#camera_output'); "
                             "return {t: performance.now(), frames: window.__cam.slice(), out: {"
                             "seq: Number(o.dataset.seq), captured: Number(o.dataset.capturedAt), "
                             "shown: Number(o.dataset.shownAt), count: Number(o.dataset.shown), w: o.naturalWidth, "
                             "h: o.naturalHeight}}; }")
        t1, frames, out = snap["t"], snap["frames"], snap["out"]
        assert frames, "no frame shown in 10 s"
        seqs = [f["seq"] for f in frames]
        assert all(b > a for a, b in zip(seqs, seqs[1:])), f"frames out of order: {seqs}"
        fps = len(frames) / ((t1 - t0) / 1000)
        ages = [f["shown_at"] - f["captured_at"] for f in frames]
        sent = int(page.evaluate("() => document.querySelector('#camera .cam-root').dataset.sent"))
        latency = page.inner_text("#camera_latency")
        record("frames_per_second", {
            "seconds": round((t1 - t0) / 1000, 2), "frames_shown": len(frames), "frames_per_s": round(fps, 2),
            "frames_sent_total": sent, "frame_age_ms_median": round(float(np.median(ages))),
            "frame_age_ms_max": round(max(ages)), "frame_age_ms_min": round(min(ages)), "latency_line": latency})
        assert fps >= 3.0, f"{fps:.2f} frames/s shown against a 150 ms stand-in"
        assert max(ages) < 1500, f"a frame {max(ages):.0f} ms old was shown"
        assert out["seq"] == seqs[-1] and out["shown"] >= out["captured"] and out["count"] >= len(frames)
        assert (out["w"], out["h"]) == (512, 384)  # the fake camera is 640x480
        assert "frames/s" in latency and "server" in latency and "round trip" in latency and "age" in latency
        assert page.evaluate("() => document.querySelector('#camera .cam-facing').hidden")  # one camera
        assert page.is_disabled("#camera .cam-start") and page.is_enabled("#camera .cam-stop")
    finally:
        chromium.close()


@pytest.mark.slow
def test_stop_stops_at_once(app, playwright):
    """(b) After Stop: no frame is shown (the output keeps the last one), the server is told at once and starts no
    work for the session after that (only the frame in flight at Stop finishes); Start again streams again."""
    chromium = helpers.launch_with_camera(playwright)
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        sess = helpers.camera_session(page)
        helpers.start_camera(page, 6)
        before_click = time.monotonic()
        page.click("#camera .cam-stop")
        stopped_at = float(page.evaluate("() => document.querySelector('#camera .cam-root').dataset.stoppedAt"))
        last_src = page.evaluate("() => document.querySelector('#camera_output').src")
        page.wait_for_timeout(2000)
        after = [f for f in page.evaluate("() => window.__cam") if f["shown_at"] > stopped_at]
        latest = max((f["shown_at"] - stopped_at for f in after), default=None)
        assert after == [], f"frames shown after Stop: {after}"
        assert page.evaluate("() => document.querySelector('#camera_output').src") == last_src  # the last frame
        stops = app.stub.stops_of(sess)
        assert len(stops) == 1, stops
        stop = stops[0]
        sent = int(page.evaluate("() => document.querySelector('#camera .cam-root').dataset.sent"))
        assert stop.seq == sent  # the page told the server the newest frame it sent
        works = app.stub.works_of(sess)
        late = [w for w in works if w.started > before_click]
        assert not [w for w in works if w.started >= stop.at], "work started for the session after camera_stop"
        assert len(late) <= 1, f"more than the frame in flight started after Stop: {late}"
        in_flight_end = max((w.ended or 0) for w in works)
        record("after_stop", {
            "camera_stop_after_click_ms": round((stop.at - before_click) * 1000),
            "frames_shown_after_stop": len(after), "latest_frame_after_stop_ms": latest,
            "work_started_after_click": len(late),
            "last_work_ended_after_click_ms": round((in_flight_end - before_click) * 1000)})
        assert page.is_enabled("#camera .cam-start") and page.is_disabled("#camera .cam-stop")
        assert "press Start" in status(page)
        # Start again: new frames, newer than every frame of the first run.
        old_seq = int(page.evaluate("() => document.querySelector('#camera_output').dataset.seq"))
        helpers.start_camera(page, 2)
        assert int(page.evaluate("() => document.querySelector('#camera_output').dataset.seq")) > old_seq
    finally:
        chromium.close()


@pytest.mark.slow
def test_two_cameras_no_cross_talk(app, playwright, tmp_path):
    """(c) Two browser processes, each with its own fake camera file (red, blue) and its own prompt, streaming at
    once: each shows images made from its own camera and its own prompt."""
    pairs = [(RED, PROMPT_A, "red"), (BLUE, PROMPT_B, "blue")]
    assert np.abs(np.subtract(camera_stub.prompt_colour(PROMPT_A), camera_stub.prompt_colour(PROMPT_B))).max() > 150
    chromiums, pages = [], []
    try:
        for rgb, prompt, name in pairs:
            video = camera_stub.write_y4m(tmp_path / f"{name}.y4m", 320, 240, rgb, frames=8)
            chromium = helpers.launch_with_camera(playwright, f"--use-file-for-fake-video-capture={video}")
            chromiums.append(chromium)
            page = helpers.open_camera_tab(chromium, app.url)
            page.fill("#prompt textarea", prompt)
            pages.append(page)
        for page in pages:
            page.click("#camera .cam-start")
        for page in pages:
            page.wait_for_function("() => window.__cam.length >= 3", timeout=20_000)
        pages[0].wait_for_timeout(3000)  # both streaming together
        result = {}
        for page, (rgb, prompt, name) in zip(pages, pairs):
            sess = helpers.camera_session(page)
            seq = int(page.evaluate("() => document.querySelector('#camera_output').dataset.seq"))
            work = work_for(app.stub, sess, seq)
            assert work.prompt == prompt
            assert (work.size[0], work.size[1]) == (512, 384)  # 320x240 keeps its aspect ratio
            camera_in = np.asarray(work.input_mean)
            assert np.abs(camera_in - rgb).max() < 25, f"{name} camera sent {camera_in}"
            shown = mean_rgb(output_image(page))
            expected = camera_stub.expected_mean(camera_in, prompt)
            assert np.abs(shown - expected).max() < COLOUR_TOLERANCE, (name, shown, expected)
            for other_rgb, other_prompt, _ in pairs:  # nearer its own camera and prompt than any other pairing
                if (other_rgb, other_prompt) != (rgb, prompt):
                    assert np.abs(shown - camera_stub.expected_mean(other_rgb, other_prompt)).max() > 40
            own = {f["seq"] for f in page.evaluate("() => window.__cam")}
            result[name] = {"frames": len(own), "shown_mean": [round(v) for v in shown],
                            "expected": [round(v) for v in expected]}
        # the two sessions' work interleaved on the one worker (they streamed at once)
        spans = [(min(w.started for w in app.stub.works_of(helpers.camera_session(p))),
                  max(w.started for w in app.stub.works_of(helpers.camera_session(p)))) for p in pages]
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
        record("two_cameras", result)
    finally:
        for chromium in chromiums:
            chromium.close()


@pytest.mark.slow
def test_prompt_change_mid_stream(app, playwright):
    """(d) A new prompt typed while streaming reaches the next captured frames: the images change to it."""
    chromium = helpers.launch_with_camera(playwright)
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        page.fill("#prompt textarea", PROMPT_A)
        helpers.start_camera(page, 3)
        assert PROMPT_A in page.inner_text("#camera .cam-readout")
        typed = now_ms(page)
        page.fill("#prompt textarea", PROMPT_B)
        page.wait_for_function(f"() => window.__cam.some((f) => f.readout.includes({json.dumps(PROMPT_B)}))",
                               timeout=10_000)
        page.wait_for_timeout(1000)
        frames = page.evaluate("() => window.__cam")
        first_b = next(f for f in frames if PROMPT_B in f["readout"])
        later = [f for f in frames if f["seq"] >= first_b["seq"]]
        assert len(later) >= 3 and all(PROMPT_B in f["readout"] for f in later), later
        # no frame captured after the change was made with the old prompt
        assert not [f for f in frames if f["captured_at"] > first_b["captured_at"] and PROMPT_A in f["readout"]]
        sess = helpers.camera_session(page)
        shown = mean_rgb(output_image(page))
        work = work_for(app.stub, sess, int(page.evaluate("() => document.querySelector('#camera_output')"
                                                             ".dataset.seq")))
        assert work.prompt == PROMPT_B
        expected = camera_stub.expected_mean(work.input_mean, PROMPT_B)
        assert np.abs(shown - expected).max() < COLOUR_TOLERANCE, (shown, expected)
        record("prompt_change", {"typed_to_new_prompt_on_screen_ms": round(first_b["shown_at"] - typed)})
        assert first_b["shown_at"] - typed < 2000
    finally:
        chromium.close()


def test_permission_refused(app, playwright):
    """(e) Permission refused (no fake permission UI: headless chromium turns the prompt down): the message says
    what to do, no frame is sent, Start stays usable."""
    chromium = helpers.launch_with_camera(playwright, grant=False)
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        page.click("#camera .cam-start")
        message = ("Camera permission was refused: allow the camera in the browser's site settings, then press "
                   "Start.")
        page.wait_for_function(f"() => document.querySelector('#camera .cam-status').textContent === "
                               f"{json.dumps(message)}", timeout=10_000)
        assert page.is_enabled("#camera .cam-start") and page.is_disabled("#camera .cam-stop")
        assert page.evaluate("() => document.querySelector('#camera .cam-root').dataset.sent") is None
        assert app.stub.works_of(helpers.camera_session(page)) == []
    finally:
        chromium.close()


def test_non_square_camera_keeps_its_aspect_and_mirrors(app, playwright, tmp_path):
    """(e) A 640x480 camera arrives at the server as 512x384 (longer side capture_size, multiples of 32); the
    frames sent are mirrored while the switch is on (the front camera's default), and not once it is off."""
    video = camera_stub.write_y4m(tmp_path / "wide.y4m", 640, 480, RED, frames=4, right_rgb=BLUE)
    chromium = helpers.launch_with_camera(playwright, f"--use-file-for-fake-video-capture={video}")
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        assert page.is_checked("#camera .cam-mirror")
        helpers.start_camera(page, 2)
        sess = helpers.camera_session(page)
        sizes = {w.size for w in app.stub.works_of(sess)}
        assert sizes == {(512, 384)}, sizes
        assert "640x480" in status(page) and "512x384" in status(page)
        image = output_image(page)
        assert image.size == (512, 384)
        assert halves(image) == ("blue", "red")  # mirrored: the camera's right half on the left
        page.uncheck("#camera .cam-mirror")
        count = shown_count(page)
        page.wait_for_function(f"() => window.__cam.length >= {count + 3}", timeout=10_000)
        assert halves(output_image(page)) == ("red", "blue")
    finally:
        chromium.close()


# Camera (width, height) -> the frame the server receives at capture_size 512: the video's aspect ratio, longer side
# 512, each side rounded to the nearest multiple of 32 with halves rounded up (340 x 0.8 = 272 = 8.5 x 32 -> 288,
# where rounding half to even would give 256), and never under one multiple (16 x 0.8 = 12.8 -> 32).
CAPTURE_SHAPES = [((240, 320), (384, 512)), ((640, 340), (512, 288)), ((640, 16), (512, 32))]


@pytest.mark.slow
def test_captured_frame_shapes(app, playwright, tmp_path):
    """Portrait, half-way and very thin cameras (Y4M files, one browser process each): the frames the server
    receives have the shape the page's capture rule gives (CAPTURE_SHAPES), and the status line says so."""
    for (width, height), expected in CAPTURE_SHAPES:
        video = camera_stub.write_y4m(tmp_path / f"{width}x{height}.y4m", width, height, RED, frames=4)
        chromium = helpers.launch_with_camera(playwright, f"--use-file-for-fake-video-capture={video}")
        try:
            page = helpers.open_camera_tab(chromium, app.url)
            helpers.start_camera(page, 2)
            sizes = {w.size for w in app.stub.works_of(helpers.camera_session(page))}
            assert sizes == {expected}, (width, height, sizes)
            assert f"{width}x{height}, sent as {expected[0]}x{expected[1]}" in status(page), status(page)
        finally:
            chromium.close()


@pytest.mark.slow
def test_time_limit_and_snapshot(app, playwright):
    """The session's time limit: the page stops and says to press Start again (which works); Snapshot keeps the
    frame at full quality with a download link, and becomes the component's value."""
    chromium = helpers.launch_with_camera(playwright)
    saved = app.stub.time_limit_s
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        helpers.start_camera(page, 2)
        page.click("#camera .cam-snap")
        page.wait_for_function("() => !document.querySelector('#camera .cam-snapshot').hidden", timeout=10_000)
        href = page.get_attribute("#camera .cam-snap-save", "href")
        assert href.startswith("data:image/jpeg;base64,")
        assert page.get_attribute("#camera .cam-snap-save", "download").endswith(".jpg")
        snapshots = [w for w in app.stub.works_of(helpers.camera_session(page)) if w.seq is None]
        assert snapshots, "no snapshot work on the server"
        assert camera_stub.data_url_image(href).size == (512, 384)
        app.stub.time_limit_s = 1.0
        page.wait_for_function("() => document.querySelector('#camera .cam-root').dataset.running === 'false'",
                               timeout=10_000)
        text = status(page)
        assert "time limit" in text and "Press Start again" in text, text
        assert page.is_enabled("#camera .cam-start")
        app.stub.time_limit_s = saved
        helpers.start_camera(page, 2)  # the stop restarted the session's window
    finally:
        app.stub.time_limit_s = saved
        chromium.close()


def test_front_and_back_cameras(app, playwright):
    """Two cameras: the front/back choice appears once the camera is open; choosing Back swaps the camera while
    streaming and turns the mirror off."""
    chromium = helpers.launch_with_camera(playwright, "--use-fake-device-for-media-stream=device-count=2")
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        helpers.start_camera(page, 1)
        page.wait_for_function("() => !document.querySelector('#camera .cam-facing').hidden", timeout=5000)
        assert "fake_device_0" in status(page)
        count = shown_count(page)
        page.select_option("#camera .cam-facing", "environment")
        page.wait_for_function(f"() => window.__cam.length >= {count + 3}", timeout=10_000)
        page.wait_for_function("() => document.querySelector('#camera .cam-status').textContent"
                               ".includes('fake_device_1')", timeout=5000)
        assert not page.is_checked("#camera .cam-mirror")
    finally:
        chromium.close()


@pytest.mark.slow
def test_leaving_the_tab_stops_the_camera(app, playwright):
    """Gradio keeps a left tab's components in the page, hidden, and the video keeps playing there: the camera
    stops itself (and tells the server) when its tab is left, and Start works again when it is back."""
    chromium = helpers.launch_with_camera(playwright)
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        sess = helpers.camera_session(page)
        helpers.start_camera(page, 2)
        page.get_by_role("tab", name="Other").click()
        page.wait_for_function("() => document.querySelector('#camera .cam-root').dataset.running === 'false'",
                               timeout=5000)
        deadline = time.monotonic() + 5  # the page stopped; its camera_stop POST is on its way
        while not app.stub.stops_of(sess) and time.monotonic() < deadline:
            page.wait_for_timeout(20)
        stops = app.stub.stops_of(sess)
        assert len(stops) == 1, stops
        page.wait_for_timeout(800)
        assert not [w for w in app.stub.works_of(sess) if w.started >= stops[0].at]
        page.get_by_role("tab", name="Camera").click()
        assert "tab was left" in status(page)
        helpers.start_camera(page, 1)
    finally:
        chromium.close()


@pytest.mark.slow
def test_errors_busy_and_insecure_origin(app, playwright):
    """A server error shows in the status line and streaming goes on, until max_errors (5) in a row stop it; a
    full server ("busy") makes the page back off, not stop; a page not served over HTTPS or from localhost says
    that the browser will not open the camera there."""
    chromium = helpers.launch_with_camera(playwright, "--host-resolver-rules=MAP camera.example 127.0.0.1")
    saved = app.stub.max_waiting
    try:
        page = helpers.open_camera_tab(chromium, app.url)
        helpers.start_camera(page, 1)
        app.stub.fail_with = "stub model fault"
        page.wait_for_function("() => document.querySelector('#camera .cam-status').textContent"
                               ".startsWith('stub model fault')", timeout=5000)
        page.wait_for_function("() => document.querySelector('#camera .cam-root').dataset.running === 'false'",
                               timeout=10_000)
        assert "5 times in a row" in status(page), status(page)
        app.stub.fail_with = None
        app.stub.max_waiting = 0  # every frame: busy
        sent_before = int(page.evaluate("() => document.querySelector('#camera .cam-root').dataset.sent"))
        page.click("#camera .cam-start")
        page.wait_for_function("() => document.querySelector('#camera .cam-status').textContent"
                               ".includes('busy')", timeout=5000)
        page.wait_for_timeout(3000)
        sent = int(page.evaluate("() => document.querySelector('#camera .cam-root').dataset.sent")) - sent_before
        assert page.evaluate("() => document.querySelector('#camera .cam-root').dataset.running") == "true"
        assert sent <= 12, f"{sent} frames sent in 3 s to a full server: no back-off"
        app.stub.max_waiting = saved
        page.wait_for_function("() => document.querySelector('#camera .cam-status').textContent"
                               ".startsWith('Streaming')", timeout=10_000)
        record("busy_back_off", {"frames_sent_in_3s_while_busy": sent})

        port = app.url.rsplit(":", 1)[1]
        insecure = helpers.open_camera_tab(chromium, f"http://camera.example:{port}")
        assert not insecure.evaluate("() => window.isSecureContext")
        insecure.click("#camera .cam-start")
        assert status(insecure) == "Browsers allow the camera only over HTTPS or on localhost."
        assert insecure.is_enabled("#camera .cam-start")
    finally:
        app.stub.fail_with = None
        app.stub.max_waiting = saved
        chromium.close()
