"""Frame benchmark: per-stage median and p90 through the same Engine the app uses.

    python -m sprint_demo.tools.bench --model preview --size 512 --steps 1,2,4 --mode t2i,controlnet --repeat 10
    python -m sprint_demo.tools.bench --model preview --size 512 --steps 1 --mode t2i,controlnet --decoder full,tiny
    python -m sprint_demo.tools.bench --model preview --size 512 --steps 1 --mode img2img --decoder full,tiny

Modes:
  t2i              a new seed each frame, same prompt (the prompt cache is warm: text_encode ~ 0)
  controlnet       a new stroke on the canvas each frame: a full control-map encode every frame
                   ("model time" = control_encode + denoise + decode: the ControlNet frame's model work)
  controlnet-warm  same canvas and prompt, a new seed each frame: text_encode and control_encode ~ 0
  img2img          a new painting on the canvas each frame (one more coloured stroke), redrawn at each
                   ``--strength`` (default ``settings.DEFAULT_PAINT_STRENGTH``): a full image_encode every frame, as
                   while painting on the Paint tab ("model time" = image_encode + denoise + decode)

``--decoder full,tiny`` runs every case with each autoencoder lane (``"full"``: the DC-AE; ``"tiny"``: the tiny
autoencoder decodes the frame and encodes an image-to-image picture; control maps take the DC-AE's encoder in both);
each run records its ``"decoder"``.

``--mode components`` (alone) times the autoencoders instead: the full-size DC-AE against the full-size tiny
autoencoder (both random weights), encode (of a stroke drawing's control map) and decode at ``--size`` (default
512), same run, with their ratio and GFLOP (``sprint_demo.tools.autoencoder_bench.benchmark_components``);
``--parts encode`` times the encodes alone.

``--mode users`` (alone) simulates users calling the engine directly, no web server: ``--users`` threads, each
drawing its own frames (its own prompt, a new seed every frame; every other user with its own sketch) for
``--duration`` seconds, once per ``--max-batch-size`` value and ``--decoder`` lane, in one process and run:
frames/s over all users and per user, p50/p95 latency, the mean batch size, frames/s as a ratio to the first batch
size, and the largest difference (uint8 levels) between a batched frame and the same request made alone::

    python -m sprint_demo.tools.bench --mode users --model random-full --size 1024 --users 8 --max-batch-size 1,8 \
        --decoder full,tiny --duration 30 --json users.json

``--mode camera`` (alone) is ``users`` with camera users: each sends a new camera picture every frame (its own
colour, a square moving across; ``settings.CAMERA_CAPTURE_SIZE``, 4:3) as image-to-image at draft priority, with
two frames outstanding as the page keeps them (one being made, one waiting), as its own engine session::

    python -m sprint_demo.tools.bench --mode camera --model random-full --users 8 --max-batch-size 1,8 \
        --decoder tiny --steps 1 --duration 30 --json camera.json

``--mode camera-steady`` (alone): camera users as the Camera tab sends them (``tools.steady_bench``): a still scene
with sensor noise and a slow pan, each with unchanged pictures skipped and not (``sprint_demo.steady``): frames
shown and model frames per user per second, model-seconds per user per minute::

    python -m sprint_demo.tools.bench --mode camera-steady --users 2 --duration 20 --decoder tiny --json steady.json

``--mode idle`` (alone): the first frame after ``--idle`` seconds without work (default 10), made on the engine's
model thread, which recorded the CUDA graphs at warm-up, against the same frame made in a thread started for it
(the engine's own thread bypassed): with CUDA graphs the latter re-records its graphs. One process, same warm engine::

    python -m sprint_demo.tools.bench --mode idle --model random-full --compile --cuda-graphs --steps 1

``--mode text`` (alone) times the text encoder at Gemma-2-2B's sizes (random weights): a new prompt encoded with the
trained instruction in full (``encode_prompt``, what ``__call__`` runs), with the instruction's tokens cached (the
engine's ``PrefixCachedPromptEncoder``) and without the instruction, same run, median of ``--repeat`` (default 5;
``--layers N`` runs only N of its 26 layers; ``sprint_demo.tools.text_encode_bench``)::

    python -m sprint_demo.tools.bench --mode text --device cuda --dtype bf16 --repeat 10 --json text.json

``--summarize A.json B.json ...`` prints one table over earlier runs with each case's ratio to the first.
``--profile PATH`` then runs a few more frames of one case (ControlNet, new strokes, when asked for) under
``torch.profiler`` and writes, per frame, each stage's wall time beside the device time spent in it, and the
operators and kernels that took the most: where a stage's milliseconds go, from the same run.

Writes ``{"runs": [{"mode", "decoder", "steps", "height", "width", "device", "model", "stages_ms", "total_ms",
"p90_total_ms", ...}], "meta": {...}}`` (img2img runs also ``"strength"``) when ``--json`` is given;
``meta.compiled_vs_eager`` compares one frame of the compiled engine with the same frame with torch.compile ignored.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import inputs, settings
from ..engine import Engine, Frame, FrameRequest, Priority, Superseded, load_engine
from ..frames import DECODERS, DEFAULT_DECODER
from ..inputs import InputError, check_strength
from ..models.speedups import COMPILE_SCOPES, SpeedOptions
from ..renderer import STAGE_LABEL, STAGES
from ..sketches import stroke_painting, stroke_sketch
from . import steady_bench

IMG2IMG_MODE = "img2img"  # image-to-image: a new painting each frame (the Paint tab)
MODES = ("t2i", "controlnet", "controlnet-warm", IMG2IMG_MODE)
COMPONENTS_MODE = "components"  # the autoencoders alone, no engine
USERS_MODE = "users"  # simulated users calling the engine at once (cross-user batches)
CAMERA_MODE = "camera"  # simulated camera users: a new picture every frame, two frames outstanding each
CAMERA_STEADY_MODE = "camera-steady"  # camera users on still and moving scenes, skipping on and off
IDLE_MODE = "idle"  # the first frame after idle time: on the model thread vs in a fresh thread
TEXT_MODE = "text"  # the text encoder alone: the instruction encoded in full, prefix-cached, or left out
# modes that run alone
SOLO_MODES = (COMPONENTS_MODE, USERS_MODE, CAMERA_MODE, CAMERA_STEADY_MODE, IDLE_MODE, TEXT_MODE)
CAMERA_OUTSTANDING = 2  # frames a camera page keeps in flight: one being made, one waiting (web/camera.js)
BENCH_PROMPT = "a watercolor painting of a lighthouse on a cliff at sunset"
_new_strokes = itertools.count(3)  # every "controlnet" / "img2img" frame of the run draws a canvas no earlier had


def timed_render(engine: Engine, build: Callable[[], FrameRequest], **render: Any) -> Frame:
    """``engine.render`` of the request ``build()`` makes from raw values (``sprint_demo.inputs``, as the app's
    handlers build it), building it timed as the frame's "input_prep" stage."""
    began = time.perf_counter()
    request = build()
    return engine.render(request, prep_ms=(time.perf_counter() - began) * 1000, **render)


def sketch_frame(engine: Engine, sketch: Image.Image, prompt: str, steps: int, seed: int, decoder: str) -> Frame:
    """A sketch's frame at the app's default guidance, control strength and line thickness."""
    return timed_render(engine, functools.partial(
        inputs.sketch_request, sketch, prompt, steps, seed, settings.DEFAULT_GUIDANCE,
        settings.DEFAULT_CONTROL_STRENGTH, settings.DEFAULT_THICKNESS, (engine.size, engine.size), decoder=decoder))


def run_case(engine: Engine, mode: str, steps: int, size: int, repeat: int, decoder: str = DEFAULT_DECODER,
             strength: float = settings.DEFAULT_PAINT_STRENGTH) -> dict:
    """``repeat`` timed frames of one case (``strength``: img2img's); medians and p90s of their stages."""
    frames = []
    for i in range(repeat + 1):  # the first frame of a case warms caches and allocator pools: not counted
        if mode == "t2i":
            frame = engine.render(inputs.text_request(BENCH_PROMPT, steps, 1000 + i, settings.DEFAULT_GUIDANCE, size,
                                                      size, decoder))
        elif mode == IMG2IMG_MODE:
            painting = stroke_painting(engine.size, next(_new_strokes))
            frame = timed_render(engine, functools.partial(
                inputs.image_request, painting, BENCH_PROMPT, strength, steps, 7, settings.DEFAULT_GUIDANCE,
                engine.size, decoder))
        else:
            strokes = next(_new_strokes) if mode == "controlnet" else 2
            seed = 1000 + i if mode == "controlnet-warm" else 7
            frame = sketch_frame(engine, stroke_sketch(engine.size, strokes), BENCH_PROMPT, steps, seed, decoder)
        if i:
            frames.append(frame.timings_ms)
    stages = {stage: round(statistics.median(f[stage] for f in frames), 2) for stage in STAGES}
    totals = [f["total"] for f in frames]
    model = [f["control_encode"] + f["image_encode"] + f["denoise"] + f["decode"] for f in frames]
    strength_field = {"strength": strength} if mode == IMG2IMG_MODE else {}
    return strength_field | {
        "mode": mode,
        "decoder": decoder,
        "steps": steps,
        "height": size,
        "width": size,
        "device": device_name(engine),
        "model": engine.model_name,
        "stages_ms": stages,
        "total_ms": round(statistics.median(totals), 2),
        "p90_total_ms": round(float(np.percentile(totals, 90)), 2),
        "model_ms": round(statistics.median(model), 2),
        "p90_stages_ms": {s: round(float(np.percentile([f[s] for f in frames], 90)), 2) for s in STAGES},
        "repeat": repeat,
    }


def user_frame(engine: Engine, user: int, frame: int, steps: int, decoder: str) -> Frame:
    """Simulated user ``user``'s ``frame``-th frame: its own prompt, a new seed each frame; even users draw."""
    prompt = f"{BENCH_PROMPT}, user {user}"
    seed = 10_000 * (user + 1) + frame
    if user % 2:
        return engine.render(inputs.text_request(prompt, steps, seed, settings.DEFAULT_GUIDANCE, engine.size,
                                                 engine.size, decoder))
    return sketch_frame(engine, stroke_sketch(engine.size, 3 + user % 4), prompt, steps, seed, decoder)


def camera_size() -> tuple[int, int]:
    """The simulated camera's picture size: long side ``settings.CAMERA_CAPTURE_SIZE``, the commonest webcam aspect
    (the first of ``settings.CAMERA_WARM_ASPECTS``, which a compiled engine warms up)."""
    across, down = settings.CAMERA_WARM_ASPECTS[0]
    return settings.CAMERA_CAPTURE_SIZE, settings.CAMERA_CAPTURE_SIZE * down // across


def camera_picture(user: int, frame: int) -> Image.Image:
    """Camera user ``user``'s ``frame``-th picture (``camera_size``): its own colour, a dark square moving across."""
    width, height = camera_size()
    picture = Image.new("RGB", (width, height), ((70 * user) % 256, (150 + 40 * user) % 256, (220 - 30 * user) % 256))
    x = (frame * 16) % (width - 64)
    picture.paste((20, 20, 20), (x, height // 3, x + 64, height // 3 + 64))
    return picture


def camera_frame(engine: Engine, user: int, frame: int, steps: int, decoder: str) -> Frame:
    """Camera user ``user``'s ``frame``-th frame: image-to-image of its picture at the camera's default strength,
    its own prompt and seed, at draft priority in its own session (as ``web.handlers.Handlers.camera_frame``)."""
    request = inputs.image_request(camera_picture(user, frame), f"{BENCH_PROMPT}, camera {user}",
                                   settings.DEFAULT_CAMERA_STRENGTH, steps, 10_000 * (user + 1),
                                   settings.DEFAULT_GUIDANCE, settings.CAMERA_CAPTURE_SIZE, decoder)
    return engine.render(request, session=f"camera:{user}", priority=Priority.DRAFT)


def run_users(engine: Engine, users: int, batch_size: int, steps: int, decoder: str, duration_s: float,
              kind: str = USERS_MODE) -> dict:
    """``users`` users calling the engine at once for ``duration_s`` (after one frame each that is not counted),
    with batches of up to ``batch_size``; then each user's last frame made again alone and compared. ``kind``:
    drawing users (``USERS_MODE``, one frame at a time) or camera users (``CAMERA_MODE``, two outstanding)."""
    make, loops = (camera_frame, CAMERA_OUTSTANDING) if kind == CAMERA_MODE else (user_frame, 1)
    engine.max_batch_size = batch_size
    engine.clear_caches()
    counted: list[list[tuple[float, int]]] = [[] for _ in range(users)]  # per user: (latency ms, batch size)
    last: dict[int, tuple[int, np.ndarray]] = {}  # user -> (frame index, pixels)
    errors: list[str] = []
    deadline = [0.0]

    def set_deadline() -> None:  # run once, before any thread passes the barrier
        deadline[0] = time.perf_counter() + duration_s

    start = threading.Barrier(users * loops + 1, action=set_deadline)
    indices = [itertools.count(1) for _ in range(users)]  # a user's frames, numbered across its loops

    dropped = [0] * users  # camera frames a newer frame of the same user replaced while they waited

    def one_frame(user: int, index: int) -> Frame | None:
        try:
            return make(engine, user, index, steps, decoder)
        except Superseded:  # a camera page's two frames both waited: the newer one took the older's place
            dropped[user] += 1
            time.sleep(settings.CAMERA_REPLACE_INTERVAL_MS / 1000)  # as the page waits before the next
            return None

    def user_loop(user: int, loop: int) -> None:
        try:
            one_frame(user, -1 - loop)  # caches and allocator pools: not counted
            start.wait()
            while time.perf_counter() < deadline[0]:
                index = next(indices[user])
                began = time.perf_counter()
                if (frame := one_frame(user, index)) is None:
                    continue
                counted[user].append(((time.perf_counter() - began) * 1000, frame.batch_size))
                last[user] = (index, np.asarray(frame.image, dtype=np.int16))
        except Exception as error:  # noqa: BLE001 - reported, the other users carry on
            errors.append(f"user {user}: {type(error).__name__}: {error}"[:300])
            start.abort()

    threads = [threading.Thread(target=user_loop, args=(u, loop), daemon=True)
               for u in range(users) for loop in range(loops)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - (deadline[0] - duration_s)
    result = {"mode": kind, "decoder": decoder, "max_batch_size": batch_size, "users": users, "steps": steps,
              "device": device_name(engine), "model": engine.model_name}
    result["width"], result["height"] = (inputs.fit_size(*camera_size(), settings.CAMERA_CAPTURE_SIZE)
                                         if kind == CAMERA_MODE else (engine.size, engine.size))
    if errors:
        return result | {"error": errors[0]}
    latencies = [ms for frames in counted for ms, _ in frames]
    engine.max_batch_size = 1  # each user's last frame again, alone (caches cleared: no reuse)
    engine.clear_caches()
    levels = [int(np.abs(np.asarray(make(engine, u, i, steps, decoder).image, dtype=np.int16) - px).max())
              for u, (i, px) in sorted(last.items())]
    return result | {
        "frames": len(latencies),
        "frames_per_s": round(len(latencies) / elapsed, 3),
        "user_frames_per_s": [round(len(frames) / elapsed, 3) for frames in counted],
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "latency_p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "mean_batch_size": round(float(np.mean([b for frames in counted for _, b in frames])), 2),
        "dropped": sum(dropped),
        "batched_vs_alone_max_levels": max(levels),
    }


def format_users(runs: list[dict]) -> str:
    """The users runs as a table, with frames/s as a ratio to the first batch size of the same decoder."""
    header = (f"{'decoder':>7} {'batch':>5} {'frames/s':>8} {'per user min/max':>16} {'p50 ms':>7} {'p95 ms':>7} "
              f"{'mean batch':>10} {'vs alone':>8} {'ratio':>6}")
    lines = [header]
    first: dict[str, float] = {}
    for run in runs:
        if "error" in run:
            lines.append(f"{run['decoder']:>7} {run['max_batch_size']:>5}  {run['error']}")
            continue
        base = first.setdefault(run["decoder"], run["frames_per_s"])
        per_user = f"{min(run['user_frames_per_s']):.2f}/{max(run['user_frames_per_s']):.2f}"
        lines.append(f"{run['decoder']:>7} {run['max_batch_size']:>5} {run['frames_per_s']:>8.2f} {per_user:>16} "
                     f"{run['latency_p50_ms']:>7.0f} {run['latency_p95_ms']:>7.0f} {run['mean_batch_size']:>10.2f} "
                     f"{run['batched_vs_alone_max_levels']:>8} {run['frames_per_s'] / base if base else 0:>5.2f}x")
    return "\n".join(lines)


def run_idle(engine: Engine, idle_s: float, steps: int, decoder: str) -> dict:
    """The first ControlNet frame after ``idle_s`` idle seconds, made on the model thread, then (after as long again)
    the same kind of frame run in a thread started for it, bypassing the model thread: milliseconds of each."""
    def request(seed: int):
        return inputs.sketch_request(stroke_sketch(engine.size, 3 + seed % 5), BENCH_PROMPT, steps, seed,
                                     settings.DEFAULT_GUIDANCE, settings.DEFAULT_CONTROL_STRENGTH,
                                     settings.DEFAULT_THICKNESS, (engine.size, engine.size), decoder=decoder)

    result = {"mode": IDLE_MODE, "idle_s": idle_s, "steps": steps, "decoder": decoder, "width": engine.size,
              "height": engine.size, "device": device_name(engine), "model": engine.model_name}
    time.sleep(idle_s)
    began = time.perf_counter()
    engine.render(request(101))
    result["model_thread_ms"] = round((time.perf_counter() - began) * 1000, 1)
    time.sleep(idle_s)
    again, errors = request(102), []

    def fresh_thread() -> None:
        try:
            engine.renderer.render([again], [0.0])
        except Exception as error:  # noqa: BLE001 - reported in the result
            errors.append(f"{type(error).__name__}: {error}"[:300])

    thread = threading.Thread(target=fresh_thread)
    began = time.perf_counter()
    thread.start()
    thread.join()
    result["fresh_thread_ms"] = round((time.perf_counter() - began) * 1000, 1)
    return result | ({"error": errors[0]} if errors else {})


def compiled_vs_eager(engine: Engine) -> dict:
    """The same ControlNet frame (new canvas, 1 step) through the engine as set up, then with torch.compile ignored:
    pixel differences in uint8 levels. Compiled bf16 code may round differently; images that differ by more than
    a few levels on average mean a compiled variant draws something else. (0 when nothing is compiled.)"""
    sketch = stroke_sketch(engine.size, 5)
    pixels = []
    for eager in (False, True):
        engine.clear_caches()  # a full frame both times: prompt, control encode, denoise, decode
        engine.renderer.eager = eager
        try:
            frame = sketch_frame(engine, sketch, BENCH_PROMPT, 1, 3, DEFAULT_DECODER)
        finally:
            engine.renderer.eager = False
        pixels.append(np.asarray(frame.image, dtype=np.int16))
    difference = np.abs(pixels[0] - pixels[1])
    return {"max_levels": int(difference.max()), "mean_levels": round(float(difference.mean()), 3)}


def profile_case(engine: Engine, mode: str, steps: int, frames: int = 3, decoder: str = DEFAULT_DECODER) -> str:
    """``frames`` frames of one case under torch.profiler -> a report. Per stage and frame: wall time on the host,
    device busy time (the kernels launched inside the stage, summed) and device span (first to last of them). A
    stage whose busy time is far below its wall time waits on the host (Python, launches, copies); one whose span
    is far above its busy time has gaps between kernels. Then the operators and kernels with the most self time
    on the device (on the host for a CPU run)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = engine.renderer.torch_device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    def profiled() -> profile:  # on the model thread: the profiler records the thread it was started in
        with profile(activities=activities) as prof:
            run_case(engine, mode, steps, engine.size, frames - 1, decoder)  # run_case adds one frame of its own
        return prof

    prof = engine.on_model_thread(profiled)
    events = prof.key_averages()
    # A stage is two entries: its range on the host, and (CUDA) the same label on the device's timeline.
    host = {e.key: e for e in events if e.key.startswith(STAGE_LABEL) and e.device_type == DeviceType.CPU}
    device = {e.key: e for e in events if e.key.startswith(STAGE_LABEL) and e.device_type != DeviceType.CPU}
    title = (f"# torch.profiler: {frames} frames of {mode}, {steps} step(s), {engine.size}px, decoder {decoder}, on "
             f"{device_name(engine)}, speed-ups: {engine.speed.describe()}")
    lines = [title, f"{'stage':>16} {'wall ms/frame':>14} {'device busy':>12} {'device span':>12}"]

    def per_frame(microseconds: float) -> str:
        return f"{microseconds / frames / 1000:.2f}"

    for stage in STAGES:
        label = STAGE_LABEL + stage
        if label in host:
            wall = per_frame(host[label].cpu_time_total)
            busy = per_frame(host[label].device_time_total) if cuda else "-"
            span = per_frame(device[label].device_time_total) if label in device else "-"
            lines.append(f"{stage:>16} {wall:>14} {busy:>12} {span:>12}")
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    lines += ["", events.table(sort_by=sort, row_limit=30, max_name_column_width=70)]
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def device_name(engine: Engine) -> str:
    device = engine.renderer.torch_device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def case_label(run: dict) -> str:
    """A run's mode, with its image-to-image strength when it has one."""
    return run["mode"] + (f" s={run['strength']:g}" if "strength" in run else "")


def format_table(runs: list[dict]) -> str:
    header = ["mode", "decoder", "steps", "size", *STAGES, "model", "total", "p90"]
    rows = [header]
    for run in runs:
        rows.append([case_label(run), run.get("decoder", DEFAULT_DECODER), str(run["steps"]),
                     f"{run['width']}x{run['height']}"]
                    + [f"{run['stages_ms'][s]:.1f}" for s in STAGES]
                    + [f"{run['model_ms']:.1f}", f"{run['total_ms']:.1f}", f"{run['p90_total_ms']:.1f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)


def summarize(paths: list[Path]) -> str:
    """One table over several JSON files (e.g. eager and compiled runs), with each case's speed-up against the
    first file: the compile on/off ratio comes from runs of the same session on the same card."""
    loaded = [(path.stem, json.loads(path.read_text())) for path in paths]
    # a case is (mode with its strength, steps): a tiny-lane run is compared with the first file's run of the same
    # case, whatever its lane (files without a "decoder" ran the full lane)
    baseline = {(case_label(r), r["steps"]): r for r in reversed(loaded[0][1]["runs"])}
    lines = [f"{'variant':>14} {'mode':>16} {'decoder':>7} {'steps':>5} {'encode':>7} {'denoise':>8} {'decode':>7} "
             f"{'model':>7} {'total':>7} {'p90':>7} {'x vs ' + loaded[0][0]:>12}"]
    for name, data in loaded:
        for r in data["runs"]:
            base = baseline.get((case_label(r), r["steps"]))
            ratio = f"{base['total_ms'] / r['total_ms']:.2f}" if base and r["total_ms"] else "-"
            st = r["stages_ms"]
            encode = st["control_encode"] + st.get("image_encode", 0.0)  # a run without image_encode: 0
            lines.append(f"{name:>14} {case_label(r):>16} {r.get('decoder', DEFAULT_DECODER):>7} {r['steps']:>5} "
                         f"{encode:>7.1f} "
                         f"{st['denoise']:>8.1f} {st['decode']:>7.1f} {r['model_ms']:>7.1f} {r['total_ms']:>7.1f} "
                         f"{r['p90_total_ms']:>7.1f} {ratio:>12}")
    device = loaded[0][1]["runs"][0]["device"] if loaded[0][1]["runs"] else "?"
    return f"# {device}, {loaded[0][1]['runs'][0]['width']}px, times in ms (median; p90 of total)\n" + "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sprint_demo.tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=settings.PREVIEW_MODEL, help="preview | random-full | weights id/folder")
    parser.add_argument("--controlnet", default=None, help="ControlNet checkpoint for real weights")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--size", type=int, default=None, help="square frame side (default: the engine's)")
    parser.add_argument("--steps", default="1,2,4", help="comma-separated step counts")
    parser.add_argument("--mode", default="t2i,controlnet", help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--decoder", default=DEFAULT_DECODER,
                        help=f"comma-separated autoencoder lanes, from {', '.join(DECODERS)} (default: %(default)s)")
    parser.add_argument("--strength", default=str(settings.DEFAULT_PAINT_STRENGTH),
                        help=f"--mode {IMG2IMG_MODE}: comma-separated strengths in (0, 1] (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed frames per case, after one warm-up frame (default 10; 3 calls for components)")
    parser.add_argument("--json", type=Path, default=None, help="write the runs here")
    parser.add_argument("--compile", action="store_true", help="torch.compile blocks and the DC-AE")
    parser.add_argument("--cuda-graphs", action="store_true", help="with --compile: CUDA graphs (reduce-overhead)")
    parser.add_argument("--compile-scope", default=SpeedOptions().compile_scope, choices=COMPILE_SCOPES,
                        help="with --compile: one region per block (measured) or per denoising step (untimed yet)")
    parser.add_argument("--no-channels-last", action="store_true", help="keep the DC-AE in NCHW layout")
    parser.add_argument("--no-tf32", action="store_true", help="disable TF32 matmuls")
    parser.add_argument("--users", type=int, default=8, help=f"--mode {USERS_MODE}: simulated users")
    parser.add_argument("--max-batch-size", default=f"1,{settings.MAX_BATCH_SIZE}",
                        help=f"--mode {USERS_MODE}: comma-separated batch sizes to compare (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=20.0, help=f"--mode {USERS_MODE}: seconds per case")
    parser.add_argument("--idle", type=float, default=10.0, help=f"--mode {IDLE_MODE}: idle seconds before a frame")
    parser.add_argument("--parts", default="encode,decode",
                        help=f"--mode {COMPONENTS_MODE}: comma-separated, from encode, decode (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=None,
                        help=f"--mode {TEXT_MODE}: run this many of Gemma-2-2B's 26 layers (default: all)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="after the timed cases, write a torch.profiler report of a few frames here")
    args = parser.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(",")]
    args.mode = args.mode.split(",")
    args.decoder = args.decoder.split(",")
    if not set(args.decoder) <= set(DECODERS):
        parser.error(f"unknown --decoder {[d for d in args.decoder if d not in DECODERS]}; choose from {DECODERS}")
    unknown = [m for m in args.mode if m not in (*MODES, *SOLO_MODES)]
    if unknown:
        parser.error(f"unknown --mode {unknown}; choose from {(*MODES, *SOLO_MODES)}")
    if any(m in SOLO_MODES for m in args.mode) and len(args.mode) > 1:
        parser.error(f"--mode {' or '.join(SOLO_MODES)} runs alone, got {args.mode}")
    args.max_batch_size = [int(b) for b in args.max_batch_size.split(",")]
    args.parts = tuple(args.parts.split(","))
    if not set(args.parts) <= {"encode", "decode"}:
        parser.error(f"unknown --parts {args.parts}; choose from encode, decode")
    try:
        args.strength = [check_strength(s) for s in args.strength.split(",")]
    except InputError as error:
        parser.error(f"--strength: {error}")
    if args.repeat is None:
        args.repeat = {COMPONENTS_MODE: 3, TEXT_MODE: 5}.get(args.mode[0], 10)
    return args


def run_components(args: argparse.Namespace) -> int:
    from .autoencoder_bench import benchmark_components, format_components

    result = benchmark_components(args.size or 512, args.device, args.dtype, args.repeat, args.parts)
    print(format_components(result))
    if args.json:
        write_json(args.json, {"components": result, "meta": {"torch": torch.__version__}})
    return 0


def run_text(args: argparse.Namespace) -> int:
    from .text_encode_bench import benchmark_text_encode, format_text_encode

    result = benchmark_text_encode(args.device, args.dtype, args.repeat, args.layers)
    print(format_text_encode(result))
    if args.json:
        write_json(args.json, {"text_encode": result, "meta": {"torch": torch.__version__}})
    return 0


def run_users_cases(engine: Engine, args: argparse.Namespace) -> int:
    runs = []
    for decoder in args.decoder:
        for batch_size in args.max_batch_size:
            runs.append(run_users(engine, args.users, batch_size, args.steps[0], decoder, args.duration,
                                  kind=args.mode[0]))
            print(format_users(runs[-1:]).splitlines()[-1], flush=True)
    print(format_users(runs))
    if args.json:
        meta = {"speedups": engine.speed.describe(), "dtype": str(engine.renderer.pipe.transformer.dtype),
                "torch": torch.__version__, "batch_window_ms": engine.batcher.window_s * 1000}
        write_json(args.json, {"runs": runs, "meta": meta})
    return 0 if all("error" not in run for run in runs) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--summarize"]:  # python -m sprint_demo.tools.bench --summarize eager.json compiled.json ...
        print(summarize([Path(p) for p in argv[1:]]))
        return 0
    args = parse_args(argv)
    if args.mode == [COMPONENTS_MODE]:
        return run_components(args)
    if args.mode == [TEXT_MODE]:
        return run_text(args)
    speed = SpeedOptions(tf32=not args.no_tf32, channels_last=not args.no_channels_last, compile=args.compile,
                         cuda_graphs=args.cuda_graphs, compile_scope=args.compile_scope)
    began = time.perf_counter()
    # one frame at a time (batches of 1, on the engine's model thread): the frame modes time one user's frame (the
    # profiler runs there through engine.on_model_thread); --mode users and camera set each case's batch size
    engine = load_engine(args.model, args.controlnet, args.device, args.dtype, warmup=False, speed=speed,
                         max_batch_size=1)
    if args.size:
        engine.size = args.size
    loaded_s = time.perf_counter() - began
    if not set(args.decoder) <= set(engine.decoders):
        print(f"error: --decoder {','.join(args.decoder)}: this engine has {', '.join(engine.decoders)} "
              f"({engine.tiny_note})", file=sys.stderr)
        return 2
    warmup_s = engine.warmup()
    print(f"# {engine.model_name} on {device_name(engine)}, dtype {engine.renderer.pipe.transformer.dtype}, "
          f"speed-ups: {engine.speed.describe()}; load {loaded_s:.1f} s, warm-up {warmup_s:.1f} s", flush=True)
    if args.mode in ([USERS_MODE], [CAMERA_MODE]):
        return run_users_cases(engine, args)
    if args.mode == [CAMERA_STEADY_MODE]:
        runs = steady_bench.camera_users_cases(engine, args.users, args.duration, args.decoder[0])
        print(steady_bench.format_users(runs))
        if args.json:
            write_json(args.json, {"runs": runs, "meta": {"device": device_name(engine), "model": engine.model_name}})
        return 0
    if args.mode == [IDLE_MODE]:
        result = run_idle(engine, args.idle, args.steps[0], args.decoder[0])
        print(json.dumps(result))
        if args.json:
            write_json(args.json, {"runs": [result], "meta": {"speedups": engine.speed.describe(),
                                                              "torch": torch.__version__}})
        return 0 if "error" not in result else 1
    runs = []
    for decoder in args.decoder:  # in the order asked: the lane that matters most first, before a budget cuts in
        for mode in args.mode:
            for steps in args.steps:
                for strength in args.strength if mode == IMG2IMG_MODE else [settings.DEFAULT_PAINT_STRENGTH]:
                    runs.append(run_case(engine, mode, steps, engine.size, args.repeat, decoder, strength))
                    print(format_table(runs[-1:]).splitlines()[-1], flush=True)
    print(format_table(runs))
    try:  # a failed check is a finding to record, not a reason to lose the timings
        check = compiled_vs_eager(engine)
    except Exception as error:  # noqa: BLE001
        check = {"error": f"{type(error).__name__}: {error}"[:500]}
    print(f"# compiled vs eager, one ControlNet frame, uint8 levels: {check}")
    if args.json:
        meta = {"speedups": engine.speed.describe(), "dtype": str(engine.renderer.pipe.transformer.dtype),
                "load_s": round(loaded_s, 1), "warmup_s": round(warmup_s, 1), "torch": torch.__version__,
                "compiled_vs_eager": check}
        write_json(args.json, {"runs": runs, "meta": meta})
    if args.profile:  # after the JSON is written: a profiler failure must not cost the timings
        mode = "controlnet" if "controlnet" in args.mode else args.mode[0]
        report = profile_case(engine, mode, args.steps[0], decoder=args.decoder[0])
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        args.profile.write_text(report + "\n")
        print("\n".join(report.splitlines()[:len(STAGES) + 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
