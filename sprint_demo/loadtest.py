"""Hold concurrent load against a running demo server and check that every answer belongs to its asker.

Usage (the server must already be running; start one with ``python app.py --model preview``)::

    python -m sprint_demo.loadtest --url http://127.0.0.1:7860 --sessions 8 --duration 60 \
        --json load.json --server-pid $(pgrep -n -f "app.py --model preview")

What it does:

1. Gives each of N sessions its own prompt, seed and sketch (from a small deterministic set drawn in code).
2. Baseline: one client calls each distinct input once, one call at a time, and keeps the returned pixels as
   the expected image for that input. The model is deterministic for fixed inputs and JPEG encoding is
   deterministic for identical pixels, so any later answer that differs came from someone else's inputs
   (cross-talk), a stale frame, or a broken cache.
3. Load: N threads, each with its own ``gradio_client.Client`` (its own session hash), alternate
   ``/sketch_to_image`` and ``/text_to_image`` at small sizes until the time is up, and compare every returned
   image with the expected one.
4. Report: requests, failures by kind, mismatches, p50/p95 latency, and (with ``--server-pid``) the server's
   resident memory after warm-up and at the end, the growth between, and its thread count.

Only loopback or a server you operate should be targeted: the script sends requests as fast as the server
answers them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from . import settings

LOAD_SIZE = settings.MIN_SIZE  # small frames: the load test measures the serving path, not the model
SKETCH_SET_SIZE = 4  # distinct sketches; sessions cycle through them
SEED_BASE = 1000  # session i uses seed SEED_BASE + i
REQUEST_TIMEOUT_S = 120.0  # one request slower than this counts as a "timeout" failure
MEMORY_SAMPLE_S = 0.5  # how often the server's RSS is sampled
RSS_WINDOW_S = 5.0  # memory references (after warm-up, middle, end) are medians over this many seconds
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
def make_sketch(index: int, size: int = LOAD_SIZE) -> Image.Image:
    """A deterministic black-on-white line drawing, different for each ``index`` (modulo nothing)."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    s = size
    w = max(2, size // 64)  # stroke width, like a brush of a few pixels
    kind = index % 4
    if kind == 0:  # a house
        draw.rectangle([s * 0.25, s * 0.45, s * 0.75, s * 0.85], outline="black", width=w)
        draw.line([s * 0.2, s * 0.48, s * 0.5, s * 0.2, s * 0.8, s * 0.48], fill="black", width=w)
    elif kind == 1:  # a face
        draw.ellipse([s * 0.2, s * 0.2, s * 0.8, s * 0.8], outline="black", width=w)
        draw.ellipse([s * 0.35, s * 0.38, s * 0.42, s * 0.45], fill="black")
        draw.ellipse([s * 0.58, s * 0.38, s * 0.65, s * 0.45], fill="black")
        draw.arc([s * 0.35, s * 0.45, s * 0.65, s * 0.68], 20, 160, fill="black", width=w)
    elif kind == 2:  # hills and a sun
        draw.arc([-s * 0.2, s * 0.5, s * 0.6, s * 1.2], 180, 360, fill="black", width=w)
        draw.arc([s * 0.4, s * 0.55, s * 1.2, s * 1.3], 180, 360, fill="black", width=w)
        draw.ellipse([s * 0.65, s * 0.1, s * 0.85, s * 0.3], outline="black", width=w)
    else:  # a zig-zag and a diagonal
        points = [(s * (0.1 + 0.1 * k), s * (0.3 if k % 2 else 0.6)) for k in range(9)]
        draw.line(points, fill="black", width=w)
        draw.line([s * 0.1, s * 0.9, s * 0.9, s * 0.75], fill="black", width=w)
    # Later sets differ by a dot in a position set by the index, so index 4 != index 0.
    dot = index // 4
    if dot:
        x = s * (0.05 + 0.9 * ((dot * 37) % 100) / 100)
        draw.ellipse([x, s * 0.05, x + s * 0.04, s * 0.09], fill="black")
    return image


def png_data_url(image: Image.Image) -> str:
    """The wire format the canvas sends: ``data:image/png;base64,...``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class Call:
    """One distinct request: the endpoint and its keyword arguments."""

    session: int
    api_name: str
    kwargs: tuple[tuple[str, Any], ...]  # sorted items; a tuple so the call can key a dict

    @property
    def key(self) -> str:
        return f"s{self.session}{self.api_name}"


def session_calls(session: int, size: int = LOAD_SIZE, steps: int = settings.DEFAULT_STEPS) -> tuple[Call, Call]:
    """The two distinct requests session ``session`` alternates between (its own prompt, seed and sketch)."""
    prompt = f"{PROMPT_SUBJECTS[session % len(PROMPT_SUBJECTS)]}, session {session}"
    seed = SEED_BASE + session
    sketch = png_data_url(make_sketch(session % SKETCH_SET_SIZE, size))
    sketch_kwargs = dict(sketch=sketch, prompt=prompt, steps=steps, seed=seed,
                         guidance_scale=settings.DEFAULT_GUIDANCE,
                         control_strength=settings.DEFAULT_CONTROL_STRENGTH, thickness=settings.DEFAULT_THICKNESS)
    text_kwargs = dict(prompt=prompt, steps=steps, seed=seed, guidance_scale=settings.DEFAULT_GUIDANCE,
                       width=size, height=size)
    return (Call(session, SKETCH_ENDPOINT, tuple(sorted(sketch_kwargs.items()))),
            Call(session, TEXT_ENDPOINT, tuple(sorted(text_kwargs.items()))))


# --- Reading answers ----------------------------------------------------------------------------------------
def find_image_path(result: Any) -> str | None:
    """The first image file in an endpoint's result (a path, a FileData-like dict, or a tuple holding one)."""
    if isinstance(result, (str, os.PathLike)):
        path = str(result)
        return path if os.path.isfile(path) and Path(path).suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"} \
            else None
    if isinstance(result, dict):
        for key in ("path", "value", "image"):
            found = find_image_path(result.get(key))
            if found:
                return found
        return None
    if isinstance(result, (list, tuple)):
        for item in result:
            found = find_image_path(item)
            if found:
                return found
    return None


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
    """A short, stable failure kind for the report (the message itself goes to the samples)."""
    name = type(error).__name__
    text = str(error).lower()
    if name == "QueueError" or "queue is full" in text:
        return "queue_full"
    if isinstance(error, TimeoutError) or "timeout" in name.lower() or "timed out" in text:
        return "timeout"
    if isinstance(error, ConnectionError) or "connect" in name.lower() or "connection" in text:
        return "connection"
    if name == "AppError":
        return "app_error"
    if isinstance(error, ValueError) and "no image" in text:
        return "no_image"
    return name


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- Server memory ------------------------------------------------------------------------------------------
class MemoryMonitor:
    """Samples the server process's RSS and thread count in the background (psutil)."""

    def __init__(self, pid: int | None, interval_s: float = MEMORY_SAMPLE_S):
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int, int]] = []  # (time, rss bytes, threads)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = None
        if pid is not None:
            import psutil

            self._process = psutil.Process(pid)

    def sample(self) -> tuple[int, int] | None:
        if self._process is None:
            return None
        try:
            rss, threads = self._process.memory_info().rss, self._process.num_threads()
        except Exception:  # the server exited: the report says so through missing samples
            return None
        self.samples.append((time.monotonic(), rss, threads))
        return rss, threads

    def start(self) -> None:
        if self._process is None:
            return

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.sample()

        self._thread = threading.Thread(target=loop, name="loadtest-memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def window(self, t0: float, t1: float) -> tuple[int, int] | None:
        """(median RSS, median thread count) of the samples taken between monotonic times t0 and t1."""
        inside = [(rss, threads) for t, rss, threads in self.samples if t0 <= t <= t1]
        if not inside:
            return None
        return int(np.median([r for r, _ in inside])), int(np.median([n for _, n in inside]))

    def peak_rss(self) -> int | None:
        return max((rss for _, rss, _ in self.samples), default=None)


# --- Report -------------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
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
    requests_by_endpoint: dict[str, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    latency_by_endpoint_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    throughput_rps: float | None = None
    baseline_requests: int = 0
    distinct_expected_images: int = 0  # < 2 * sessions means some cross-talk would go unseen
    server_pid: int | None = None
    rss_before_load_mb: float | None = None  # after the baseline calls
    rss_after_warmup_mb: float | None = None  # median over the RSS_WINDOW_S after warm-up
    rss_end_mb: float | None = None  # median over the last RSS_WINDOW_S of load
    rss_peak_mb: float | None = None
    rss_growth_mb: float | None = None  # end - after warm-up
    rss_growth_second_half_mb: float | None = None  # end - middle of the measured part: a leak grows here too
    rss_timeline_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the load, MB), ~5 s apart
    server_threads_after_warmup: int | None = None
    server_threads_end: int | None = None
    rss_after_load_mb: float | None = None  # one sample, 2 s after every client closed
    server_threads_after_load: int | None = None

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

        rows = [
            ("server", self.url),
            ("sessions", fmt(self.sessions)),
            ("duration (warm-up)", f"{self.duration_s:.1f} s ({self.warmup_s:.0f} s)"),
            ("requests", f"{self.requests} ("
                         + ", ".join(f"{k} {v}" for k, v in sorted(self.requests_by_endpoint.items())) + ")"),
            ("throughput", fmt(self.throughput_rps, " req/s")),
            ("failures", f"{self.failed} {dict(sorted(self.failures.items())) if self.failures else ''}".strip()),
            ("mismatches", fmt(self.mismatches)),
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
             tolerance: int = 0, log=None) -> LoadReport:
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
    report = LoadReport(url=url, sessions=sessions, duration_s=0.0, warmup_s=warmup_s, server_pid=server_pid)
    monitor = MemoryMonitor(server_pid)
    download_root = tempfile.mkdtemp(prefix="sprint-loadtest-")
    calls = {i: session_calls(i, size, steps) for i in range(sessions)}
    lock = threading.Lock()
    latencies: dict[str, list[float]] = {SKETCH_ENDPOINT: [], TEXT_ENDPOINT: []}
    failures: Counter[str] = Counter()
    by_endpoint: Counter[str] = Counter()

    try:
        # 1. Baseline: the expected image of every distinct input, one call at a time.
        log(f"baseline: {2 * sessions} distinct inputs against {url}")
        expected: dict[str, np.ndarray] = {}
        baseline_client = _client(url, os.path.join(download_root, "baseline"))
        try:
            for session_pair in calls.values():
                for call in session_pair:
                    expected[call.key] = _call(baseline_client, call, request_timeout_s)
                    report.baseline_requests += 1
        finally:
            baseline_client.close()
        report.distinct_expected_images = len({digest(p) for p in expected.values()})
        if report.distinct_expected_images < len(expected):
            log(f"warning: only {report.distinct_expected_images} distinct expected images for {len(expected)} "
                "inputs: cross-talk between sessions with equal images cannot be seen")
        first = monitor.sample()
        if first:
            report.rss_before_load_mb = first[0] / 2**20

        # 2. Load: one thread and one client per session.
        clients = [_client(url, os.path.join(download_root, f"session{i}")) for i in range(sessions)]
        start = time.monotonic()
        deadline = start + duration_s
        warm_at = start + warmup_s

        def same(a: np.ndarray, b: np.ndarray) -> bool:
            if a.shape != b.shape:
                return False
            if tolerance == 0:
                return np.array_equal(a, b)
            return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= tolerance

        def worker(index: int) -> None:
            client, pair = clients[index], calls[index]
            k = index  # stagger: half the sessions start with each endpoint
            while time.monotonic() < deadline:
                call = pair[k % 2]
                k += 1
                t0 = time.perf_counter()
                try:
                    pixels = _call(client, call, request_timeout_s)
                except Exception as error:  # noqa: BLE001 - every failure is counted by kind
                    kind = classify_error(error)
                    with lock:
                        report.requests += 1
                        by_endpoint[call.api_name] += 1
                        failures[kind] += 1
                        if len(report.failure_samples) < 10:
                            report.failure_samples.append(f"{call.key}: {kind}: {str(error)[:300]}")
                    if kind == "connection":
                        time.sleep(0.5)  # do not spin on a dead server
                    continue
                elapsed_ms = (time.perf_counter() - t0) * 1000
                match = same(pixels, expected[call.key])
                with lock:
                    report.requests += 1
                    by_endpoint[call.api_name] += 1
                    latencies[call.api_name].append(elapsed_ms)
                    if match:
                        report.successes += 1
                    else:
                        report.mismatches += 1
                        if len(report.mismatch_samples) < 10:
                            owner = next((key for key, p in expected.items() if same(pixels, p)), "nobody")
                            report.mismatch_samples.append(
                                f"{call.key}: got {digest(pixels)} {pixels.shape} (matches {owner}), "
                                f"expected {digest(expected[call.key])}")

        threads = [threading.Thread(target=worker, args=(i,), name=f"loadtest-session{i}", daemon=True)
                   for i in range(sessions)]
        log(f"load: {sessions} sessions for {duration_s:.0f} s (warm-up {warmup_s:.0f} s)")
        monitor.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + request_timeout_s + 10)
        report.duration_s = time.monotonic() - start
        monitor.stop()
        for client in clients:
            client.close()
        time.sleep(2.0 if server_pid is not None else 0.0)  # let the server notice the clients left
        settled = monitor.sample()
        if settled:
            report.rss_after_load_mb, report.server_threads_after_load = settled[0] / 2**20, settled[1]
        # RSS swings by tens of MB within one frame (decoder activations come and go), so each reference is the
        # median of the samples in a window, not one sample.
        end_at = min(deadline, time.monotonic())
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
        next_t = start
        for t, rss, _ in monitor.samples:
            if t >= next_t:
                report.rss_timeline_mb.append((round(t - start, 1), round(rss / 2**20, 1)))
                next_t = t + 5.0
        peak = monitor.peak_rss()
        report.rss_peak_mb = peak / 2**20 if peak is not None else None
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            failures["stuck_session"] += len(stuck)
    finally:
        shutil.rmtree(download_root, ignore_errors=True)

    all_latencies = [ms for values in latencies.values() for ms in values]
    report.failures = dict(failures)
    report.requests_by_endpoint = dict(by_endpoint)
    report.latency_p50_ms = percentile(all_latencies, 50)
    report.latency_p95_ms = percentile(all_latencies, 95)
    report.latency_max_ms = max(all_latencies) if all_latencies else None
    report.latency_by_endpoint_ms = {
        name: {"p50": percentile(values, 50), "p95": percentile(values, 95)} for name, values in latencies.items()
    }
    report.throughput_rps = report.requests / report.duration_s if report.duration_s else None
    return report


# --- A server to test against (used by the tests; handy by hand too) ------------------------------------------
REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 180.0  # import + preview model build + warm-up on 2 busy cores
INHERIT_NOT = ("SPRINT_HOST", "SPRINT_PORT", "SPRINT_QUEUE_SIZE", "SPRINT_SAFETY_CHECKER", "SPACE_ID",
               "SPACES_ZERO_GPU", "GRADIO_SERVER_NAME", "GRADIO_SHARE")  # environment a test server does not inherit


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python app.py ARGS`` in a subprocess, its output in a log file; a context manager that stops it.

    ``wait_ready`` polls ``url`` until the server answers; ``stop`` terminates this process (by its own pid)
    and waits for it.
    """

    def __init__(self, args: list[str], port: int | None = None, env: dict[str, str] | None = None,
                 python: str = sys.executable, script: str | list[str] = "app.py", cwd: Path = REPO_ROOT):
        import subprocess

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A local launch as on a developer's machine: host and Spaces switches from this environment are not
        # inherited (pass them in ``env`` to test them); no analytics, no hub traffic.
        inherited = {k: v for k, v in os.environ.items() if k not in INHERIT_NOT}
        full_env = {**inherited, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="sprint-server-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [python, *([script] if isinstance(script, str) else script), *args]
        if "--port" not in args:
            command += ["--port", str(self.port)]
        self.command = command
        self.process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> ServerProcess:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/gradio_api/info", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout_s:.0f} s:\n{self.log()[-3000:]}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


_shared_servers: dict[tuple, ServerProcess] = {}
_shared_lock = threading.Lock()


def shared_server(args: list[str], env: dict[str, str] | None = None, wait: bool = True) -> ServerProcess:
    """One server per distinct (args, env) for the whole process, stopped at exit; ready unless ``wait=False``.

    The tests use it so that several test files share one ``python app.py`` start (20-40 s of imports and
    model building on 2 busy cores) instead of paying for one each; ``wait=False`` starts it early, in the
    background.
    """
    import atexit

    key = (tuple(args), tuple(sorted((env or {}).items())))
    with _shared_lock:
        server = _shared_servers.get(key)
        if server is None or server.process.poll() is not None:
            server = ServerProcess(args, env=env)
            _shared_servers[key] = server
            atexit.register(server.stop)
    return server.wait_ready() if wait else server


BLOCKED_TEST_WORD = "zyzzogeton"  # the stand-in safety checker below refuses prompts holding this word
CANARY_ENV = "SPRINT_TEST_CANARY"  # a secret-like value put in the test server's environment


def refuse_blocked_test_word(prompt: str) -> str | None:
    """Stand-in safety checker (``SPRINT_SAFETY_CHECKER=sprint_demo.loadtest:refuse_blocked_test_word``).

    Refuses prompts that contain ``BLOCKED_TEST_WORD`` and accepts everything else, so the tests can check the
    hook end to end without a real classifier.
    """
    return f"contains the blocked test word {BLOCKED_TEST_WORD!r}" if BLOCKED_TEST_WORD in prompt.lower() else None


_canary = f"canary-{os.getpid()}-{time.time_ns()}"


def suite_server(wait: bool = True) -> ServerProcess:
    """The preview-model server the test files share: started as a user would (no --host, no --share), with
    the stand-in safety checker on and a canary value in its environment (to detect /proc/self/environ leaks).
    """
    return shared_server(["--model", settings.PREVIEW_MODEL], wait=wait, env={
        "SPRINT_SAFETY_CHECKER": f"{__name__}:refuse_blocked_test_word",
        CANARY_ENV: _canary,
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sprint_demo.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=f"http://{settings.HOST}:{settings.PORT}", help="server root URL")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent client sessions")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (warm-up included)")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of load before the memory reference")
    parser.add_argument("--server-pid", type=int, default=None, help="server process id, for RSS and threads")
    parser.add_argument("--size", type=int, default=LOAD_SIZE, help="frame side in pixels")
    parser.add_argument("--steps", type=int, default=settings.DEFAULT_STEPS, help="sampling steps per frame")
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, help="per-request limit, seconds")
    parser.add_argument("--tolerance", type=int, default=0, help="largest pixel difference still 'the same image'")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    args = parser.parse_args(argv)
    report = run_load(args.url, args.sessions, args.duration, warmup_s=args.warmup, server_pid=args.server_pid,
                      size=args.size, steps=args.steps, request_timeout_s=args.timeout, tolerance=args.tolerance,
                      log=lambda message: print(message, file=sys.stderr, flush=True))
    print(report.table())
    for sample in report.failure_samples + report.mismatch_samples:
        print("  " + sample)
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
