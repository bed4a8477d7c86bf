"""Session affinity on Ray Serve, measured: the same sessions against replicas routed by session
(``session_routing.SessionRouter``) and by Serve's default router, alternating, in one process and run.

    python -m sprint_demo.tools.session_bench --sessions 4 --duration 30 --rounds 3 \
        --serve "--replicas 2 --model preview" --json affinity.json

Each round deploys the replicas once per routing (``serve_ray.deploy``, ``--serve`` taking ``serve_ray``'s flags)
and runs each of ``--workloads`` on them: ``--sessions`` sessions for ``--duration`` seconds through ``RayEngine``.

* ``drawing``: each session is a browser tab's Sketch canvas, as its page sends frames: a draft (one step, draft
  priority) for each new state of the canvas (at most every ``PEN_INTERVAL_S``) while at most two of its frames are
  outstanding, then the stroke's final frame (the last draft's canvas at the default steps) and a pause of
  ``PAUSE_S`` once it is shown. Every third stroke it then re-rolls the seed and every fifth stroke the prompt
  changes (the user typed), each on the same canvas, a final followed by a pause. A newer frame of a session may
  take an older one's place (dropped), which the engine does only to frames of a session on one replica.
* ``steady``: each session asks for one final frame at a time, each on a canvas one stroke further on; no frame
  takes another's place, so frames/s is what the replicas can make.

Sessions have their own prompts and canvases. Per run: frames/s made (answered) and shown (newer than the last one
shown, which the page would show), the mean rows per batch, the share of each session's frames made by the replica
that made most of them, sessions per replica (by that replica), dropped frames, the hit rates of the replicas'
prompt and control-latent caches (``Engine.cache_counts``, summed over the replicas), and their misses per distinct
prompt and per distinct canvas among the frames made (1.0: each encoded once). The summary has, per workload, the
medians over the rounds and the median of each round's session-to-default frames/s ratio.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import ImageDraw

from .. import inputs, settings
from ..frames import FrameRequest, Priority, Superseded
from ..sketches import stroke_sketch
from ..web.launch import engine_options
from . import serve_ray

OUTSTANDING = 2  # frames a page keeps outstanding (one being made, one waiting)
PEN_INTERVAL_S = 0.1  # the canvas changes at most this often while the pen moves
PAUSE_S = 0.3  # the user's moment after a final frame is shown (before the next stroke, re-roll or prompt)
DRAFTS_PER_STROKE = 4
REROLL_EVERY = 3  # strokes
PROMPT_EVERY = 5  # strokes
ROUTINGS = {"session": True, "default": False}  # name -> deploy(session_affinity=...)


def session_canvas(session: int, strokes: int, pen: int, size: int):
    """Session ``session``'s canvas after ``strokes`` strokes, the pen at point ``pen`` of the next: a mark at a
    place of the session's own makes every session's canvases its own."""
    canvas = stroke_sketch(size, strokes)
    draw = ImageDraw.Draw(canvas)
    corner = (37 + 53 * session) % (size - 40)
    draw.rectangle([corner, 8, corner + 24, 32], fill="black")
    draw.ellipse([pen * 9 % size, size - 40, pen * 9 % size + 8, size - 32], fill="black")
    return canvas


def session_frames(session: int, size: int):
    """Endless (priority, request) of one drawing session, in the order its page sends them; None where the user
    pauses (the page has shown the final frame, nothing is outstanding)."""
    strokes, pen, seed = 0, 0, session
    prompt = f"session {session}: a lighthouse on a cliff"
    while True:
        strokes += 1
        for _ in range(DRAFTS_PER_STROKE):
            pen += 1
            canvas = session_canvas(session, strokes, pen, size)
            yield Priority.DRAFT, _request(canvas, prompt, settings.DRAFT_STEPS, seed, size)
        yield Priority.FINAL, _request(canvas, prompt, settings.DEFAULT_STEPS, seed, size)
        yield None
        if strokes % REROLL_EVERY == 0:  # the same canvas with a new seed
            seed += 1
            yield Priority.FINAL, _request(canvas, prompt, settings.DEFAULT_STEPS, seed, size)
            yield None
        if strokes % PROMPT_EVERY == 0:  # the same canvas with the prompt typed anew
            prompt = f"session {session}: a lighthouse on a cliff, take {strokes // PROMPT_EVERY}"
            yield Priority.FINAL, _request(canvas, prompt, settings.DEFAULT_STEPS, seed, size)
            yield None


def steady_frames(session: int, size: int):
    """Endless final frames of one session, each on a canvas one stroke further on: the ``steady`` workload, one
    frame at a time, where no frame takes another's place, so frames/s is what the replicas can make."""
    strokes = 0
    prompt = f"session {session}: a harbour at dusk"  # not the drawing workload's: its cache entries do not help
    while True:
        strokes += 1
        yield Priority.FINAL, _request(session_canvas(session, strokes, 0, size), prompt, settings.DEFAULT_STEPS,
                                       session, size)


# name -> (a session's frames, frames it keeps outstanding)
WORKLOADS = {"drawing": (session_frames, OUTSTANDING), "steady": (steady_frames, 1)}


def _request(canvas, prompt: str, steps: int, seed: int, size: int) -> FrameRequest:
    return inputs.sketch_request(canvas, prompt, steps, seed, settings.DEFAULT_GUIDANCE,
                                 settings.DEFAULT_CONTROL_STRENGTH, settings.DEFAULT_THICKNESS, (size, size))


@dataclass
class Tally:
    made: Counter = field(default_factory=Counter)  # session -> frames
    shown: Counter = field(default_factory=Counter)  # session -> frames newer than the last shown
    dropped: Counter = field(default_factory=Counter)  # session -> superseded
    failed: list = field(default_factory=list)
    replicas: dict = field(default_factory=dict)  # session -> Counter(replica -> frames)
    last_shown: dict = field(default_factory=dict)
    prompts: set = field(default_factory=set)  # distinct prompts of the frames made
    canvases: set = field(default_factory=set)  # distinct control maps (digests) of the frames made
    lock: threading.Lock = field(default_factory=threading.Lock)


def drive(engine: serve_ray.RayEngine, sessions: int, duration_s: float, workload: str) -> tuple[Tally, float]:
    """``sessions`` sessions of ``workload`` (``WORKLOADS``) for ``duration_s``; returns the tally and the seconds
    it took."""
    tally, stop = Tally(), threading.Event()
    frames_of, outstanding = WORKLOADS[workload]

    def one(session: int, seq: int, priority: Priority, request: FrameRequest, slots: threading.Semaphore) -> None:
        try:
            frame = engine.render(request, session=f"bench-tab-{session}", priority=priority)
        except Superseded:
            with tally.lock:
                tally.dropped[session] += 1
        except Exception as error:  # counted, reported
            tally.failed.append(repr(error))
        else:
            with tally.lock:
                tally.made[session] += 1
                tally.prompts.add(request.prompt)
                tally.canvases.add(request.control_key)
                tally.replicas.setdefault(session, Counter())[serve_ray.replica_of(frame)] += 1
                if seq > tally.last_shown.get(session, -1):
                    tally.last_shown[session] = seq
                    tally.shown[session] += 1
        finally:
            slots.release()

    def page(session: int, pool: ThreadPoolExecutor) -> None:
        slots, sent = threading.Semaphore(outstanding), 0.0
        for seq, step in enumerate(frames_of(session, engine.size)):
            if step is None:  # a pause: until every frame sent is answered, and the user's moment after
                for _ in range(outstanding):
                    slots.acquire()
                for _ in range(outstanding):
                    slots.release()
                time.sleep(PAUSE_S)
                continue
            priority, request = step
            if priority == Priority.DRAFT:
                time.sleep(max(0.0, sent + PEN_INTERVAL_S - time.monotonic()))
            slots.acquire()
            if stop.is_set():
                return
            sent = time.monotonic()
            pool.submit(one, session, seq, priority, request, slots)

    began = time.monotonic()
    with ThreadPoolExecutor(sessions * outstanding) as pool:
        pages = [threading.Thread(target=page, args=(s, pool), daemon=True) for s in range(sessions)]
        for thread in pages:
            thread.start()
        time.sleep(duration_s)
        stop.set()
        for thread in pages:
            thread.join()
    return tally, time.monotonic() - began


def hit_rate(counts: Counter, kind: str) -> float | None:
    looked = counts[f"{kind}_hit"] + counts[f"{kind}_miss"]
    return counts[f"{kind}_hit"] / looked if looked else None


def measure(engine: serve_ray.RayEngine, sessions: int, duration_s: float, workload: str) -> dict:
    before, batches_before = engine.replica_cache_counts(), engine.batch_sizes
    tally, took = drive(engine, sessions, duration_s, workload)
    after, batches = engine.replica_cache_counts(), engine.batch_sizes
    batches.subtract(batches_before)
    caches: Counter = Counter()
    for replica, counts in after.items():
        caches.update(counts)
        caches.subtract(before.get(replica, {}))
    homes = {s: counts.most_common(1)[0][0] for s, counts in tally.replicas.items()}
    return {
        "seconds": round(took, 1),
        "frames_per_s": round(sum(tally.made.values()) / took, 3),
        "shown_per_s": round(sum(tally.shown.values()) / took, 3),
        "dropped": sum(tally.dropped.values()),
        "mean_batch_rows": round(sum(r * n for r, n in batches.items()) / max(1, sum(batches.values())), 2),
        "failed": len(tally.failed),
        "one_replica_share": {s: round(c.most_common(1)[0][1] / sum(c.values()), 3)
                              for s, c in sorted(tally.replicas.items())},
        "sessions_per_replica": sorted(Counter(homes.values()).values()),
        "prompt_hit_rate": hit_rate(caches, "prompt"),
        "control_hit_rate": hit_rate(caches, "control"),
        "prompt_misses_per_prompt": round(caches["prompt_miss"] / max(1, len(tally.prompts)), 3),
        "control_misses_per_canvas": round(caches["control_miss"] / max(1, len(tally.canvases)), 3),
        "cache_counts": dict(caches),
    }


def summary(runs: list[dict]) -> dict:
    """Per workload and routing: medians over the rounds; per workload, the median over the rounds of each round's
    frames/s ratio, session routing to the default (the two runs of a round are minutes apart: the same load)."""
    out: dict = {}
    for workload in sorted({r["workload"] for r in runs}):
        mine = {routing: sorted((r for r in runs if r["routing"] == routing and r["workload"] == workload),
                                key=lambda r: r["round"]) for routing in ROUTINGS}
        out[workload] = {routing: {key: statistics.median(r[key] for r in rs) for key in
                                   ("frames_per_s", "shown_per_s", "mean_batch_rows", "prompt_hit_rate",
                                    "control_hit_rate", "prompt_misses_per_prompt", "control_misses_per_canvas")}
                         | {"min_one_replica_share": min(min(r["one_replica_share"].values()) for r in rs)}
                         for routing, rs in mine.items()}
        for key in ("frames_per_s", "shown_per_s"):
            out[workload][f"{key}_ratio"] = round(statistics.median(
                a[key] / b[key] for a, b in zip(mine["session"], mine["default"])), 3)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sprint_demo.tools.session_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per workload, routing and round")
    parser.add_argument("--rounds", type=int, default=3, help="each round runs both routings, in turn")
    parser.add_argument("--serve", default="--replicas 2 --model preview",
                        help="serve_ray's flags for the replicas (the UI flags are not used)")
    parser.add_argument("--workloads", default="drawing,steady",
                        help=f"comma-separated, run in this order on each deployment: {', '.join(WORKLOADS)}")
    parser.add_argument("--json", default=None, help="write every run and the summary here")
    args = parser.parse_args(argv)
    args.workloads = args.workloads.split(",")
    if unknown := set(args.workloads) - set(WORKLOADS):
        parser.error(f"unknown workload(s) {sorted(unknown)}; choose from {list(WORKLOADS)}")
    if args.sessions < 1 or args.duration <= 0 or args.rounds < 1:
        parser.error(f"need --sessions >= 1, --duration > 0, --rounds >= 1; got {args.sessions}, "
                     f"{args.duration}, {args.rounds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serve_args = serve_ray.parse_args(shlex.split(args.serve))
    serve_ray.start_local_ray()
    from ray import serve  # after start_local_ray, which must come before Ray is imported
    runs = []
    try:
        for round_ in range(args.rounds):
            for routing, affinity in ROUTINGS.items():
                engine = serve_ray.deploy(serve_args.replicas or 1, engine_options(serve_args),
                                          max_ongoing_requests=serve_args.max_ongoing_requests,
                                          session_affinity=affinity)
                try:
                    for workload in args.workloads:
                        run = {"routing": routing, "workload": workload, "round": round_} | measure(
                            engine, args.sessions, args.duration, workload)
                        print(json.dumps(run), flush=True)
                        runs.append(run)
                finally:
                    engine.close()
                    serve.shutdown()  # a new handle next time: Serve keeps a handle, and its router, per app
    finally:
        serve_ray.shutdown(local=True)
    result = {"runs": runs, "summary": summary(runs), "meta": {"sessions": args.sessions, "serve": args.serve,
                                                               "duration_s": args.duration,
                                                               "workloads": args.workloads}}
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
