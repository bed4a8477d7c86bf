"""The engine's work order (``sprint_demo.batcher.Batcher``) on its own, with a stand-in for the model: one thread
for everything, one waiting frame per session (the newest), finals before drafts, round-robin over sessions,
batches by key, a final stopping its session's draft in flight, a bound on waiting sessions, and the engine's real
model thread surviving idle time."""

from __future__ import annotations

import threading
import time

import pytest

from sprint_demo.batcher import Batcher, EngineBusy, Priority, Superseded, Ticket


class Model:
    """Stands in for the engine's batch runner: records each batch, and holds the first one until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[threading.Thread] = set()
        self.hold = threading.Event()
        self.started = threading.Event()
        self.stopped_early: list[str] = []

    def run(self, batch: list[Ticket]) -> None:
        self.threads.add(threading.current_thread())
        self.batches.append([t.payload for t in batch])
        self.started.set()
        while not self.hold.wait(0.01):  # a stage boundary every 10 ms: a cancelled batch stops at the next one
            if all(t.cancelled for t in batch):
                self.stopped_early += [t.payload for t in batch]
                for t in batch:
                    t.error = Superseded("stopped")
                return
        for t in batch:
            t.result = f"frame {t.payload}"


@pytest.fixture()
def model():
    model = Model()
    yield model
    model.hold.set()


def make(model: Model, **options) -> Batcher:
    return Batcher(model.run, **({"max_batch_size": 4, "window_s": 0.0, "max_waiting": 8, "company_memory_s": 0.0}
                                 | options))


def in_thread(batcher: Batcher, name: str, session: str | None = None, priority: Priority = Priority.FINAL,
              key: str = "k", outcomes: dict | None = None) -> threading.Thread:
    def call() -> None:
        try:
            outcomes[name] = batcher.submit(Ticket(name, key, session=session, priority=priority))
        except Exception as error:  # noqa: BLE001 - the outcome is what is checked
            outcomes[name] = error

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def busy_with(batcher: Batcher, model: Model, outcomes: dict) -> threading.Thread:
    """Occupies the thread with a frame of session "holder" so that others line up behind it."""
    thread = in_thread(batcher, "holder", "holder", outcomes=outcomes)
    assert model.started.wait(10)
    return thread


def test_a_newer_frame_of_a_session_replaces_its_waiting_one(model):
    batcher, outcomes = make(model), {}
    threads = [busy_with(batcher, model, outcomes)]
    threads.append(in_thread(batcher, "a1", "a", Priority.DRAFT, outcomes=outcomes))
    wait_until(lambda: batcher.waiting() == 1)
    threads.append(in_thread(batcher, "a2", "a", Priority.DRAFT, outcomes=outcomes))
    wait_until(lambda: "a1" in outcomes)
    assert isinstance(outcomes["a1"], Superseded) and batcher.waiting() == 1  # at once, not after the batch
    model.hold.set()
    for thread in threads:
        thread.join(10)
    assert outcomes["a2"] == "frame a2" and model.batches == [["holder"], ["a2"]]
    assert model.threads == {batcher.thread}


def test_a_draft_never_takes_its_session_s_waiting_final_s_place(model):
    # A page asks for a draft, then (pen up) for the final; the draft's request can reach the server second.
    batcher, outcomes = make(model), {}
    threads = [busy_with(batcher, model, outcomes)]
    threads.append(in_thread(batcher, "a-final", "a", Priority.FINAL, outcomes=outcomes))
    wait_until(lambda: batcher.waiting() == 1)
    threads.append(in_thread(batcher, "a-late-draft", "a", Priority.DRAFT, outcomes=outcomes))
    wait_until(lambda: "a-late-draft" in outcomes)
    assert isinstance(outcomes["a-late-draft"], Superseded) and batcher.waiting() == 1
    threads.append(in_thread(batcher, "b-draft", "b", Priority.DRAFT, outcomes=outcomes))  # other sessions: as ever
    wait_until(lambda: batcher.waiting() == 2)
    threads.append(in_thread(batcher, "a-newer-final", "a", Priority.FINAL, outcomes=outcomes))  # a final replaces
    wait_until(lambda: "a-final" in outcomes)
    assert isinstance(outcomes["a-final"], Superseded)
    model.hold.set()
    for thread in threads:
        thread.join(10)
    assert outcomes["a-newer-final"] == "frame a-newer-final" and outcomes["b-draft"] == "frame b-draft"
    assert model.batches == [["holder"], ["a-newer-final", "b-draft"]]


def test_finals_go_first_then_sessions_round_robin_and_batches_keep_to_one_key(model):
    batcher, outcomes = make(model, max_batch_size=2), {}
    threads = [busy_with(batcher, model, outcomes)]
    # lining up: two drafts of sessions a and b, a final of c, and a draft of d with another key
    for name, session, priority, key in (("a", "a", Priority.DRAFT, "k"), ("b", "b", Priority.DRAFT, "k"),
                                         ("d", "d", Priority.DRAFT, "other"), ("c", "c", Priority.FINAL, "k")):
        threads.append(in_thread(batcher, name, session, priority, key, outcomes))
        lined_up = len(threads) - 1
        wait_until(lambda lined_up=lined_up: batcher.waiting() == lined_up)
    model.hold.set()
    for thread in threads:
        thread.join(10)
    # c (a final) leads and takes the next in its key (a); then b, which waited longer than d, leads
    assert model.batches == [["holder"], ["c", "a"], ["b"], ["d"]]

    # round-robin: a session served more recently waits behind one served longer ago
    model.batches.clear()
    model.hold.clear()
    batcher.max_batch_size = 1
    threads = [in_thread(batcher, "hold2", "hold2", outcomes=outcomes)]
    wait_until(lambda: len(model.batches) == 1)
    # session a was served in the batches above; session "new" never was
    threads.append(in_thread(batcher, "a-again", "a", Priority.DRAFT, outcomes=outcomes))
    wait_until(lambda: batcher.waiting() == 1)
    threads.append(in_thread(batcher, "new", "new", Priority.DRAFT, outcomes=outcomes))
    wait_until(lambda: batcher.waiting() == 2)
    model.hold.set()
    for thread in threads:
        thread.join(10)
    assert model.batches == [["hold2"], ["new"], ["a-again"]]


def test_a_final_stops_its_session_s_draft_in_flight_but_not_other_sessions(model):
    batcher, outcomes = make(model), {}
    draft = in_thread(batcher, "draft", "tab", Priority.DRAFT, outcomes=outcomes)
    assert model.started.wait(10)
    final = in_thread(batcher, "final", "tab", Priority.FINAL, outcomes=outcomes)
    draft.join(10)
    assert isinstance(outcomes["draft"], Superseded) and model.stopped_early == ["draft"]
    model.hold.set()
    final.join(10)
    assert outcomes["final"] == "frame final"

    # a draft of another tab, or a newer draft of the same tab, does not stop a draft in flight
    model.hold.clear()
    model.started.clear()
    model.batches.clear()
    first = in_thread(batcher, "d1", "tab", Priority.DRAFT, outcomes=outcomes)
    assert model.started.wait(10)
    others = [in_thread(batcher, "x", "other", Priority.FINAL, outcomes=outcomes),
              in_thread(batcher, "d2", "tab", Priority.DRAFT, outcomes=outcomes)]
    wait_until(lambda: batcher.waiting() == 2)
    model.hold.set()
    for thread in (first, *others):
        thread.join(10)
    assert outcomes["d1"] == "frame d1" and outcomes["d2"] == "frame d2" and outcomes["x"] == "frame x"


def test_cancel_drops_the_waiting_frame_and_stops_the_one_in_flight(model):
    batcher, outcomes = make(model), {}
    running = in_thread(batcher, "cam1", "cam", Priority.DRAFT, outcomes=outcomes)
    assert model.started.wait(10)
    waiting = in_thread(batcher, "cam2", "cam", Priority.DRAFT, outcomes=outcomes)
    wait_until(lambda: batcher.waiting() == 1)
    batcher.cancel("cam")
    running.join(10)
    waiting.join(10)
    assert isinstance(outcomes["cam1"], Superseded) and isinstance(outcomes["cam2"], Superseded)
    assert model.batches == [["cam1"]]  # nothing of the session ran after the cancel


def test_one_session_too_many_is_refused_at_once(model):
    batcher, outcomes = make(model, max_waiting=2), {}
    threads = [busy_with(batcher, model, outcomes)]
    threads += [in_thread(batcher, s, s, Priority.DRAFT, outcomes=outcomes) for s in ("a", "b")]
    wait_until(lambda: batcher.waiting() == 2)
    with pytest.raises(EngineBusy, match="2 sessions are waiting"):
        batcher.submit(Ticket("c", "k", session="c"))
    threads.append(in_thread(batcher, "a2", "a", Priority.DRAFT, outcomes=outcomes))  # a's own newer frame: fine
    wait_until(lambda: "a" in outcomes)
    model.hold.set()
    for thread in threads:
        thread.join(10)
    assert outcomes["a2"] == "frame a2" and outcomes["b"] == "frame b"


def test_a_refused_final_leaves_its_session_s_draft_in_flight_alone(model):
    batcher, outcomes = make(model, max_waiting=1), {}
    draft = in_thread(batcher, "c-draft", "c", Priority.DRAFT, outcomes=outcomes)
    assert model.started.wait(10)
    waiting = in_thread(batcher, "a", "a", Priority.DRAFT, outcomes=outcomes)
    wait_until(lambda: batcher.waiting() == 1)
    with pytest.raises(EngineBusy):  # c has nothing waiting: its final would be one session too many
        batcher.submit(Ticket("c-final", "k", session="c"))
    time.sleep(0.1)  # ten of the stand-in's stop points: a cancelled draft would have stopped at the first
    assert model.stopped_early == []
    model.hold.set()
    for thread in (draft, waiting):
        thread.join(10)
    assert outcomes == {"c-draft": "frame c-draft", "a": "frame a"}


def test_jobs_and_errors_run_on_the_same_thread_and_close_ends_it(model):
    model.hold.set()
    batcher = make(model)
    assert batcher.call(threading.current_thread) is batcher.thread

    def fail():
        raise ValueError("bad job")

    with pytest.raises(ValueError, match="bad job"):
        batcher.call(fail)
    assert batcher.submit(Ticket("after", "k")) == "frame after"  # the thread survived the failed job
    batcher.close()
    assert not batcher.thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(Ticket("late", "k"))


@pytest.mark.slow
def test_frames_after_ten_idle_seconds_run_on_the_thread_that_warmed_up():
    """On a GPU, CUDA graphs recorded at warm-up belong to the thread that recorded them: the model thread must
    outlive idle time, at every batch size (a batch of one included)."""
    from unittest import mock

    from sprint_demo.engine import load_engine

    for max_batch_size in (1, 4):
        engine = load_engine("preview", device="cpu", warmup=False, max_batch_size=max_batch_size)
        engine.size = 256
        threads: list[threading.Thread] = []
        real = engine._render

        def record(*args, real=real, threads=threads):
            threads.append(threading.current_thread())
            return real(*args)

        with mock.patch.object(engine, "_render", side_effect=record):
            engine.warmup()
            warmed = set(threads)
            time.sleep(10.5)
            engine.text_to_image("after a pause", width=256, height=256)
            engine.photo_to_control_map(engine.text_to_image("a photo", width=256, height=256).image)
        assert warmed == {engine.thread} and threads[-1] is engine.thread and engine.thread.is_alive()
        engine.close()


def test_inline_mode_runs_each_frame_in_its_caller_s_thread(model):
    """ZeroGPU forks a process per frame: there the frame must run in the calling thread, not a model thread."""
    model.hold.set()
    batcher = make(model, inline=True)
    assert batcher.thread is None
    assert batcher.submit(Ticket("x", "k", session="s")) == "frame x"
    assert model.threads == {threading.current_thread()}
    assert batcher.call(threading.current_thread) is threading.current_thread()


def test_callers_the_queue_bounds_are_never_refused_and_do_not_count(model):
    batcher, outcomes = make(model, max_waiting=1), {}
    threads = [busy_with(batcher, model, outcomes)]
    threads.append(in_thread(batcher, "a", "a", Priority.DRAFT, outcomes=outcomes))
    wait_until(lambda: batcher.waiting() == 1)
    with pytest.raises(EngineBusy):
        batcher.submit(Ticket("b", "k", session="b"))

    def queued() -> None:
        outcomes["q"] = batcher.submit(Ticket("q", "k", session="q", refusable=False))

    threads.append(threading.Thread(target=queued))
    threads[-1].start()
    wait_until(lambda: batcher.waiting() == 2)
    model.hold.set()
    for thread in threads:
        thread.join(10)
    assert outcomes["q"] == "frame q" and outcomes["a"] == "frame a"
