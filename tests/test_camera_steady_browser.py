"""Steady camera streams in Debian's chromium on the real preview engine, with fake cameras made from Y4M files
(``--use-file-for-fake-video-capture``, one browser per file) written here: a still picture with sensor-like noise
in every frame, and a slow pan over it (``sprint_demo.tools.scenes``).

With the app's defaults (skipping on, ``settings.SKIP_REFRESH_S``), a still scene costs at most a fifth of the model
frames per second of a moving one, whose frames still reach the page at >= 2 frames/s; the still scene's picture
stays on screen; a prompt changed during a still scene makes a new frame at once; Stop ends the stream's work at
once. Model frames are the engine's own count (``Engine.frame_counts``; one browser streams at a time).
If /usr/bin/chromium is missing these tests FAIL (never skip).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as helpers  # noqa: E402
import camera_stub  # noqa: E402
import support  # noqa: E402

from sprint_demo.tools.scenes import NOISE_LEVELS, view, world  # noqa: E402
from sprint_demo.web import messages  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WIDTH, HEIGHT, FPS = 640, 480, 15
PAN_PX = 4  # per video frame at 640 px: about 3 px at the capture size, 60 px/s, a slow pan
SECONDS = 15  # measured per scene: 5 refresh bounds of a still scene

ON_SCREEN_JS = """() => { const i = document.querySelector('#camera_output');
  return Boolean(i && i.complete && i.naturalWidth > 0 && (i.src || '').startsWith('data:image')); }"""


@pytest.fixture(scope="module")
def served():
    with support.live_app() as (url, engine, _demo):
        yield url, engine


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """still.y4m: one picture, new sensor noise every frame (2 s, looped); moving.y4m: a pan over it (4 s)."""
    folder, rng = tmp_path_factory.mktemp("cameras"), np.random.default_rng(0)
    scene = world(WIDTH + PAN_PX * 4 * FPS + 1, HEIGHT, seed=2)
    still = view(scene, WIDTH, HEIGHT, 0)

    def noisy(picture):
        return np.clip(np.round(picture + rng.normal(0, NOISE_LEVELS, picture.shape)), 0, 255).astype(np.uint8)

    return {"still": camera_stub.write_y4m_frames(folder / "still.y4m", [noisy(still) for _ in range(2 * FPS)], FPS),
            "moving": camera_stub.write_y4m_frames(
                folder / "moving.y4m", [noisy(view(scene, WIDTH, HEIGHT, PAN_PX * i)) for i in range(4 * FPS)], FPS)}


def open_camera(playwright, url: str, video: Path, prompt: str = "an oil painting"):
    chromium = helpers.launch_with_camera(playwright, f"--use-file-for-fake-video-capture={video}")
    page = helpers.open_camera_tab(chromium, url)
    page.locator("#camera_prompt textarea").fill(prompt)
    page.wait_for_timeout(500)  # the client-side event hands the tab's inputs to the camera
    helpers.start_camera(page, 2, timeout_ms=90_000)
    return chromium, page


def measure(page, engine, seconds: float) -> dict:
    """Frames shown and made per second over ``seconds``, and whether a picture was on screen at every look (4/s)."""
    page.evaluate("() => { window.__cam.length = 0; }")
    made, began, looks = engine.frame_counts["made"], time.monotonic(), []
    while time.monotonic() - began < seconds:
        looks.append(page.evaluate(ON_SCREEN_JS))
        page.wait_for_timeout(250)
    elapsed = time.monotonic() - began
    shown = len(page.evaluate("() => window.__cam"))
    made = engine.frame_counts["made"] - made
    return {"shown_per_s": round(shown / elapsed, 2), "made_per_s": round(made / elapsed, 2),
            "on_screen": all(looks), "looks": len(looks)}


def test_a_still_scene_costs_a_fifth_of_a_moving_one_and_stays_on_screen(served, videos, playwright):
    url, engine = served
    figures = {}
    for name in ("still", "moving"):
        chromium, page = open_camera(playwright, url, videos[name])
        try:
            figures[name] = measure(page, engine, SECONDS)
            page.click("#camera .cam-stop")
        finally:
            chromium.close()
    print(f"\nchromium fake cameras, preview engine, skipping on: {figures}")
    still, moving = figures["still"], figures["moving"]
    assert moving["shown_per_s"] >= 2.0, figures
    assert still["made_per_s"] <= moving["made_per_s"] / 5, figures
    assert still["on_screen"] and still["shown_per_s"] >= 2.0, figures  # skipped frames are answered too


def readouts(page) -> list[str]:
    return page.evaluate("() => window.__cam.map((f) => f.readout)")


def test_a_prompt_change_during_a_still_scene_makes_a_frame_at_once(served, videos, playwright):
    """With the refresh bound out of the way (60 s), only the change can make the frame."""
    url, engine = served
    engine.steady.refresh_s, bound = 60.0, engine.steady.refresh_s
    chromium, page = open_camera(playwright, url, videos["still"], prompt="a castle")
    try:
        page.wait_for_function(f"() => window.__cam.slice(-3).every((f) => f.readout.includes("
                               f"{messages.CAMERA_UNCHANGED!r})) && window.__cam.length >= 5", timeout=30_000)
        made = engine.frame_counts["made"]
        count = len(readouts(page))
        changed = time.monotonic()
        page.locator("#camera_prompt textarea").fill("a spaceship")
        page.wait_for_function(f"() => window.__cam.slice({count}).some((f) => !f.readout.includes("
                               f"{messages.CAMERA_UNCHANGED!r}))", timeout=15_000)
        waited = time.monotonic() - changed
        print(f"\na prompt changed during a still scene: a new frame shown {1000 * waited:.0f} ms later")
        assert engine.frame_counts["made"] > made
        assert waited < 10.0  # the bound it replaced is 60 s
    finally:
        engine.steady.refresh_s = bound
        chromium.close()


def test_stop_ends_a_still_stream_at_once(served, videos, playwright):
    url, engine = served
    chromium, page = open_camera(playwright, url, videos["still"])
    try:
        page.wait_for_timeout(2_000)
        session = "camera:" + helpers.camera_session(page)
        page.click("#camera .cam-stop")
        stopped_at = float(page.evaluate("() => document.querySelector('#camera .cam-root').dataset.stoppedAt"))
        page.wait_for_timeout(500)  # a frame in flight ends
        made = engine.frame_counts["made"]
        page.wait_for_timeout(2_000)
        late = [f for f in page.evaluate("() => window.__cam") if f["shown_at"] > stopped_at]
        assert late == [], "frames shown after Stop"
        assert engine.frame_counts["made"] == made, "model frames after Stop"
        assert session not in engine.steady.last, "the stopped stream's last frame is still kept"
    finally:
        chromium.close()
