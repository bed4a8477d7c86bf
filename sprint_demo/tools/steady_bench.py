"""Figures for steady camera streams (``sprint_demo.steady``), on simulated cameras (``tools.scenes``)::

    python -m sprint_demo.tools.steady_bench thresholds            # thumbnail differences: sensor noise vs motion
    python -m sprint_demo.tools.steady_bench flicker --json f.json # flicker and lag against steadiness (preview)
    python -m sprint_demo.tools.bench --mode camera-steady --users 2 --duration 20   # still/moving, skip on/off

* ``thresholds``: the thumbnail difference (``steady.difference``) of a still scene's frames with sensor noise,
  against a pan of a fraction of a pixel to a few pixels per frame and a small object coming in, and the
  thumbnail's cost: what ``settings.SKIP_ALIKE_LEVELS`` was chosen from.
* ``flicker``: camera frames of a still scene with sensor noise and of a slow pan, made one after another as one
  stream (skipping off, so that every frame is made), at each ``--steadiness``: flicker, the mean absolute
  difference (grey levels) of consecutive output frames; and lag, the frames until a step change of the input shows
  90% of its final change in the output. What ``settings.DEFAULT_STEADINESS`` was chosen from.
* ``camera-steady`` users (``run_camera_users``, through ``bench``): ``--users`` simulated cameras at
  ``CAMERA_FPS`` frames/s, each a page that sends a new frame per new video frame with two in flight, on a still or
  a moving scene, with skipping on and off: frames shown and model frames per user per second, and model-seconds per
  user per minute.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .. import inputs, settings
from ..batcher import Priority, Superseded
from ..engine import Engine, load_engine
from ..steady import difference, thumbnail
from .scenes import NOISE_LEVELS, Camera, through_camera, world

CAMERA_FPS = 15  # the simulated cameras' frame rate (a webcam in an indoor room)
PAN_PX = 2.0  # a moving scene: pixels per frame at the capture size (30 px/s: a slow pan)
STEADINESS = (0.0, 0.25, 0.5, 0.75)
PROMPT = "an oil painting of a quiet room"


def capture_size() -> tuple[int, int]:
    return settings.CAMERA_CAPTURE_SIZE, settings.CAMERA_CAPTURE_SIZE * 3 // 4


def thresholds(frames: int = 60) -> dict:
    """Thumbnail differences against the first frame (levels): still scenes at 1x and 2x the sensor noise, pans,
    small objects at half brightness coming in; and the thumbnail's cost in ms."""
    width, height = capture_size()
    out: dict = {"noise_levels": NOISE_LEVELS, "thumbnail_side": settings.SKIP_THUMBNAIL_SIDE}
    for noise in (NOISE_LEVELS, 2 * NOISE_LEVELS):
        camera = Camera(width, height, noise=noise, seed=1)
        first = thumbnail(camera.frame(0))
        still = [difference(first, thumbnail(camera.frame(i))) for i in range(1, frames)]
        out[f"still_noise_{noise:g}_max"] = max(still)
    for pan in (0.5, 1.0, 2.0):
        camera = Camera(width, height, pan=pan, seed=1, frames=8)
        first = thumbnail(camera.frame(0))
        out[f"pan_{pan:g}px_after_1"] = difference(first, thumbnail(camera.frame(1)))
        out[f"pan_{pan:g}px_after_2"] = difference(first, thumbnail(camera.frame(2)))
    rng, scene = np.random.default_rng(5), world(width, height, 1)
    for side in (16, 32):
        found = []
        for _ in range(20):
            changed = scene.copy()
            x, y = rng.integers(0, width - side), rng.integers(0, height - side)
            changed[y:y + side, x:x + side] *= 0.5
            found.append(difference(thumbnail(through_camera(scene, rng)), thumbnail(through_camera(changed, rng))))
        out[f"object_{side}px_min"] = min(found)
    picture = Camera(width, height, seed=1).frame(0)
    began = time.perf_counter()
    for _ in range(100):
        thumbnail(picture)
    out["thumbnail_ms"] = round((time.perf_counter() - began) * 10, 3)
    return out


def jpeg(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def camera_frame(engine: Engine, picture: Image.Image | bytes, session: str, decoder: str, steadiness: float = 0.0,
                 skip: bool = False, prompt: str = PROMPT):
    """One camera frame as the Camera tab makes it (image mode, the camera's defaults), in ``session``."""
    request = inputs.camera_request(picture, prompt, "image", settings.DEFAULT_CAMERA_STRENGTH, settings.CAMERA_STEPS,
                                    settings.DEFAULT_SEED, settings.DEFAULT_GUIDANCE, 1.0, decoder,
                                    settings.CAMERA_CAPTURE_SIZE, engine.photo_to_control_map, steadiness, skip)
    return engine.render(request, session=session, priority=Priority.DRAFT)


def stream(engine: Engine, camera: Camera, frames: int, decoder: str, steadiness: float, name: str) -> list:
    """The outputs (float arrays) of ``frames`` frames of ``camera`` made one after another as one stream."""
    engine.cancel(name)  # a fresh stream: no previous frame
    return [np.asarray(camera_frame(engine, camera.frame(i), name, decoder, steadiness).image, dtype=np.float32)
            for i in range(frames)]


def flicker_of(outputs: list) -> float:
    return round(float(np.mean([np.abs(b - a).mean() for a, b in zip(outputs, outputs[1:])])), 3)


def lag_of(outputs: list, step_at: int, span: int = 4) -> int:
    """Frames from the step change until the output shows 90% of its final change: each output projected on the
    change from the mean of the ``span`` outputs before the step to the mean of the last ``span`` (means and a
    projection, so that frame-to-frame flicker does not read as change)."""
    before, final = np.mean(outputs[step_at - span:step_at], axis=0), np.mean(outputs[-span:], axis=0)
    change = (final - before).ravel()
    for k in range(step_at, len(outputs)):
        if float(np.dot((outputs[k] - before).ravel(), change)) >= 0.9 * float(np.dot(change, change)):
            return k - step_at + 1
    return len(outputs) - step_at


def flicker(engine: Engine, decoder: str, steadiness: tuple[float, ...] = STEADINESS, frames: int = 24) -> list:
    """Per steadiness: flicker of a still scene with sensor noise and of a slow pan, and the lag of a step change;
    with the inputs' own flicker for scale."""
    width, height = capture_size()
    still, pan = Camera(width, height, seed=3), Camera(width, height, pan=PAN_PX, seed=3, frames=frames)
    runs = []
    for value in steadiness:
        step = Camera(width, height, seed=3, step_at=frames // 3)
        runs.append({"steadiness": value, "decoder": decoder,
                     "still_flicker": flicker_of(stream(engine, still, frames, decoder, value, "camera:still")),
                     "pan_flicker": flicker_of(stream(engine, pan, frames, decoder, value, "camera:pan")),
                     "step_lag_frames": lag_of(stream(engine, step, frames, decoder, value, "camera:step"),
                                               frames // 3)})
        print(json.dumps(runs[-1]), flush=True)
    inputs_still = [np.asarray(still.frame(i), dtype=np.float32) for i in range(frames)]
    runs.append({"inputs_still_flicker": flicker_of(inputs_still)})
    return runs


def run_camera_users(engine: Engine, users: int, moving: bool, skip: bool, duration_s: float, decoder: str) -> dict:
    """``users`` simulated camera pages for ``duration_s`` (after one frame each), each sending a new frame per
    new video frame (``CAMERA_FPS``), two in flight, as its own session: frames shown and made per user and
    second, and the model's seconds per user and minute (each frame's model time over its batch's rows)."""
    width, height = capture_size()
    total_frames = int(duration_s * CAMERA_FPS) + 2 * CAMERA_FPS
    cameras = [Camera(width, height, pan=PAN_PX if moving else 0.0, seed=10 + u, frames=total_frames)
               for u in range(users)]
    # still: a ring of noisy frames (new noise every frame); moving: every frame of the pan, as JPEG bytes
    pictures = [[jpeg(c.frame(i)) for i in range(total_frames if moving else 2 * CAMERA_FPS)] for c in cameras]
    engine.clear_caches()
    sent = [-1] * users
    shown, made, model_s, dropped = [0] * users, [0] * users, [0.0] * users, [0]
    lock, began = threading.Lock(), [0.0]

    def next_index(user: int) -> int:
        """The newest video frame this page has not sent yet (waits for one)."""
        while True:
            with lock:
                index = int((time.perf_counter() - began[0]) * CAMERA_FPS)
                if index > sent[user]:
                    sent[user] = index
                    return index
            time.sleep(1 / CAMERA_FPS / 4)

    def page(user: int, deadline: float) -> None:
        while time.perf_counter() < deadline:
            index = next_index(user)
            try:
                frame = camera_frame(engine, pictures[user][index % len(pictures[user])], f"camera:{user}", decoder,
                                     skip=skip, prompt=f"{PROMPT}, camera {user}")
            except Superseded:
                dropped[0] += 1
                time.sleep(settings.CAMERA_REPLACE_INTERVAL_MS / 1000)
                continue
            with lock:
                shown[user] += 1
                if not (frame.skipped or frame.reused):
                    made[user] += 1
                    model_s[user] += (frame.timings_ms["total"] - frame.timings_ms["input_prep"]) / 1000 / \
                        frame.batch_size

    for user in range(users):  # one frame each first: caches and allocator pools, not counted
        camera_frame(engine, pictures[user][0], f"camera:{user}", decoder, skip=skip)
    began[0] = time.perf_counter()
    deadline = began[0] + duration_s
    threads = [threading.Thread(target=page, args=(u, deadline), daemon=True)
               for u, _ in itertools.product(range(users), range(settings.CAMERA_MAX_IN_FLIGHT))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began[0]
    for user in range(users):
        engine.cancel(f"camera:{user}")
    return {"mode": "camera-steady", "scene": "moving" if moving else "still", "skip": skip, "users": users,
            "decoder": decoder, "duration_s": round(elapsed, 1), "camera_fps": CAMERA_FPS,
            "shown_per_user_s": round(sum(shown) / users / elapsed, 2),
            "model_frames_per_user_s": round(sum(made) / users / elapsed, 2),
            "model_s_per_user_min": round(sum(model_s) / users / elapsed * 60, 2),
            "dropped": dropped[0]}


def camera_users_cases(engine: Engine, users: int, duration_s: float, decoder: str) -> list[dict]:
    """``run_camera_users`` for a still and a moving scene, skipping on and off, in one process."""
    runs = []
    for moving, skip in itertools.product((False, True), (True, False)):
        runs.append(run_camera_users(engine, users, moving, skip, duration_s, decoder))
        print(json.dumps(runs[-1]), flush=True)
    return runs


def format_users(runs: list[dict]) -> str:
    lines = [f"{'scene':>6} {'skip':>5} {'shown/user/s':>12} {'model frames/user/s':>19} {'model s/user/min':>16}"]
    lines += [f"{r['scene']:>6} {str(r['skip']):>5} {r['shown_per_user_s']:>12.2f} "
              f"{r['model_frames_per_user_s']:>19.2f} {r['model_s_per_user_min']:>16.2f}" for r in runs]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("thresholds", "flicker"))
    parser.add_argument("--model", default=settings.PREVIEW_MODEL)
    parser.add_argument("--decoder", default=None,
                        help="comma-separated lanes (default: the camera's, tiny where there is one)")
    parser.add_argument("--steadiness", default=",".join(f"{s:g}" for s in STEADINESS))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.what == "thresholds":
        result: object = thresholds()
    else:
        engine = load_engine(args.model, warmup=False, max_batch_size=1)
        decoders = args.decoder.split(",") if args.decoder else ["tiny" if engine.has_tiny_decoder else "full"]
        values = tuple(float(s) for s in args.steadiness.split(","))
        result = [run for decoder in decoders for run in flicker(engine, decoder, values, args.frames)]
        engine.close()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
