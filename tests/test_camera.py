"""The camera component's Python side (``sprint_demo/web/camera.py``) and the stand-in server functions of
``camera_stub`` without a browser: the newest-frame-only semantics the page relies on (a newer frame of a session
replaces its waiting one, Stop drops what waits and what arrives late, busy, expired), checked with threads calling
the stub as Gradio's worker threads do."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import camera_stub  # noqa: E402  (tests/camera_stub.py)

from sprint_demo import settings  # noqa: E402
from sprint_demo.web.camera import CameraStream  # noqa: E402


def frame_request(session: str, seq: int, prompt: str = "p", rgb=(200, 20, 20), size=(64, 48)) -> dict:
    image = Image.new("RGB", size, rgb)
    return {"image": camera_stub.jpeg_data_url(image, 90), "inputs": {"prompt": prompt}, "seq": seq,
            "session": session, "captured_at": 1000.0 + seq}


def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


class Calls:
    """Server-function calls on threads of their own (Gradio runs each in a worker thread). Each call returns once
    ``reached()`` says the stub holds it (the first call: being made; later ones: being made or waiting), so
    calls reach the stub in the test's order however busy the machine is."""

    def __init__(self, stub: camera_stub.StubCameraServer):
        self.stub = stub
        self.answers: dict[str, dict] = {}
        self.threads: list[threading.Thread] = []

    def call(self, name: str, fn, request: dict, reached=None) -> None:
        thread = threading.Thread(target=lambda: self.answers.__setitem__(name, fn(request)))
        thread.start()
        self.threads.append(thread)
        if reached is None and "seq" in request:
            session, seq = request["session"], request["seq"]
            first = len(self.threads) == 1  # the one being made: waiting is not enough, it could still be replaced

            def reached() -> bool:
                started = any(w.seq == seq for w in self.stub.works_of(session))
                return started or (not first and self.stub.waiting_seq(session) == seq)
        until(reached or (lambda: True))

    def join(self) -> dict[str, dict]:
        for thread in self.threads:
            thread.join(timeout=10)
        return self.answers


@pytest.fixture
def stub():
    server = camera_stub.StubCameraServer(work_s=0.3)  # ample time to line calls up behind the one being made
    yield server
    server.close()


def test_component_config_and_checks(stub):
    camera = CameraStream(capture_size=512, output_id="camera_output", latency_id="camera_latency",
                          server_functions=stub.server_functions(), elem_id="camera", render=False)
    config = camera.get_config()
    assert config["component_class_name"] == "CameraStream"
    assert set(config["server_fns"]) == {"camera_frame", "camera_stop", "camera_snapshot"}
    props = config["props"] if "props" in config else config
    assert props["capture_size"] == 512 and props["output_id"] == "camera_output"
    # the page's numbers come from settings (camera.js has no copy of them)
    assert props["size_multiple"] == settings.SIZE_MULTIPLE and props["max_in_flight"] == settings.CAMERA_MAX_IN_FLIGHT
    assert props["busy_backoff_ms"] == list(settings.CAMERA_BUSY_BACKOFF_MS)
    assert props["jpeg_quality"] == settings.CAMERA_SEND_JPEG_QUALITY
    assert camera.api_info()["type"] == "string" and camera.example_value() == ""
    with pytest.raises(ValueError, match="plain HTML id"):
        CameraStream(capture_size=512, output_id='x" onload="alert(1)', latency_id="l",
                     server_functions=stub.server_functions(), render=False)
    with pytest.raises(ValueError, match="camera_stop"):
        CameraStream(capture_size=512, output_id="o", latency_id="l", server_functions=stub.server_functions()[:1],
                     render=False)


def test_frame_is_tinted_by_the_prompt(stub):
    answer = stub.frame(frame_request("s", 1, prompt="a blue lake"))
    assert answer["seq"] == 1 and answer["captured_at"] == 1001.0 and 290 < answer["server_ms"] < 2000
    image = camera_stub.data_url_image(answer["src"])
    assert image.size == (64, 48)
    mean = np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0)
    expected = camera_stub.expected_mean(stub.works_of("s")[0].input_mean, "a blue lake")
    assert np.abs(mean - expected).max() < 4
    assert "a blue lake" in answer["readout"]


def test_newer_frame_replaces_the_waiting_one(stub):
    calls = Calls(stub)
    calls.call("1", stub.frame, frame_request("s", 1))  # being made
    calls.call("2", stub.frame, frame_request("s", 2))  # waits
    calls.call("3", stub.frame, frame_request("s", 3))  # replaces 2
    answers = calls.join()
    assert answers["2"] == {"seq": 2, "dropped": True}
    assert "src" in answers["1"] and "src" in answers["3"]
    assert [w.seq for w in stub.works_of("s")] == [1, 3]


def test_sessions_take_turns(stub):
    calls = Calls(stub)
    calls.call("a1", stub.frame, frame_request("a", 1))
    calls.call("a2", stub.frame, frame_request("a", 2))
    calls.call("b1", stub.frame, frame_request("b", 1))
    calls.call("a3", stub.frame, frame_request("a", 3))  # replaces a2, keeps its place before b
    answers = calls.join()
    assert all("src" in answers[k] for k in ("a1", "a3", "b1"))
    order = sorted((w.started, w.session, w.seq) for s in ("a", "b") for w in stub.works_of(s))
    assert [(s, q) for _, s, q in order] == [("a", 1), ("a", 3), ("b", 1)]


def test_stop_drops_the_waiting_frame_and_late_ones(stub):
    calls = Calls(stub)
    calls.call("1", stub.frame, frame_request("s", 1))
    calls.call("2", stub.frame, frame_request("s", 2))
    assert stub.stop({"session": "s", "seq": 3}) == {"stopped": True}
    late = stub.frame(frame_request("s", 3))  # sent before Stop, arrived after it
    answers = calls.join()
    assert answers["2"] == {"seq": 2, "dropped": True} and late == {"seq": 3, "dropped": True}
    assert "src" in answers["1"]  # the frame in flight finishes
    works = stub.works_of("s")
    assert [w.seq for w in works] == [1] and works[0].started < stub.stops_of("s")[0].at
    assert "src" in stub.frame(frame_request("s", 4))  # Start again


def test_busy_and_expired(stub):
    stub.max_waiting = 1
    calls = Calls(stub)
    calls.call("a", stub.frame, frame_request("a", 1))  # being made
    calls.call("b", stub.frame, frame_request("b", 1))  # waits: the line is full
    assert stub.frame(frame_request("c", 1)) == {"seq": 1, "busy": True}
    calls.join()
    stub.time_limit_s = 0.1
    time.sleep(0.2)
    expired = stub.frame(frame_request("a", 2))
    assert expired["expired"] is True and "time limit" in expired["error"]
    stub.stop({"session": "a", "seq": 2})
    assert "src" in stub.frame(frame_request("a", 3))  # a stop restarts the window


def test_snapshot_goes_first_and_bad_requests_answer(stub):
    calls = Calls(stub)
    calls.call("a1", stub.frame, frame_request("a", 1))
    calls.call("b1", stub.frame, frame_request("b", 1))
    request = frame_request("a", 0)
    del request["seq"]
    calls.call("snap", stub.snapshot, request, reached=lambda: stub.waiting_count() == 2)
    answers = calls.join()
    assert "src" in answers["snap"] and "seq" not in answers["snap"]
    snap = next(w for w in stub.works_of("a") if w.seq is None)
    assert snap.started < stub.works_of("b")[0].started
    assert "error" in stub.frame({"seq": 5, "session": "s", "image": "data:text/plain;base64,AAAA"})
    assert "error" in stub.frame({"session": "s"})
    assert "error" in stub.snapshot({"image": "nope"})


def test_fake_camera_file(tmp_path):
    path = camera_stub.write_y4m(tmp_path / "v.y4m", 64, 48, (220, 30, 30), frames=3, right_rgb=(30, 40, 220))
    data = path.read_bytes()
    header, _, rest = data.partition(b"\n")
    assert header == b"YUV4MPEG2 W64 H48 F30:1 Ip A1:1 C420jpeg"
    frame = len(b"FRAME\n") + 64 * 48 * 3 // 2
    assert len(rest) == 3 * frame and rest.count(b"FRAME\n") >= 3
