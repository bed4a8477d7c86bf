"""The Camera tab of the app on the real preview engine, in Debian's chromium with a fake camera: frames per
second and frame ages, Stop checked on the server (no engine work for the stream after its frame in flight), two
browsers with their own cameras and prompts (no cross-talk), a prompt changed mid-stream, and the server functions
on their own (bad input, a stopped or expired stream, a snapshot at full quality).

The engine's work is recorded where it happens: every batch the model thread runs, with the sessions of its
frames (the batch runner the engine hands its ``Batcher``, wrapped); every frame the server answered, with the
JPEG it sent (the camera's server function, wrapped). Frames are counted and timed in the page (the output's
``camera-frame`` events).
If /usr/bin/chromium is missing the browser tests FAIL (never skip).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser as helpers  # noqa: E402
import camera_stub  # noqa: E402
import support  # noqa: E402

from sprint_demo import settings  # noqa: E402
from sprint_demo.sketches import png_data_url  # noqa: E402
from sprint_demo.web.camera_handlers import CAMERA_INPUTS, CameraHandlers  # noqa: E402

RED, BLUE = (220, 30, 30), (30, 40, 220)


@dataclass
class Record:
    """What the server did, by camera session ("camera:<page session>")."""

    batches: list[tuple[str | None, float, float]] = field(default_factory=list)  # (session, started, ended)
    answers: dict[str, list[dict]] = field(default_factory=dict)  # session -> {seq, digest, prompt, colour}
    cancels: dict[str, float] = field(default_factory=dict)  # session -> when the engine was told
    lock: threading.Lock = field(default_factory=threading.Lock)

    def work(self, session: str) -> list[tuple[float, float]]:
        with self.lock:
            return [(start, end) for s, start, end in self.batches if s == session]


def digest(src: str) -> str:
    return hashlib.blake2b(src.encode(), digest_size=8).hexdigest()


@pytest.fixture(scope="module")
def served():
    """The app on the preview engine, with the engine's batches and the camera's answers recorded."""
    record = Record()
    real_frame = CameraHandlers.frame

    def camera_frame(self, request):
        answer = real_frame(self, request)
        if "src" in answer:
            picture = np.asarray(camera_stub.data_url_image(request["image"]), dtype=float)
            with record.lock:
                record.answers.setdefault("camera:" + request["session"], []).append(
                    {"seq": answer["seq"], "digest": digest(answer["src"]), "prompt": request["inputs"]["prompt"],
                     "colour": picture.reshape(-1, 3).mean(axis=0)})
        return answer

    with mock.patch.object(CameraHandlers, "frame", camera_frame), support.live_app() as (url, engine, demo):
        real_run, real_cancel = engine.batcher._run_batch, engine.cancel

        def run_batch(batch):
            started = time.monotonic()
            try:
                return real_run(batch)
            finally:
                with record.lock:
                    record.batches += [(t.session, started, time.monotonic()) for t in batch]

        def cancel(session):
            with record.lock:
                record.cancels[session] = time.monotonic()
            real_cancel(session)

        engine.batcher._run_batch, engine.cancel = run_batch, cancel
        try:
            yield url, engine, record
        finally:
            engine.batcher._run_batch = real_run
            del engine.cancel


def open_camera(playwright, url: str, *extra: str, prompt: str = ""):
    chromium = helpers.launch_with_camera(playwright, *extra)
    page = helpers.open_camera_tab(chromium, url)
    if prompt:
        page.locator("#camera_prompt textarea").fill(prompt)
    page.wait_for_timeout(500)  # the client-side event hands the tab's inputs to the camera
    return chromium, page


def session_of(page) -> str:
    return "camera:" + helpers.camera_session(page)


def frames(page) -> list[dict]:
    return page.evaluate("() => window.__cam")


@pytest.mark.browser
@pytest.mark.slow
def test_a_stream_shows_fresh_frames_and_stop_ends_the_engine_s_work_for_it(served, playwright):
    url, engine, record = served
    chromium, page = open_camera(playwright, url, prompt="an oil painting")
    try:
        helpers.start_camera(page, 2, timeout_ms=90_000)
        page.evaluate("() => { window.__cam.length = 0; }")
        t0 = page.evaluate("() => performance.now()")
        page.wait_for_timeout(10_000)
        shown, t1 = frames(page), page.evaluate("() => performance.now()")
        fps = len(shown) / ((t1 - t0) / 1000)
        ages = [f["shown_at"] - f["captured_at"] for f in shown]
        third = max(1, len(ages) // 3)
        print(f"\ncamera, preview engine, one stream: {fps:.2f} frames/s shown, frame age median "
              f"{np.median(ages):.0f} ms (first third {np.median(ages[:third]):.0f}, last third "
              f"{np.median(ages[-third:]):.0f})")
        seqs = [f["seq"] for f in shown]
        assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs
        assert fps >= 1.0, f"{fps:.2f} frames/s"
        assert np.median(ages[-third:]) <= 1.5 * np.median(ages[:third]) + 150, "frames are getting older"
        session = session_of(page)
        assert {a["digest"] for a in record.answers[session]} >= {digest(f["src"]) for f in shown}

        clicked = time.monotonic()
        page.click("#camera .cam-stop")
        stopped_at = float(page.evaluate("() => document.querySelector('#camera .cam-root').dataset.stoppedAt"))
        page.wait_for_timeout(2_000)
        late = [f for f in frames(page) if f["shown_at"] > stopped_at]
        assert late == [], "frames shown after Stop"
        cancelled = record.cancels[session]
        work = record.work(session)
        after = [(start, end) for start, end in work if start >= cancelled]
        in_flight = [(start, end) for start, end in work if start < cancelled <= end]
        ended = max([end for _, end in in_flight], default=cancelled)
        print(f"Stop: the engine was told {1000 * (cancelled - clicked):.0f} ms after the click; "
              f"{len(in_flight)} frame in flight, ended {1000 * (ended - cancelled):.0f} ms after that")
        assert after == [], f"engine work for the stream started after Stop: {after}"
        assert len(in_flight) <= 1
    finally:
        chromium.close()


@pytest.mark.browser
@pytest.mark.slow
def test_two_cameras_and_two_prompts_each_get_their_own_frames(served, playwright, tmp_path):
    url, _engine, record = served
    red = camera_stub.write_y4m(tmp_path / "red.y4m", 640, 480, RED)
    blue = camera_stub.write_y4m(tmp_path / "blue.y4m", 640, 480, BLUE)
    first, page_red = open_camera(playwright, url, f"--use-file-for-fake-video-capture={red}", prompt="a red bus")
    second, page_blue = open_camera(playwright, url, f"--use-file-for-fake-video-capture={blue}", prompt="the sea")
    try:
        for page in (page_red, page_blue):
            page.click("#camera .cam-start")
        for page in (page_red, page_blue):
            page.wait_for_function("() => window.__cam.length >= 4", timeout=90_000)  # both stream at once
        for page, colour, prompt in ((page_red, RED, "a red bus"), (page_blue, BLUE, "the sea")):
            answers = record.answers[session_of(page)]
            made = {a["digest"]: a for a in answers}
            for shown in frames(page):
                answer = made.get(digest(shown["src"]))
                assert answer is not None, "a frame shown that the server did not make for this stream"
                assert answer["prompt"] == prompt
                assert np.abs(answer["colour"] - np.array(colour)).max() < 60, answer["colour"]
    finally:
        first.close()
        second.close()


@pytest.mark.browser
@pytest.mark.slow
def test_a_prompt_changed_mid_stream_changes_the_next_frames(served, playwright):
    url, _engine, record = served
    chromium, page = open_camera(playwright, url, prompt="a castle")
    try:
        helpers.start_camera(page, 2, timeout_ms=90_000)
        page.locator("#camera_prompt textarea").fill("a spaceship")
        settled = page.evaluate("() => performance.now()") + 300  # the client-side event reaches the camera
        page.wait_for_function(f"() => window.__cam.filter((f) => f.captured_at > {settled}).length >= 2",
                               timeout=60_000)
        made = {a["digest"]: a["prompt"] for a in record.answers[session_of(page)]}
        later = [f for f in frames(page) if f["captured_at"] > settled]
        assert later and all(made[digest(f["src"])] == "a spaceship" for f in later)
        assert "a castle" in {made[digest(f["src"])] for f in frames(page)}
    finally:
        chromium.close()


# --- the server functions on their own ---------------------------------------------------------------------------
def _camera_functions(engine):
    from sprint_demo.web.handlers import FrameMaker

    handlers = CameraHandlers(FrameMaker(engine))
    return handlers, {fn.__name__: fn for fn in handlers.server_functions()}


def _values(**changes) -> dict:
    return dict(zip(CAMERA_INPUTS, ("a fox", "image", settings.DEFAULT_CAMERA_STRENGTH, 1, 3,
                                    settings.DEFAULT_GUIDANCE, 1.0, "full", settings.DEFAULT_STEADINESS))) | changes


def _frame_request(seq: int, session: str = "s1", **changes) -> dict:
    from PIL import Image

    return {"image": png_data_url(Image.new("RGB", (640, 480), RED)), "inputs": _values(**changes), "seq": seq,
            "session": session, "captured_at": 12.5}


def test_camera_frames_images_and_edges_and_refusals_by_name():
    handlers, fns = _camera_functions(support.preview_engine())
    answer = fns["camera_frame"](_frame_request(1))
    assert answer["seq"] == 1 and answer["captured_at"] == 12.5 and answer["src"].startswith("data:image/jpeg")
    assert "strength 0.5" in answer["readout"] and camera_stub.data_url_image(answer["src"]).size == (512, 384)
    edges = fns["camera_frame"](_frame_request(2, mode="edges"))
    assert "src" in edges and "strength" not in edges["readout"] and "control_encode" in edges["readout"]
    assert "mode must be one of image, edges" in fns["camera_frame"](_frame_request(3, mode="sketch"))["error"]
    assert "strength" in fns["camera_frame"](_frame_request(4, strength=0))["error"]
    assert "camera frame request is" in fns["camera_frame"]({"image": "x", "inputs": [], "seq": 5})["error"]
    assert "src" in fns["camera_frame"](_frame_request(6))  # still serving


def test_a_failing_edge_detector_is_a_message_for_frames_and_snapshots_and_the_stream_goes_on(monkeypatch):
    engine = support.preview_engine()
    _handlers, fns = _camera_functions(engine)

    def broken(*_args, **_kwargs):
        raise RuntimeError("HED weights are corrupt")

    monkeypatch.setattr(engine, "photo_to_control_map", broken)
    frame = fns["camera_frame"](_frame_request(1, mode="edges"))
    assert frame["seq"] == 1 and "RuntimeError: HED weights are corrupt" in frame["error"]
    snapshot = _frame_request(2, mode="edges")
    del snapshot["seq"]
    assert "RuntimeError: HED weights are corrupt" in fns["camera_snapshot"](snapshot)["error"]
    assert "src" in fns["camera_frame"](_frame_request(3))  # image mode needs no edges: still serving


def test_a_stopped_stream_drops_late_frames_and_a_long_one_expires(monkeypatch):
    handlers, fns = _camera_functions(support.preview_engine())
    assert fns["camera_stop"]({"session": "s2", "seq": 7}) == {"stopped": True}
    assert fns["camera_frame"](_frame_request(7, session="s2")) == {"seq": 7, "dropped": True}  # sent before Stop
    assert "src" in fns["camera_frame"](_frame_request(8, session="s2"))  # a new Start
    handlers.streams.limit_s = 0.0
    time.sleep(0.01)
    expired = fns["camera_frame"](_frame_request(9, session="s2"))
    assert expired["expired"] and "stops after" in expired["error"]


def test_a_snapshot_is_made_with_the_full_decoder_at_final_quality():
    _handlers, fns = _camera_functions(support.preview_engine())
    request = _frame_request(1)
    del request["seq"]
    snap = fns["camera_snapshot"](request | {"inputs": _values(decoder="tiny")})
    assert snap["src"].startswith("data:image/jpeg") and "decoder: full" in snap["readout"]
