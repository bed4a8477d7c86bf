"""Faults inside and around the generator: the user gets a clear message and the server keeps serving.

* Out-of-memory (``torch.OutOfMemoryError``, which ``torch.cuda.OutOfMemoryError`` is) and a generic exception
  raised inside the pipeline call of an in-process app: the client gets an error that names the problem (not a
  traceback, not blank, not Gradio's generic "the upstream app has raised an exception"), and the next request
  succeeds.
* A model that fails to load: ``python app.py --model /nonexistent/folder`` exits non-zero with a message naming
  the folder and no traceback.
* A client that leaves mid-frame (job cancelled; HTTP stream closed) while the engine is in a slow frame: the
  engine's lock is released, the next request succeeds promptly, and the thread count stays bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from sprint_demo import loadtest, settings

pytestmark = pytest.mark.slow
GENERIC_GRADIO_ERROR = "has not enabled verbose error reporting"
SLOW_FRAME_S = 2.0  # how long an injected slow frame takes


class Faults:
    """Switches read by the patched pipeline call: raise this exception, or sleep this long, on the next calls."""

    def __init__(self):
        self.raise_next: BaseException | None = None
        self.sleep_s = 0.0
        self.calls = 0
        self.in_call = threading.Event()

    def before_call(self) -> None:
        self.calls += 1
        self.in_call.set()
        if self.sleep_s:
            time.sleep(self.sleep_s)
        error, self.raise_next = self.raise_next, None
        if error is not None:
            raise error


class PipeWithFaults:
    """Stands in for ``engine.pipe``: the same pipeline, with ``Faults.before_call`` run inside every call of it
    (the denoising call of a frame), so the fault happens while the engine holds its lock."""

    def __init__(self, pipe, faults: Faults):
        self._pipe, self._faults = pipe, faults

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, *args, **kwargs):
        self._faults.before_call()
        return self._pipe(*args, **kwargs)


@pytest.fixture(scope="module")
def live():
    """The app as ``app.main`` assembles it (same queue and launch settings), in this process, on the preview
    engine whose pipeline call goes through a fault switch. Yields (url, faults, engine)."""
    from sprint_demo.engine import load_engine
    from sprint_demo.ui import CSS, create_demo

    engine = load_engine(settings.PREVIEW_MODEL, None, warmup=False)
    faults = Faults()
    engine.pipe = PipeWithFaults(engine.pipe, faults)
    demo = create_demo(engine)
    demo.queue(default_concurrency_limit=1, max_size=settings.QUEUE_SIZE)
    port = loadtest.free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, max_file_size=settings.MAX_UPLOAD_BYTES, css=CSS,
                prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", faults, engine
    finally:
        demo.close()


_seeds = iter(range(10_000, 20_000))


def _text_kwargs(seed: int | None = None) -> dict:
    """A text_to_image call; a fresh seed each time by default, so the engine never reuses the last frame."""
    seed = next(_seeds) if seed is None else seed
    return dict(prompt="a lighthouse", seed=seed, width=256, height=256, api_name=loadtest.TEXT_ENDPOINT)


def _assert_clear_error(message: str, *expected: str) -> None:
    assert message.strip(), "blank error message"
    assert GENERIC_GRADIO_ERROR not in message, message
    assert "Traceback" not in message and 'File "' not in message, message
    assert any(word.lower() in message.lower() for word in expected), message


@pytest.mark.parametrize("fault", ["oom", "generic"])
def test_error_inside_the_generator_gives_a_clear_message_and_the_next_request_succeeds(live, fault):
    url, faults, engine = live
    client = Client(url, verbose=False, analytics_enabled=False)
    try:
        if fault == "oom":
            faults.raise_next = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            expected = ("out of memory", "memory")
        else:
            faults.raise_next = RuntimeError("injected failure in the pipeline")
            expected = ("error", "failed", "wrong")
        with pytest.raises(AppError) as failed:
            client.predict(**_text_kwargs())
        _assert_clear_error(str(failed.value), *expected)
        assert faults.raise_next is None, "the fault was not reached: the pipeline was not called"
        pixels = loadtest.read_pixels(client.predict(**_text_kwargs()))
        assert pixels.shape == (256, 256, 3)
    finally:
        client.close()


@pytest.fixture(scope="module", autouse=True)
def failing_start():
    """``python app.py --model /nonexistent/folder``, started with the module: its ~20 s of imports overlap the
    in-process tests instead of adding to them."""
    process = subprocess.Popen([sys.executable, "app.py", "--model", "/nonexistent/folder"], cwd=loadtest.REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def _lock_released(engine, timeout_s: float = SLOW_FRAME_S + 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while engine._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not engine._lock.locked()


def _thread_count_settles(limit: int, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while threading.active_count() > limit and time.monotonic() < deadline:
        time.sleep(0.2)
    return threading.active_count()


def test_client_cancel_mid_frame_leaks_nothing(live):
    url, faults, engine = live
    client = Client(url, verbose=False, analytics_enabled=False)
    try:
        loadtest.read_pixels(client.predict(**_text_kwargs(seed=11)))  # warm: the client's own threads exist
        before = threading.active_count()
        for round_ in range(3):
            faults.sleep_s, faults.in_call = SLOW_FRAME_S, threading.Event()
            job = client.submit(**_text_kwargs(seed=100 + round_))
            assert faults.in_call.wait(30), "the slow frame never started"
            job.cancel()
            faults.sleep_s = 0.0
            assert _lock_released(engine), "the engine lock is still held after the cancelled frame"
            t0 = time.monotonic()
            pixels = loadtest.read_pixels(client.predict(**_text_kwargs(seed=200 + round_)))
            waited = time.monotonic() - t0
            assert pixels.shape == (256, 256, 3)
            assert waited < SLOW_FRAME_S + 10, f"next request took {waited:.1f} s after a cancel"
        after = _thread_count_settles(before + 4)
        assert after <= before + 4, (before, after)
    finally:
        faults.sleep_s = 0.0
        client.close()


def test_http_stream_closed_mid_frame_leaks_nothing(live):
    url, faults, engine = live
    port = int(url.rsplit(":", 1)[1])
    info = Client(url, verbose=False, analytics_enabled=False)
    try:
        fn_index = next(i for i, dep in enumerate(info.config["dependencies"])
                        if dep.get("api_name") == loadtest.TEXT_ENDPOINT.lstrip("/"))
    finally:
        info.close()
    before = threading.active_count()
    for round_ in range(3):
        session = uuid.uuid4().hex
        faults.sleep_s, faults.in_call = SLOW_FRAME_S, threading.Event()
        body = json.dumps({"data": ["a lighthouse", 1, 300 + round_, settings.DEFAULT_GUIDANCE, 256, 256],
                           "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None})
        join = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        join.request("POST", "/gradio_api/queue/join", body=body, headers={"Content-Type": "application/json"})
        assert join.getresponse().status == 200
        join.close()
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        stream.request("GET", f"/gradio_api/queue/data?session_hash={session}")
        response = stream.getresponse()
        assert response.status == 200
        assert faults.in_call.wait(30), "the slow frame never started"
        stream.close()  # the browser tab went away mid-frame
        faults.sleep_s = 0.0
        assert _lock_released(engine), "the engine lock is still held after the abandoned frame"
    client = Client(url, verbose=False, analytics_enabled=False)
    try:
        t0 = time.monotonic()
        pixels = loadtest.read_pixels(client.predict(**_text_kwargs(seed=400)))
        waited = time.monotonic() - t0
    finally:
        client.close()
    assert pixels.shape == (256, 256, 3)
    assert waited < SLOW_FRAME_S + 10, f"next request took {waited:.1f} s after closed streams"
    after = _thread_count_settles(before + 4)
    assert after <= before + 4, (before, after)


def test_model_that_fails_to_load_exits_with_a_clear_message(failing_start):
    output, _ = failing_start.communicate(timeout=180)
    assert failing_start.returncode != 0, output[-2000:]
    assert "/nonexistent/folder" in output, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()
    assert any(line.startswith("error:") and "could not load" in line for line in last), output[-2000:]
