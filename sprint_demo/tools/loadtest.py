"""Hold concurrent load against a demo server and check that every answer belongs to its asker.

    python -m sprint_demo.tools.loadtest --url http://127.0.0.1:7860 --sessions 8 --duration 60 --server-pid PID
    python -m sprint_demo.tools.loadtest --serve "--model preview --max-batch-size 1" --serve "--model preview"

First one call per distinct input, one at a time, learns the expected images (frames are deterministic for their
inputs). Then each of N sessions (its own ``gradio_client.Client``, prompt, seed and sketch, in its own thread)
alternates ``/sketch_to_image`` and ``/text_to_image`` until the time is up, and every answer must be its own
expected image: cross-talk between sessions, a stale frame or a broken cache shows as a mismatch. The report gives
frames/s, failures by kind, mismatches, latency, the server's mean batch size (``/engine_stats``) and, with the
server's pid (``--server-pid``; ``--serve`` starts ``python app.py ARGS`` itself), its RSS, the part of its growth
that grows like a leak (``leak_mb``) and its threads. What each figure means, and the runs behind the bounds the
tests set: docs/RELIABILITY.md. Point it only at servers you operate: it sends requests as fast as they are answered.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import settings
from ..sketches import png_data_url, stroke_sketch
from .app_process import AppProcess

LOAD_SIZE = settings.MIN_SIZE  # small frames: the load test measures the serving path, not the model
SKETCH_SET_SIZE = 4  # distinct sketches; sessions cycle through them
FIRST_SKETCH_STROKES = 3  # the set's sketches hold 3, 4, 5 and 6 strokes
SEED_BASE = 1000  # session i uses seed SEED_BASE + i
# Largest per-channel difference (uint8 levels) from the expected image that still counts as the same image: a
# frame made in a batch may differ from the same request alone by 1 level, which JPEG spreads over its 8x8 block.
# An answer must also be nearer its own expected image than any other's, so the tolerance hides no cross-talk
# (docs/RELIABILITY.md, section 1, has the measurements).
TOLERANCE_LEVELS = 16
REQUEST_TIMEOUT_S = 120.0  # one request slower than this counts as a "timeout" failure
SERVE_START_TIMEOUT_S = 900.0  # --serve: a real model may download weights and compile before it answers
MEMORY_SAMPLE_S = 0.5  # how often the server's RSS is sampled
RSS_WINDOW_S = 5.0  # memory references (after warm-up, middle, end) are medians over this many seconds
LEAK_STEP_WINDOWS = 3  # leak_mb leaves out the largest rise within this many windows (15 s): one allocator episode
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# failure kind -> marks of it in an error's type name or message, first match wins
FAILURE_KINDS = (("queue_full", ("queueerror", "queue is full")), ("timeout", ("timeout", "timed out")),
                 ("connection", ("connect",)), ("app_error", ("apperror",)), ("no_image", ("no image in",)))
SKETCH_ENDPOINT = "/sketch_to_image"
TEXT_ENDPOINT = "/text_to_image"
PROMPT_SUBJECTS = (
    "a lighthouse on a cliff at dusk",
    "a red vintage car in the rain",
    "a bowl of ramen, studio photo",
    "a cat wearing a tiny wizard hat",
    "a snowy mountain village at night",
    "a sailing boat on a calm sea",
    "a robot watering tomato plants",
    "an owl reading a book by candlelight",
)


# --- Inputs -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One distinct request: the endpoint and its keyword arguments."""

    session: int
    api_name: str
    kwargs: tuple[tuple[str, Any], ...]  # sorted items; a tuple so the call can key a dict

    @property
    def key(self) -> str:
        return f"s{self.session}{self.api_name}"


def session_sketch(session: int, size: int = LOAD_SIZE) -> Image.Image:
    """Session ``session``'s sketch: one of SKETCH_SET_SIZE distinct stroke drawings, the same on every call."""
    return stroke_sketch(size, FIRST_SKETCH_STROKES + session % SKETCH_SET_SIZE)


def session_calls(session: int, size: int = LOAD_SIZE, steps: int = settings.DEFAULT_STEPS) -> tuple[Call, Call]:
    """The two distinct requests session ``session`` alternates between (its own prompt, seed and sketch)."""
    prompt = f"{PROMPT_SUBJECTS[session % len(PROMPT_SUBJECTS)]}, session {session}"
    seed = SEED_BASE + session
    sketch = png_data_url(session_sketch(session, size))
    sketch_kwargs = dict(sketch=sketch, prompt=prompt, steps=steps, seed=seed,
                         guidance_scale=settings.DEFAULT_GUIDANCE,
                         control_strength=settings.DEFAULT_CONTROL_STRENGTH, thickness=settings.DEFAULT_THICKNESS)
    text_kwargs = dict(prompt=prompt, steps=steps, seed=seed, guidance_scale=settings.DEFAULT_GUIDANCE,
                       width=size, height=size)
    return (Call(session, SKETCH_ENDPOINT, tuple(sorted(sketch_kwargs.items()))),
            Call(session, TEXT_ENDPOINT, tuple(sorted(text_kwargs.items()))))


# --- Reading answers ----------------------------------------------------------------------------------------
def find_image_path(result: Any) -> str | None:
    """The first image file in an endpoint's result (a path, a FileData-like dict, or a sequence holding one)."""
    if isinstance(result, dict):
        result = result.get("path")
    if isinstance(result, (list, tuple)):
        return next(filter(None, map(find_image_path, result)), None)
    path = os.fspath(result) if isinstance(result, (str, os.PathLike)) else ""
    return path if Path(path).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(path) else None


def read_pixels(result: Any) -> np.ndarray:
    """The RGB pixels (H, W, 3 uint8) of the image in ``result``; ValueError if there is none."""
    path = find_image_path(result)
    if path is None:
        raise ValueError(f"no image in the result: {str(result)[:200]!r}")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).copy()
    try:
        os.remove(path)  # the client's download folder would otherwise grow by one file per request
    except OSError:
        pass
    return pixels


def digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()[:16]


def classify_error(error: BaseException) -> str:
    """A short, stable failure kind for the report (the message itself goes to the samples): the first of
    FAILURE_KINDS whose marks are in the error's type name or message, else the type name."""
    text = f"{type(error).__name__}: {error}".lower()
    return next((kind for kind, marks in FAILURE_KINDS if any(mark in text for mark in marks)), type(error).__name__)


def latency_summary(values_ms: list[float]) -> dict[str, float | None]:
    """p50, p95 (numpy's percentile, linear between ranks) and max of ``values_ms``; all None when empty."""
    if not values_ms:
        return {"p50": None, "p95": None, "max": None}
    p50, p95 = np.percentile(values_ms, [50, 95])
    return {"p50": float(p50), "p95": float(p95), "max": float(max(values_ms))}


# --- Server memory ------------------------------------------------------------------------------------------
class MemoryMonitor:
    """Samples a process's RSS and thread count in the background (psutil); without a pid it samples nothing."""

    def __init__(self, pid: int | None, interval_s: float = MEMORY_SAMPLE_S):
        import psutil

        self.process = psutil.Process(pid) if pid is not None else None
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, int]] = []  # (time, rss bytes, threads)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loadtest-memory", daemon=True)

    def sample(self) -> tuple[int, int] | None:
        if self.process is None:
            return None
        try:
            rss, threads = self.process.memory_info().rss, self.process.num_threads()
        except Exception:  # the server exited: the report says so through missing samples
            return None
        self.samples.append((time.monotonic(), rss, threads))
        return rss, threads

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        if self.process is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def window(self, t0: float, t1: float) -> tuple[int, int] | None:
        """(median RSS, median thread count) of the samples taken between monotonic times t0 and t1."""
        inside = [(rss, threads) for t, rss, threads in self.samples if t0 <= t <= t1]
        if not inside:
            return None
        return int(np.median([r for r, _ in inside])), int(np.median([n for _, n in inside]))

    def peak_rss(self) -> int | None:
        return max((rss for _, rss, _ in self.samples), default=None)


def leak_mb(samples: list[tuple[float, float]], start_s: float, end_s: float,
            window_s: float = RSS_WINDOW_S) -> float | None:
    """How much the memory in ``samples`` ((seconds, MB) pairs) grew from ``start_s`` to ``end_s`` the way a leak
    grows: MB over that span, None when it holds fewer than ``LEAK_STEP_WINDOWS`` + 2 windows or a window without
    samples.

    The span is cut into windows of ``window_s``, each reduced to its median sample (one frame's activations swing
    RSS by tens of MB). The largest rise within ``LEAK_STEP_WINDOWS`` windows is taken out of the growth from the
    first window to the last: an allocator that steps up once and stays there (glibc keeping a new high-water mark,
    ~250 MB at once, or a few steps in a row) drops out whatever its size, while a leak goes on rising in the other
    windows. The rate of the growth left is extrapolated to the whole span, so a steady leak of L MB over the span
    gives L (to 0.1 MB, as samples are kept).
    """
    count = int((end_s - start_s) // window_s)
    if count < LEAK_STEP_WINDOWS + 2:
        return None
    medians = []
    for i in range(count):
        begin = start_s + i * window_s
        inside = [mb for t, mb in samples if begin <= t < begin + window_s]
        if not inside:
            return None
        medians.append(float(np.median(inside)))
    step = max(0.0, *(medians[j] - medians[i] for i in range(count)
                      for j in range(i + 1, min(count, i + LEAK_STEP_WINDOWS + 1))))
    rest_s = (count - 1 - LEAK_STEP_WINDOWS) * window_s
    return round((medians[-1] - medians[0] - step) / rest_s * (end_s - start_s), 1)


# --- Report -------------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    url: str
    sessions: int
    duration_s: float  # the load phase as measured, warm-up included
    warmup_s: float
    requests: int = 0  # load-phase requests that finished (successes + failures + mismatches)
    successes: int = 0  # right image for the asker's own inputs
    failures: dict[str, int] = field(default_factory=dict)  # kind -> count
    failure_samples: list[str] = field(default_factory=list)  # a few messages, for diagnosis
    mismatches: int = 0  # an image came back but not the one for these inputs
    mismatch_samples: list[str] = field(default_factory=list)
    largest_difference_levels: int | None = None  # over answers of the expected size: from their expected image
    requests_by_endpoint: dict[str, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    latency_by_endpoint_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    throughput_rps: float | None = None
    frames_per_s: float | None = None  # right images per second, all sessions together
    session_frames_per_s: list[float] = field(default_factory=list)  # right images per second, each session
    mean_batch_size: float | None = None  # rows of the batch that made each frame during the load, mean (the
    # server's own count, /engine_stats; None where the server keeps none)
    baseline_requests: int = 0
    distinct_expected_images: int = 0  # < 2 * sessions means some cross-talk would go unseen
    server_pid: int | None = None
    rss_before_load_mb: float | None = None  # after the baseline calls
    rss_after_warmup_mb: float | None = None  # median over the RSS_WINDOW_S after warm-up
    rss_end_mb: float | None = None  # median over the last RSS_WINDOW_S of load
    rss_peak_mb: float | None = None
    rss_growth_mb: float | None = None  # end - after warm-up
    rss_growth_second_half_mb: float | None = None  # end - middle of the measured part: a leak grows here too
    rss_leak_mb: float | None = None  # leak_mb of the samples after warm-up: growth that goes on, one episode left out
    rss_timeline_mb: list[tuple[float, float]] = field(default_factory=list)  # (s into the load, MB), every sample
    server_threads_after_warmup: int | None = None
    server_threads_end: int | None = None
    rss_after_load_mb: float | None = None  # one sample, 2 s after every client closed
    server_threads_after_load: int | None = None
    served: str | None = None  # the app.py arguments of a server started by --serve

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.failed == 0 and self.mismatches == 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"], data["ok"] = self.failed, self.ok
        return data

    def table(self) -> str:
        def fmt(value: float | int | None, unit: str = "") -> str:
            if value is None:
                return "n/a"
            return f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"

        per_session = self.session_frames_per_s
        rows = [
            ("server", self.url if self.served is None else f"{self.url} (python app.py {self.served})"),
            ("sessions", fmt(self.sessions)),
            ("duration (warm-up)", f"{self.duration_s:.1f} s ({self.warmup_s:.0f} s)"),
            ("requests", f"{self.requests} ("
                         + ", ".join(f"{k} {v}" for k, v in sorted(self.requests_by_endpoint.items())) + ")"),
            ("throughput", fmt(self.throughput_rps, " req/s")),
            ("frames/s all sessions", fmt(self.frames_per_s)),
            ("frames/s per session", f"min {min(per_session):.2f} / median {np.median(per_session):.2f} / "
                                     f"max {max(per_session):.2f}" if per_session else "n/a"),
            ("mean batch size", fmt(self.mean_batch_size)),
            ("failures", f"{self.failed} {dict(sorted(self.failures.items())) if self.failures else ''}".strip()),
            ("mismatches", fmt(self.mismatches)),
            ("largest difference from expected", fmt(self.largest_difference_levels, " levels")),
            ("distinct expected images", f"{self.distinct_expected_images} of {2 * self.sessions}"),
            ("latency p50 / p95 / max", f"{fmt(self.latency_p50_ms)} / {fmt(self.latency_p95_ms)} / "
                                        f"{fmt(self.latency_max_ms)} ms"),
        ]
        for endpoint, stats in sorted(self.latency_by_endpoint_ms.items()):
            rows.append((f"  {endpoint} p50 / p95", f"{fmt(stats.get('p50'))} / {fmt(stats.get('p95'))} ms"))
        if self.server_pid is not None:
            rows += [
                ("server RSS warm / end / peak", f"{fmt(self.rss_after_warmup_mb)} / {fmt(self.rss_end_mb)} / "
                                                 f"{fmt(self.rss_peak_mb)} MB"),
                ("server RSS growth (2nd half)", f"{fmt(self.rss_growth_mb, ' MB')} "
                                                 f"({fmt(self.rss_growth_second_half_mb, ' MB')})"),
                ("server RSS growth like a leak", fmt(self.rss_leak_mb, " MB")),
                ("server threads warm / end / after", f"{fmt(self.server_threads_after_warmup)} / "
                                                      f"{fmt(self.server_threads_end)} / "
                                                      f"{fmt(self.server_threads_after_load)}"),
            ]
        rows.append(("result", "PASS" if self.ok else "FAIL"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# --- The run ------------------------------------------------------------------------------------------------
def _client(url: str, download_dir: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=download_dir, analytics_enabled=False)


def engine_batches(client) -> Counter[int]:
    """The server engine's batches so far, by rows (``/engine_stats``); empty when it keeps no count."""
    try:
        stats = client.predict(api_name="/engine_stats")
    except Exception:  # noqa: BLE001 - a server without the endpoint: no count
        return Counter()
    return Counter({int(rows): int(count) for rows, count in (stats or {}).get("batches", {}).items()})


def mean_batch_size(before: Counter[int], after: Counter[int]) -> float | None:
    """The mean number of rows of the batch that made each frame, over the batches made between the two counts."""
    made = after - before
    frames = sum(rows * count for rows, count in made.items())
    return sum(rows * rows * count for rows, count in made.items()) / frames if frames else None


def _call(client, call: Call, timeout_s: float) -> np.ndarray:
    job = client.submit(api_name=call.api_name, **dict(call.kwargs))
    try:
        result = job.result(timeout=timeout_s)
    except TimeoutError:
        job.cancel()
        raise
    return read_pixels(result)


def run_load(url: str, sessions: int, duration_s: float, *, warmup_s: float = 0.0, server_pid: int | None = None,
             size: int = LOAD_SIZE, steps: int = settings.DEFAULT_STEPS, request_timeout_s: float = REQUEST_TIMEOUT_S,
             tolerance: int = TOLERANCE_LEVELS, log=None) -> LoadResult:
    """Run the baseline and then ``sessions`` concurrent clients for ``duration_s`` seconds against ``url``.

    ``warmup_s`` of the load phase pass before the server's memory is taken as the reference for growth (the
    requests made during warm-up are still checked and counted). ``tolerance`` is the largest per-channel
    pixel difference still counted as the same image (0: identical pixels). ``log`` is a print-like callable.
    """
    if sessions < 1 or duration_s <= 0:
        raise ValueError(f"need sessions >= 1 and duration_s > 0, got sessions={sessions}, duration_s={duration_s}")
    if not 0 <= warmup_s < duration_s:
        raise ValueError(f"warmup_s must be in [0, duration_s), got {warmup_s} with duration_s={duration_s}")
    log = log or (lambda *_: None)
    report = LoadResult(url=url, sessions=sessions, duration_s=0.0, warmup_s=warmup_s, server_pid=server_pid)
    monitor = MemoryMonitor(server_pid)
    download_root = tempfile.mkdtemp(prefix="sprint-loadtest-")
    calls = {i: session_calls(i, size, steps) for i in range(sessions)}
    tally = _Tally(report)
    try:
        expected = _learn_expected_images(url, calls, download_root, request_timeout_s, report, log)
        first = monitor.sample()
        if first:
            report.rss_before_load_mb = first[0] / 2**20
        log(f"load: {sessions} sessions for {duration_s:.0f} s (warm-up {warmup_s:.0f} s)")
        clients = [_client(url, os.path.join(download_root, f"session{i}")) for i in range(sessions)]
        batches_before = engine_batches(clients[0])
        start = time.monotonic()
        deadline = start + duration_s
        monitor.start()
        stuck = _hold_load(clients, calls, deadline, request_timeout_s, _Matcher(expected, tolerance), tally)
        report.duration_s = time.monotonic() - start
        monitor.stop()
        report.mean_batch_size = mean_batch_size(batches_before, engine_batches(clients[0]))
        for client in clients:
            client.close()
        time.sleep(2.0 if server_pid is not None else 0.0)  # let the server notice the clients left
        settled = monitor.sample()
        if settled:
            report.rss_after_load_mb, report.server_threads_after_load = settled[0] / 2**20, settled[1]
        _record_memory(report, monitor, start, start + warmup_s, min(deadline, time.monotonic()))
        if stuck:
            tally.failures["stuck_session"] += stuck
    finally:
        shutil.rmtree(download_root, ignore_errors=True)
    tally.summarise()
    return report


def _learn_expected_images(url: str, calls: dict[int, tuple[Call, Call]], download_root: str, timeout_s: float,
                           report: LoadResult, log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The baseline: the expected image of every distinct input, one call at a time."""
    log(f"baseline: {2 * len(calls)} distinct inputs against {url}")
    expected: dict[str, np.ndarray] = {}
    client = _client(url, os.path.join(download_root, "baseline"))
    try:
        for session_pair in calls.values():
            for call in session_pair:
                expected[call.key] = _call(client, call, timeout_s)
                report.baseline_requests += 1
    finally:
        client.close()
    report.distinct_expected_images = len({digest(p) for p in expected.values()})
    if report.distinct_expected_images < len(expected):
        log(f"warning: only {report.distinct_expected_images} distinct expected images for {len(expected)} "
            "inputs: cross-talk between sessions with equal images cannot be seen")
    return expected


class _Matcher:
    """Whether an answer is the expected image of a call: within ``tolerance`` levels per channel and, when a
    tolerance is allowed, nearer (mean difference) that image than any other call's."""

    def __init__(self, expected: dict[str, np.ndarray], tolerance: int):
        self.expected, self.tolerance = expected, tolerance

    @staticmethod
    def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        return np.abs(a.astype(np.int16) - b.astype(np.int16)) if a.shape == b.shape else None

    def nearest(self, pixels: np.ndarray) -> str:
        distances = {key: float(d.mean()) for key, p in self.expected.items()
                     if (d := self.difference(pixels, p)) is not None}
        return min(distances, key=distances.get)

    def same(self, pixels: np.ndarray, key: str, difference: np.ndarray | None = None) -> bool:
        """``difference``: ``pixels``' difference to ``key``'s image, when the caller has it already."""
        d = self.difference(pixels, self.expected[key]) if difference is None else difference
        if d is None or int(d.max()) > self.tolerance:
            return False
        return self.tolerance == 0 or self.nearest(pixels) == key

    def owner(self, pixels: np.ndarray) -> str:
        return next((key for key in self.expected if self.same(pixels, key)), "nobody")


@dataclass
class _Tally:
    """What the sessions' threads record during the load, under one lock, and its summary into the report."""

    report: LoadResult
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {SKETCH_ENDPOINT: [], TEXT_ENDPOINT: []})
    failures: Counter[str] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    right_by_session: Counter[int] = field(default_factory=Counter)

    def failed(self, call: Call, kind: str, error: BaseException) -> None:
        with self.lock:
            self.report.requests += 1
            self.by_endpoint[call.api_name] += 1
            self.failures[kind] += 1
            if len(self.report.failure_samples) < 10:
                self.report.failure_samples.append(f"{call.key}: {kind}: {str(error)[:300]}")

    def answered(self, session: int, call: Call, pixels: np.ndarray, elapsed_ms: float,
                 matcher: _Matcher) -> None:
        own = matcher.difference(pixels, matcher.expected[call.key])
        match = matcher.same(pixels, call.key, own)
        report = self.report
        with self.lock:
            if own is not None:
                report.largest_difference_levels = max(report.largest_difference_levels or 0, int(own.max()))
            report.requests += 1
            self.by_endpoint[call.api_name] += 1
            self.latencies[call.api_name].append(elapsed_ms)
            if match:
                report.successes += 1
                self.right_by_session[session] += 1
            else:
                report.mismatches += 1
                if len(report.mismatch_samples) < 10:
                    report.mismatch_samples.append(
                        f"{call.key}: got {digest(pixels)} {pixels.shape} (matches {matcher.owner(pixels)}), "
                        f"expected {digest(matcher.expected[call.key])}")

    def summarise(self) -> None:
        report = self.report
        overall = latency_summary([ms for values in self.latencies.values() for ms in values])
        report.failures = dict(self.failures)
        report.requests_by_endpoint = dict(self.by_endpoint)
        report.latency_p50_ms, report.latency_p95_ms = overall["p50"], overall["p95"]
        report.latency_max_ms = overall["max"]
        report.latency_by_endpoint_ms = {name: latency_summary(values) for name, values in self.latencies.items()}
        if report.duration_s:
            report.throughput_rps = report.requests / report.duration_s
            report.frames_per_s = report.successes / report.duration_s
            report.session_frames_per_s = [self.right_by_session[i] / report.duration_s
                                           for i in range(report.sessions)]


def _session_loop(index: int, client, pair: tuple[Call, Call], deadline: float, timeout_s: float,
                  matcher: _Matcher, tally: _Tally) -> None:
    """One session: alternate its two calls until ``deadline``, every answer checked and counted."""
    k = index  # stagger: half the sessions start with each endpoint
    while time.monotonic() < deadline:
        call = pair[k % 2]
        k += 1
        t0 = time.perf_counter()
        try:
            pixels = _call(client, call, timeout_s)
        except Exception as error:  # noqa: BLE001 - every failure is counted by kind
            kind = classify_error(error)
            tally.failed(call, kind, error)
            if kind == "connection":
                time.sleep(0.5)  # do not spin on a dead server
            continue
        tally.answered(index, call, pixels, (time.perf_counter() - t0) * 1000, matcher)


def _hold_load(clients: list, calls: dict[int, tuple[Call, Call]], deadline: float, timeout_s: float,
               matcher: _Matcher, tally: _Tally) -> int:
    """One thread and one client per session until ``deadline``; returns how many threads never finished."""
    threads = [threading.Thread(target=_session_loop, name=f"loadtest-session{i}", daemon=True,
                                args=(i, clients[i], calls[i], deadline, timeout_s, matcher, tally))
               for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + timeout_s + 10)
    return sum(thread.is_alive() for thread in threads)


def _record_memory(report: LoadResult, monitor: MemoryMonitor, start: float, warm_at: float, end_at: float) -> None:
    """The server's memory during the load (monotonic times): reference levels, growth, peak and every sample."""
    # RSS swings by tens of MB within one frame (decoder activations come and go), so each reference is the
    # median of the samples in a window, not one sample.
    after_warmup = monitor.window(warm_at, warm_at + RSS_WINDOW_S)
    middle_at = warm_at + (end_at - warm_at) / 2
    middle = monitor.window(middle_at - RSS_WINDOW_S / 2, middle_at + RSS_WINDOW_S / 2)
    end = monitor.window(end_at - RSS_WINDOW_S, end_at)
    if after_warmup:
        report.rss_after_warmup_mb = after_warmup[0] / 2**20
        report.server_threads_after_warmup = after_warmup[1]
    if end:
        report.rss_end_mb, report.server_threads_end = end[0] / 2**20, end[1]
    if after_warmup and end:
        report.rss_growth_mb = report.rss_end_mb - report.rss_after_warmup_mb
    if middle and end:
        report.rss_growth_second_half_mb = report.rss_end_mb - middle[0] / 2**20
    report.rss_timeline_mb = [(round(t - start, 2), round(rss / 2**20, 1)) for t, rss, _ in monitor.samples
                              if start <= t <= end_at]
    report.rss_leak_mb = leak_mb(report.rss_timeline_mb, warm_at - start, end_at - start)
    peak = monitor.peak_rss()
    report.rss_peak_mb = peak / 2**20 if peak is not None else None


def compare(results: list[LoadResult]) -> str:
    """One line per server: frames/s, p50 / p95 latency and frames/s as a ratio to the first server's."""
    first = results[0].frames_per_s
    lines = []
    for result in results:
        ratio = f"{result.frames_per_s / first:.2f}x" if first and result.frames_per_s is not None else "n/a"
        p50, p95 = (f"{v:.0f}" if v is not None else "n/a" for v in (result.latency_p50_ms, result.latency_p95_ms))
        lines.append(f"{result.served or result.url}: {result.frames_per_s or 0:.2f} frames/s, "
                     f"p50 / p95 {p50} / {p95} ms, {ratio} the first")
    return "\n".join(lines)


# --- Servers of its own (--serve) -----------------------------------------------------------------------------
def split_serve_args(app_args: str) -> tuple[dict[str, str], list[str]]:
    """``"NAME=value ... --flag x"`` -> ({NAME: value, ...}, ["--flag", "x"]): the environment, then app.py's args."""
    words = shlex.split(app_args)
    env = {}
    while words and not words[0].startswith("-") and "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def serve_and_load(app_args: str, load: Callable[[str, int], LoadResult], log: Callable[[str], None],
                   start_timeout_s: float = SERVE_START_TIMEOUT_S) -> LoadResult:
    """Start ``python app.py APP_ARGS`` on a free loopback port, run ``load(url, pid)`` against it, stop it.

    Leading ``NAME=value`` words of ``app_args`` set the server's environment (``SPRINT_QUEUE_SIZE=8 --model
    preview``), so settings that have no flag can be compared too.
    """
    env, words = split_serve_args(app_args)
    with AppProcess(words, env=env) as server:
        log(f"starting {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(server.command)} "
            f"(log: {server.log_path})")
        server.wait_ready(start_timeout_s)
        result = load(server.url, server.pid)
    result.served = app_args
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sprint_demo.tools.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=f"http://{settings.HOST}:{settings.PORT}", help="server root URL")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent client sessions")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (warm-up included)")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of load before the memory reference")
    parser.add_argument("--server-pid", type=int, default=None, help="server process id, for RSS and threads")
    parser.add_argument("--size", type=int, default=LOAD_SIZE, help="frame side in pixels")
    parser.add_argument("--steps", type=int, default=settings.DEFAULT_STEPS, help="sampling steps per frame")
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, help="per-request limit, seconds")
    parser.add_argument("--tolerance", type=int, default=TOLERANCE_LEVELS,
                        help="largest pixel difference still 'the same image' (default: %(default)s; 0: identical)")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    parser.add_argument("--serve", action="append", default=None, metavar="APP_ARGS",
                        help="start 'python app.py APP_ARGS' on a free loopback port, load it and stop it, instead of "
                             "--url and --server-pid; repeat to compare settings; leading NAME=value words set the "
                             "server's environment, e.g. --serve 'SPRINT_QUEUE_SIZE=8 --model preview'")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def load(url: str, server_pid: int | None) -> LoadResult:
        return run_load(url, args.sessions, args.duration, warmup_s=args.warmup, server_pid=server_pid,
                        size=args.size, steps=args.steps, request_timeout_s=args.timeout, tolerance=args.tolerance,
                        log=log)

    if args.serve:
        results = [serve_and_load(app_args, load, log) for app_args in args.serve]
    else:
        results = [load(args.url, args.server_pid)]
    for result in results:
        print(result.table())
        for sample in result.failure_samples + result.mismatch_samples:
            print("  " + sample)
    if len(results) > 1:
        print(compare(results))
    if args.json is not None:
        data = [result.to_json() for result in results]
        args.json.write_text(json.dumps(data[0] if len(data) == 1 else data, indent=2) + "\n")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
