"""Steady streams: a session's unchanged input pictures answered with its last made frame, and the previous output
frame handed to the next request for the steadiness blend. The engine holds one ``Steady`` (``Engine.steady``).

* Unchanged pictures: a request that carries a ``thumbnail`` (camera frames, while skipping is on) is compared with
  the input of its session's last made frame: every field except the picture itself (and what is derived from it:
  its digest, its edge map, the previous frame) must be equal, and the thumbnails alike (``alike``). Then the last
  frame is the answer, with no model work (``Frame.skipped``). A frame is made anyway once the last one is
  ``refresh_s`` old (the first frame past the bound is the refresh; the time counts again from it): a deterministic
  bound (one model frame per ``refresh_s`` per still stream, whatever the page's frame rate), easier to plan for and
  to test than a random skip; a slow drift is caught before that, because the comparison is always with the last
  *made* frame's picture, never the previous skipped one.
* In edges mode the frame's edge map is made (``inputs.camera_request``) before the engine sees the request, so a
  skipped edges frame still costs that job on the model thread; image mode skips everything.
* Sessions are per engine: behind several replicas (``serve_ray``) the session router keeps a stream's frames on
  one replica, so it skips there as on one engine (a stream moved to another replica starts afresh).
* Steadiness: a request with ``steadiness`` > 0 gets its session's last made frame as ``previous_image`` (same size
  only), which the renderer encodes and blends into the start latent.

The idea of skipping near-duplicate camera inputs comes from StreamDiffusion's similarity filter (which skips with a
probability that rises with the inputs' cosine similarity); here the rule is a threshold and a time bound.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from cachetools import LRUCache
from PIL import Image

from . import settings
from .frames import Frame, FrameRequest


def thumbnail(picture: Image.Image, side: int = settings.SKIP_THUMBNAIL_SIDE) -> np.ndarray:
    """``picture`` as a ``side`` x ``side`` grey thumbnail (each pixel the mean of its box: sensor noise averages
    out), float32 grey levels 0-255."""
    return np.asarray(picture.convert("L").resize((side, side), Image.Resampling.BOX), dtype=np.float32)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """How far two thumbnails differ: their largest pixel difference in grey levels (a small change in one place,
    a hand coming in at an edge, counts as much as a change everywhere)."""
    return float(np.abs(a - b).max())


def alike(a: np.ndarray, b: np.ndarray, levels: float = settings.SKIP_ALIKE_LEVELS) -> bool:
    return a.shape == b.shape and difference(a, b) <= levels


def without_picture(request: FrameRequest) -> FrameRequest:
    """``request`` with its picture and everything derived from it left out: what must be equal to skip."""
    return replace(request, init_image=None, init_key=None, control_map=None, control_key=None, thumbnail=None,
                   previous_image=None, previous_key=None, notices=())


def digest(image: Image.Image) -> str:
    return hashlib.blake2b(image.tobytes() + repr((image.size, image.mode)).encode(), digest_size=16).hexdigest()


@dataclass
class Made:
    """A session's last made frame and the request that made it."""

    request: FrameRequest  # without_picture
    thumbnail: np.ndarray | None
    frame: Frame
    frame_key: str  # digest of the frame's picture (previous_key of the next request)
    made_at: float


class Steady:
    """Sessions' last made frames (LRU of ``sessions``); thread-safe. ``counts``: "skipped" answers."""

    def __init__(self, skip_levels: float = settings.SKIP_ALIKE_LEVELS, refresh_s: float = settings.SKIP_REFRESH_S,
                 sessions: int = settings.STEADY_SESSIONS, clock: Callable[[], float] = time.monotonic):
        self.skip_levels, self.refresh_s, self.clock = skip_levels, refresh_s, clock
        self.last: LRUCache[str, Made] = LRUCache(sessions)
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def unchanged(self, session: str, request: FrameRequest, prep_ms: float = 0.0) -> Frame | None:
        """The session's last made frame when ``request`` may be answered with it (see the module), else None."""
        if request.thumbnail is None:
            return None
        with self.lock:
            made = self.last.get(session)
            if (made is None or made.thumbnail is None or made.request != without_picture(request)
                    or not alike(made.thumbnail, request.thumbnail, self.skip_levels)):
                return None
            if (now := self.clock()) - made.made_at >= self.refresh_s:
                made.made_at = now  # this frame is the refresh: the stream's other frame in flight still skips
                return None
            self.counts["skipped"] += 1
        stages = dict.fromkeys((*settings.FRAME_STAGES, "total"), 0.0) | {"input_prep": prep_ms, "total": prep_ms}
        return replace(made.frame, skipped=True, reused=False, timings_ms=stages, batch_size=1)

    def with_previous(self, session: str, request: FrameRequest) -> FrameRequest:
        """``request`` with the session's last made frame as the frame to blend in (steadiness > 0 and same size)."""
        if request.steadiness == 0:
            return request
        with self.lock:
            made = self.last.get(session)
        if made is None or made.frame.image.size != (request.width, request.height):
            return request
        return replace(request, previous_image=made.frame.image, previous_key=made.frame_key)

    def made(self, session: str, request: FrameRequest, frame: Frame) -> None:
        """Remembers ``frame`` as ``session``'s last made frame (only for requests that skip or blend)."""
        if request.thumbnail is None and request.steadiness == 0:
            return
        key = digest(frame.image)
        with self.lock:
            self.last[session] = Made(without_picture(request), request.thumbnail, frame, key, self.clock())

    def forget(self, session: str) -> None:
        """A stopped stream starts afresh."""
        with self.lock:
            self.last.pop(session, None)

    def clear(self) -> None:
        with self.lock:
            self.last.clear()
            self.counts.clear()
