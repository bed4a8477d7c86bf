"""Frames of different users made in one batch (``Engine.max_batch_size``): batches form, every caller gets the
image of its own inputs, equal to the same request made alone within ``ALONE_TOLERANCE_LEVELS``, different sizes
and step counts never share a batch, and one caller's bad input or a model fault does not leave the engine stuck.

The tests make batches deterministic with a long window and ``expect_full_batches``: the batch thread waits until
``max_batch_size`` frames of its key have arrived (which they do as soon as every thread has called), so no
assertion depends on timing. How long the engine waits by itself (the company it expects) has tests of its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from unittest import mock

import numpy as np
import pytest
import support

from sprint_demo import inputs
from sprint_demo.engine import Engine, batch_key, load_engine
from sprint_demo.frames import Frame, FrameRequest
from sprint_demo.sketches import stroke_sketch

SIZE = 256
SESSIONS = 8
LONG_WINDOW_S = 120.0  # "until the batch is full": the threads all call within it, however busy the machine
ALONE_TOLERANCE_LEVELS = support.BATCHED_ROW_TOLERANCE_LEVELS  # why: see tests/support.py


@pytest.fixture()
def engine() -> Engine:
    engine = load_engine("preview", device="cpu", warmup=False, max_batch_size=SESSIONS)
    engine.size = SIZE
    engine.batcher.window_s = LONG_WINDOW_S
    engine.batcher.expect_full_batches = True
    return engine


def session_request(i: int, steps: int = 2, size: int = SIZE, decoder: str = "full") -> FrameRequest:
    """Session i's own inputs: prompt, seed, guidance and strength all differ; even sessions draw a sketch."""
    sketch = stroke_sketch(size, 3 + i % 4) if i % 2 == 0 else None
    return inputs.sketch_request(sketch, f"session {i}: a lighthouse", steps=steps, seed=100 + i,
                                 guidance_scale=2.0 + 0.5 * i, control_strength=0.3 + 0.2 * i, thickness=2,
                                 size=(size, size), control_map=None, decoder=decoder)


def concurrently(calls: list[Callable[[], Frame]]) -> list[Frame | BaseException]:
    """Runs every call in a thread of its own, all released together; returns each one's frame or error."""
    results: list[Frame | BaseException] = [RuntimeError("no result")] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except BaseException as error:  # noqa: BLE001 - the outcome is what is checked
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "a caller is stuck in the engine"
    return results


def pixels(frame: Frame) -> np.ndarray:
    return np.asarray(frame.image, dtype=np.int16)


def alone(engine: Engine, requests: list[FrameRequest]) -> list[np.ndarray]:
    """Each request made on its own (max_batch_size 1: today's one-frame path), then the caches forgotten."""
    engine.max_batch_size = 1
    expected = [pixels(engine.render(request)) for request in requests]
    engine.clear_caches()
    engine.max_batch_size = SESSIONS
    return expected


@pytest.mark.parametrize("steps", [1, 4])
def test_eight_callers_share_one_batch_and_each_gets_its_own_image(engine, steps):
    requests = [session_request(i, steps) for i in range(SESSIONS)]
    expected = alone(engine, requests)
    assert len({e.tobytes() for e in expected}) == SESSIONS  # cross-talk could not hide behind equal images

    frames = concurrently([lambda r=r: engine.render(r) for r in requests])

    assert [f.batch_size for f in frames] == [SESSIONS] * SESSIONS, frames
    differences = []
    for i, frame in enumerate(frames):
        got = pixels(frame)
        distance = [float(np.abs(got - e).mean()) for e in expected]
        assert int(np.argmin(distance)) == i, f"session {i}'s frame is closest to session {np.argmin(distance)}'s"
        assert distance[i] < min(d for j, d in enumerate(distance) if j != i)
        differences.append(int(np.abs(got - expected[i]).max()))
    print(f"\n{steps} step(s): largest batched-vs-alone difference per session, uint8 levels: {differences}")
    assert max(differences) <= ALONE_TOLERANCE_LEVELS


def test_different_sizes_step_counts_and_decoders_never_share_a_batch(engine):
    engine.max_batch_size = 2  # two callers per key: every batch fills, none waits for the window
    keys = [(256, 1, "full"), (256, 2, "full"), (320, 1, "full"), (256, 1, "tiny")]
    requests = [session_request(i, steps, size, decoder) for i, (size, steps, decoder) in enumerate(keys * 2)]
    batches: list[list[FrameRequest]] = []
    real = engine.renderer.render

    def record(batch, *args):
        batches.append(list(batch))
        return real(batch, *args)

    with mock.patch.object(engine.renderer, "render", side_effect=record):
        frames = concurrently([lambda r=r: engine.render(r) for r in requests])
    assert sorted(len(batch) for batch in batches) == [2, 2, 2, 2], batches
    assert all(len({batch_key(r) for r in batch}) == 1 for batch in batches)
    for request, frame in zip(requests, frames):
        assert frame.image.size == (request.width, request.height) and frame.batch_size == 2
        assert frame.decoder == request.decoder


def test_a_bad_request_is_refused_alone_and_the_others_are_made(engine):
    engine.max_batch_size = 3
    good = [session_request(i) for i in range(3)]
    sketch = stroke_sketch(SIZE, 3)
    calls = [lambda r=r: engine.render(r) for r in good]
    calls.insert(1, lambda: support.sketch_frame(engine, sketch, "a boat", steps=9))  # refused before it joins a batch
    results = concurrently(calls)
    assert isinstance(results[1], inputs.InputError) and "steps" in str(results[1])
    made = [results[0], *results[2:]]
    assert all(isinstance(f, Frame) and f.batch_size == 3 for f in made), results


def test_a_model_fault_fails_its_batch_and_the_engine_keeps_serving(engine):
    engine.max_batch_size = 3
    requests = [session_request(i) for i in range(3)]
    with mock.patch.object(type(engine.renderer.pipe), "denoise", side_effect=RuntimeError("kernel failed")):
        results = concurrently([lambda r=r: engine.render(r) for r in requests])
    assert all(isinstance(r, RuntimeError) and "kernel failed" in str(r) for r in results), results
    frames = concurrently([lambda r=r: engine.render(r) for r in requests])  # the same frames, now made
    assert all(isinstance(f, Frame) and f.batch_size == 3 and not f.reused for f in frames), frames
    assert engine.batcher.waiting() == 0


def test_an_equal_request_gets_the_equal_frame_and_equal_callers_cost_one_row(engine):
    """Reuse is keyed on the whole request, which fixes the pixels: handing one caller the frame another caller's
    equal request made is correct, and a different request is never answered from it."""
    engine.max_batch_size = 2
    request = session_request(0)
    twins = concurrently([lambda: engine.render(request)] * 2)  # two users, same inputs, same moment
    assert [f.batch_size for f in twins] == [1, 1] and pixels(twins[0]).tobytes() == pixels(twins[1]).tobytes()
    engine.batcher.window_s = 0.0  # one caller: no one to wait for
    no_work = AssertionError("no model work expected")
    with mock.patch.object(type(engine.renderer.pipe), "denoise", side_effect=no_work):
        again = engine.render(request)
    assert again.reused and again.image.tobytes() == twins[0].image.tobytes()
    other = engine.render(session_request(1))
    assert not other.reused and other.image.tobytes() != again.image.tobytes()


def test_a_batch_size_of_one_runs_each_frame_alone_on_the_engine_thread(engine):
    engine.max_batch_size = 1
    ran: list[tuple[int, threading.Thread]] = []
    real = engine.renderer.render

    def record(batch, *args):
        ran.append((len(batch), threading.current_thread()))
        return real(batch, *args)

    with mock.patch.object(engine.renderer, "render", side_effect=record):
        frames = concurrently([lambda i=i: engine.render(session_request(i)) for i in range(3)])
    assert [f.batch_size for f in frames] == [1, 1, 1]
    assert ran == [(1, engine.batcher.thread)] * 3
    with pytest.raises(ValueError, match="max_batch_size must be a positive integer, got 0"):
        engine.max_batch_size = 0


def test_a_lone_frame_never_waits_for_company_and_a_batch_waits_for_the_company_it_saw(engine, monkeypatch):
    """Without ``expect_full_batches`` the window is spent only when company was seen lately: a lone user's frame
    goes at once (here the window is two minutes, so a frame that waited for it would fail the test), and after a
    batch of three, three callers arriving one after another are made together (a full batch, here of three)."""
    import sprint_demo.engine as engine_module

    monkeypatch.setattr(engine.batcher, "company_memory_s", 3600.0)  # however slow the machine, the batch is recent
    engine.batcher.expect_full_batches = False
    began = time.monotonic()
    lone = engine.render(session_request(0))
    assert time.monotonic() - began < LONG_WINDOW_S / 2, "the lone frame waited for the window"
    assert lone.batch_size == 1 and not engine.batcher.expects_company(engine_module.time.perf_counter())

    # A batch of three forms by itself: three callers arrive while the model thread is busy, and it then gathers
    # them at once (it never waits for them).
    busy, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=engine.on_model_thread, args=(lambda: (busy.set(), release.wait(600)),))
    holder.start()
    assert busy.wait(60)
    waiting = [threading.Thread(target=engine.render, args=(session_request(i),)) for i in (2, 3, 4)]
    for thread in waiting:
        thread.start()
    while engine.batcher.waiting() < 3:
        threading.Event().wait(0.01)
    release.set()
    for thread in (holder, *waiting):
        thread.join(600)
    assert engine.batcher.expects_company(engine_module.time.perf_counter())  # a batch of three was gathered

    # Now three callers, 50 ms apart: the first waits for the other two (a full batch; the window is long) instead
    # of going alone.
    engine.max_batch_size = 3
    frames: list[Frame] = []
    callers = [threading.Thread(target=lambda i=i: frames.append(engine.render(session_request(i))))
               for i in (5, 6, 7)]
    for thread in callers:
        thread.start()
        threading.Event().wait(0.05)
    for thread in callers:
        thread.join(600)
    assert [frame.batch_size for frame in frames] == [3, 3, 3]


@pytest.mark.slow
def test_the_users_benchmark_compares_batch_sizes_in_one_run(tmp_path, capsys):
    """``bench --mode users``, the GPU check's command, on the preview model: one run per batch size, batches
    formed only where allowed, and each user's last batched frame within the bound of the same request alone."""
    import json

    from sprint_demo.tools import bench

    out = tmp_path / "users.json"
    assert bench.main(["--mode", "users", "--model", "preview", "--size", "256", "--steps", "1", "--users", "4",
                       "--max-batch-size", "1,4", "--decoder", "full,tiny", "--duration", "3",
                       "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["decoder"], r["max_batch_size"]) for r in runs] == [(d, b) for d in ("full", "tiny") for b in (1, 4)]
    for single, batched in (runs[:2], runs[2:]):
        assert single["mean_batch_size"] == 1.0 and single["batched_vs_alone_max_levels"] == 0
        assert batched["mean_batch_size"] > 1.0 and batched["batched_vs_alone_max_levels"] <= ALONE_TOLERANCE_LEVELS
    for run in runs:
        assert run["frames"] >= run["users"] and len(run["user_frames_per_s"]) == run["users"]
        assert run["latency_p95_ms"] >= run["latency_p50_ms"] > 0
    assert "mean batch" in capsys.readouterr().out


def test_a_final_stops_its_tab_s_draft_in_flight_at_the_next_denoising_step():
    """A draft of 4 steps is in its first step when the same tab's final arrives: the draft stops before its second
    step (the caller gets Superseded) and the final is made next."""
    from sprint_demo.engine import Priority, Superseded

    engine = load_engine("preview", device="cpu", warmup=False, max_batch_size=1)
    engine.size = SIZE
    in_step, release = threading.Event(), threading.Event()
    steps_run: list[int] = []
    real = type(engine.renderer.pipe).predict_velocity

    def slow_step(pipe, *args, **kwargs):
        steps_run.append(args[0].shape[0])
        if len(steps_run) == 1:
            in_step.set()
            release.wait(30)
        return real(pipe, *args, **kwargs)

    outcomes: dict[str, object] = {}

    def call(name: str, request: FrameRequest, priority: Priority) -> threading.Thread:
        def run() -> None:
            try:
                outcomes[name] = engine.render(request, session="tab", priority=priority)
            except Exception as error:  # noqa: BLE001 - the outcome is what is checked
                outcomes[name] = error

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    with mock.patch.object(type(engine.renderer.pipe), "predict_velocity", slow_step):
        draft = call("draft", session_request(0, steps=4), Priority.DRAFT)
        assert in_step.wait(60)
        final = call("final", session_request(1, steps=1), Priority.FINAL)
        while engine.batcher.waiting() < 1:
            time.sleep(0.005)
        release.set()
        draft.join(60)
        final.join(60)
    assert isinstance(outcomes["draft"], Superseded), outcomes
    assert isinstance(outcomes["final"], Frame)
    assert len(steps_run) == 2  # the draft's first step, then the final's one step: the draft's other 3 never ran
    engine.close()


def test_a_superseded_one_step_draft_stops_inside_its_stage_before_the_next_layer():
    """One denoising step has no step boundary: the draft stops before its next transformer block instead (a
    superseded batch checks at every block and decoder layer when not compiled)."""
    from sprint_demo.engine import Priority, Superseded

    engine = load_engine("preview", device="cpu", warmup=False, max_batch_size=1)
    engine.size = SIZE
    blocks = list(engine.renderer.pipe.transformer.transformer_blocks)
    ran: list[int] = []
    in_block, release = threading.Event(), threading.Event()

    def first_block_waits(module, args):
        ran.append(blocks.index(module))
        if len(ran) == 1:
            in_block.set()
            release.wait(30)

    hooks = [block.register_forward_pre_hook(first_block_waits) for block in blocks]
    outcome: dict[str, object] = {}

    def draft() -> None:
        try:
            outcome["draft"] = engine.render(session_request(0, steps=1), session="tab", priority=Priority.DRAFT)
        except Exception as error:  # noqa: BLE001 - the outcome is what is checked
            outcome["draft"] = error

    thread = threading.Thread(target=draft)
    thread.start()
    assert in_block.wait(60)
    engine.cancel("tab")
    release.set()
    thread.join(60)
    for hook in hooks:
        hook.remove()
    assert isinstance(outcome["draft"], Superseded)
    assert ran == [0], f"the draft ran blocks {ran} after it was superseded"
    engine.close()


@pytest.mark.slow
def test_the_camera_users_benchmark_counts_frames_and_replaced_frames(tmp_path):
    from sprint_demo.tools import bench

    out = tmp_path / "camera.json"
    assert bench.main(["--mode", "camera", "--users", "2", "--max-batch-size", "1,2", "--steps", "1",
                       "--decoder", "tiny", "--duration", "3", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["mode"], r["max_batch_size"]) for r in runs] == [("camera", 1), ("camera", 2)]
    for run in runs:
        assert run["frames"] > 0 and len(run["user_frames_per_s"]) == 2 and run["dropped"] >= 0
        assert (run["width"], run["height"]) == (512, 384)  # 4:3 camera pictures keep their aspect ratio
        assert run["batched_vs_alone_max_levels"] <= ALONE_TOLERANCE_LEVELS


def test_the_idle_benchmark_times_a_frame_on_the_model_thread_and_one_in_a_fresh_thread(tmp_path, capsys):
    from sprint_demo.tools import bench

    out = tmp_path / "idle.json"
    assert bench.main(["--mode", "idle", "--idle", "0.2", "--steps", "1", "--size", "256", "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["model_thread_ms"] > 0 and run["fresh_thread_ms"] > 0 and "error" not in run
