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
import threading
import time
import uuid

import pytest
import support
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from sprint_demo import settings
from sprint_demo.frames import DEFAULT_DECODER
from sprint_demo.tools import loadtest
from sprint_demo.tools.app_process import AppProcess

pytestmark = pytest.mark.slow
GENERIC_GRADIO_ERROR = "has not enabled verbose error reporting"
SLOW_FRAME_S = 1.5  # how long an injected slow frame takes
NEXT_REQUEST_LIMIT_S = SLOW_FRAME_S + 10  # "promptly": the abandoned frame's rest plus a slow CPU frame
LEAVE_ROUNDS = 4  # measured rounds of leaving mid-frame
THREAD_SLACK = 2  # pools may grow a little; a thread leaked per round would exceed this


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


def add_fault_switch(pipe, faults: Faults) -> None:
    """Runs ``Faults.before_call`` inside every denoising stage of ``pipe`` (``denoise``, once per frame, reached
    through the pipeline's own ``sample``), so the fault happens while the model thread holds the frame."""
    real_denoise = pipe.denoise

    def denoise(*args, **kwargs):
        faults.before_call()
        return real_denoise(*args, **kwargs)

    pipe.denoise = denoise  # an instance attribute: ``sample``'s ``self.denoise`` finds it first


@pytest.fixture(scope="module")
def live():
    """The app as ``app.main`` serves it (``sprint_demo.web.launch.launch``), in this process, on the preview engine
    whose pipeline call goes through a fault switch. Yields (url, faults, engine)."""
    from sprint_demo.engine import load_engine

    engine = load_engine(settings.PREVIEW_MODEL, None, warmup=False)
    faults = Faults()
    add_fault_switch(engine.renderer.pipe, faults)
    with support.live_app(engine) as (url, _engine, _demo):
        yield url, faults, engine


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
        print(f"{fault}: {failed.value}")
        _assert_clear_error(str(failed.value), *expected)
        assert faults.raise_next is None, "the fault was not reached: the pipeline was not called"
        pixels = loadtest.read_pixels(client.predict(**_text_kwargs()))
        assert pixels.shape == (256, 256, 3)
    finally:
        client.close()


@pytest.fixture(scope="module", autouse=True)
def early_suite_server():
    """Start the preview server that test_load / test_security share now: it builds its model while the tests
    here mostly wait on injected slow frames."""
    support.suite_server(wait=False)


@pytest.fixture(scope="module", autouse=True)
def failing_start():
    """``python app.py --model /nonexistent/folder``, started with the module: its ~20 s of imports overlap the
    in-process tests instead of adding to them."""
    with AppProcess(["--model", "/nonexistent/folder"]) as process:
        yield process


def _model_thread_free(engine, timeout_s: float = SLOW_FRAME_S + 10) -> bool:
    """Whether the engine's model thread finishes the frame it is making and takes other work within
    ``timeout_s`` (a job goes before every frame still waiting)."""
    done = threading.Event()
    threading.Thread(target=lambda: (engine.on_model_thread(lambda: None), done.set()), daemon=True).start()
    return done.wait(timeout_s)


def _settled_thread_count(settle_s: float = 1.0) -> int:
    """threading.active_count() once it has stopped changing for ``settle_s`` (at most 10 s)."""
    deadline = time.monotonic() + 10
    count = threading.active_count()
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        now = threading.active_count()
        if now == count:
            break
        count = now
    return count


def _abandon_frames_and_check_nothing_leaks(client, engine, faults: Faults, abandon, what: str) -> None:
    """Abandons a frame 1 + LEAVE_ROUNDS times (round 0 warms thread pools; the rest are measured). After each, the
    engine's model thread must be free and the next request quick; over the measured rounds threads must not pile
    up."""
    try:
        before = None
        for _round in range(1 + LEAVE_ROUNDS):
            abandon()
            assert _model_thread_free(engine), f"the engine's model thread is still busy after the {what}"
            t0 = time.monotonic()
            pixels = loadtest.read_pixels(client.predict(**_text_kwargs()))
            waited = time.monotonic() - t0
            assert pixels.shape == (256, 256, 3)
            assert waited < NEXT_REQUEST_LIMIT_S, f"next request took {waited:.1f} s after the {what}"
            if before is None:
                before = _settled_thread_count()
        after = _settled_thread_count()
        print(f"{what} x{LEAVE_ROUNDS}: threads {before} -> {after}, last next-request {waited:.1f} s")
        assert after <= before + THREAD_SLACK, (before, after)
    finally:
        faults.sleep_s = 0.0
        client.close()


def test_client_cancel_mid_frame_leaks_nothing(live):
    url, faults, engine = live
    client = Client(url, verbose=False, analytics_enabled=False)

    def cancel_mid_frame() -> None:
        faults.sleep_s, faults.in_call = SLOW_FRAME_S, threading.Event()
        job = client.submit(**_text_kwargs())
        assert faults.in_call.wait(30), "the slow frame never started"
        job.cancel()
        faults.sleep_s = 0.0

    _abandon_frames_and_check_nothing_leaks(client, engine, faults, cancel_mid_frame, "frame cancelled mid-way")


def _leave_mid_frame(port: int, fn_index: int, faults: Faults) -> None:
    """Join the queue over raw HTTP, open the event stream, and close it while the frame is being made."""
    session = uuid.uuid4().hex
    faults.sleep_s, faults.in_call = SLOW_FRAME_S, threading.Event()
    data = ["a lighthouse", 1, next(_seeds), settings.DEFAULT_GUIDANCE, 256, 256, DEFAULT_DECODER,  # /text_to_image
            settings.DEFAULT_STYLE, settings.DEFAULT_STYLE_SCALE, "", settings.DEFAULT_BLEND, settings.DEFAULT_SEED_B,
            settings.DEFAULT_BLEND]  # a raw queue call names every input: style, scale, then prompt and seed travel
    body = json.dumps({"data": data,
                       "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None})
    join = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        join.request("POST", "/gradio_api/queue/join", body=body, headers={"Content-Type": "application/json"})
        assert join.getresponse().status == 200
    finally:
        join.close()
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        stream.request("GET", f"/gradio_api/queue/data?session_hash={session}")
        assert stream.getresponse().status == 200
        assert faults.in_call.wait(30), "the slow frame never started"
    finally:
        stream.close()  # the browser tab went away mid-frame
        faults.sleep_s = 0.0


def test_http_stream_closed_mid_frame_leaks_nothing(live):
    url, faults, engine = live
    port = int(url.rsplit(":", 1)[1])
    client = Client(url, verbose=False, analytics_enabled=False)
    fn_index = next(i for i, dep in enumerate(client.config["dependencies"])
                    if dep.get("api_name") == loadtest.TEXT_ENDPOINT.lstrip("/"))
    _abandon_frames_and_check_nothing_leaks(client, engine, faults, lambda: _leave_mid_frame(port, fn_index, faults),
                                            "event stream closed mid-frame")


def test_model_that_fails_to_load_exits_with_a_clear_message(failing_start):
    returncode = failing_start.process.wait(timeout=180)
    output = failing_start.log()
    assert returncode != 0, output[-2000:]
    assert "/nonexistent/folder" in output, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()
    assert any(line.startswith("error:") and "could not load" in line for line in last), output[-2000:]
