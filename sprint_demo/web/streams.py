"""Camera streams the server knows of: when each started (its time limit) and up to which frame it was stopped.

The engine already keeps one waiting frame per session and stops a cancelled one; what it cannot know is that a
frame arriving now belongs to a stream the user stopped a moment ago (two POSTs from the page may overtake each
other) or to one that has run past its time limit. ``Streams.admit`` answers that for every camera frame.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_STREAMS = 4096  # streams remembered; the oldest are forgotten first (a forgotten one simply starts afresh)


@dataclass
class _Stream:
    started: float | None  # time.monotonic() of its first frame since the last Stop (None: none yet)
    stopped_seq: int = -1  # frames numbered up to this one were sent before Stop: not made


class Streams:
    """Per-session bookkeeping of camera streams; thread-safe. ``limit_s``: how long a stream may run before the
    user must press Start again (so one visitor cannot hold a shared GPU)."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, session: str, seq: int) -> str | None:
        """Whether frame ``seq`` of ``session`` is to be made: None (yes), "stopped" (it was sent before the stream's
        Stop) or "expired" (the stream has run ``limit_s``)."""
        now = time.monotonic()
        with self._lock:
            stream = self._streams.get(session)
            if stream is None:
                stream = self._streams[session] = _Stream(started=now)
                while len(self._streams) > MAX_STREAMS:
                    self._streams.popitem(last=False)
            self._streams.move_to_end(session)
            if seq <= stream.stopped_seq:
                return "stopped"
            if stream.started is None:  # the first frame after a Stop: a new time limit
                stream.started = now
            if now - stream.started > self.limit_s:
                return "expired"
            return None

    def stop(self, session: str, seq: int) -> None:
        """The page stopped the stream after sending frame ``seq``: later-arriving frames up to it are not made, and
        the next Start begins a new time limit."""
        with self._lock:
            stream = self._streams.setdefault(session, _Stream(started=None))
            stream.stopped_seq = max(stream.stopped_seq, seq)
            stream.started = None
