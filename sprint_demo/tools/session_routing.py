"""Session affinity on Ray Serve: ``SessionRouter``, the request router of ``serve_ray``'s deployment, and
``SessionCalls``, which lets ``RayEngine`` stop a session's calls that Serve has not handed to a replica yet.

Serve picks a replica for every handle call through the deployment's request router (``RequestRouter``, set in
the deployment's ``RequestRouterConfig``: an alpha API of Ray Serve 2.60; its default is power of two choices).
``SessionRouter`` keeps each engine session (a browser tab, a camera stream) on one replica, its *home*, so that
the engine there keeps ordering, replacing and stopping the session's frames and its caches serve them:

* a call with a ``session`` keyword argument (``EngineReplica.render`` and ``cancel``) goes to its session's home
  while that replica lives. A session seen for the first time, or whose home has gone (its process died, Serve
  replaced it), gets the live replica that holds the fewest sessions, so new sessions spread evenly and a dead
  replica's sessions are shared out over the others;
* when the home is full (``max_ongoing_requests`` calls on it) the call waits for it, as a call waits for a full
  deployment under the default router. The home counts as overloaded only when another replica holds at least
  ``MOVE_GAP`` fewer sessions and the session has no call on its home: then the call may go to that replica (Serve
  takes the least busy with room) and the session moves there for good. Sessions so move off a crowded replica
  (a replacement replica starts empty) one at a time, between two of their frames, and never back and forth;
* ``cancel`` goes to the home and never moves a session; a session the router does not know has nothing on any
  replica (its cancel goes wherever power of two choices sends it, harmlessly);
* calls without a session (page load, Playground, API, the replicas' own facts): power of two choices, as Serve's
  default router does.

The choice of a router over model multiplexing (``serve.multiplexed``): multiplexing would load a "model" per
session id in each replica's LRU and report every replica's ids through Serve's controller to the routers; a
router that has not heard yet, or whose matching replica is busy, sends the id to the replica with the fewest ids
after one try, which splits sessions over replicas under ordinary load, and thousands of sessions would travel
through the controller. The router here decides in the handle's own process, from what it routed itself.

Sessions not seen for ``IDLE_S`` are forgotten (a forgotten session coming back is a new one); at most
``MAX_SESSIONS`` are remembered, the least recently seen forgotten first.

``SessionHomes`` is the policy without Ray (tested on its own); ``SessionRouter`` hands it Serve's replicas. Serve
pickles this module by value into the process that routes (the Gradio process, where the handle lives): it imports
nothing from ``sprint_demo``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

R = TypeVar("R", bound=Hashable)  # a replica's id (Serve's ReplicaID; strings in the tests)

SESSION_ARGUMENT = "session"  # the keyword argument of a handle call that names its session
MOVE_GAP = 2  # a session leaves its full home only for a replica with at least this many fewer sessions
IDLE_S = 300.0  # a session not seen for this long is forgotten
MAX_SESSIONS = 100_000  # sessions remembered at most (a few hundred bytes each)


def session_of(pending: PendingRequest | None) -> str | None:
    """The session a call belongs to (its ``session`` keyword argument), or None."""
    if pending is None:
        return None
    session = (pending.kwargs or {}).get(SESSION_ARGUMENT)
    return session if isinstance(session, str) else None


class SessionHomes(Generic[R]):
    """Which replica holds each session, how many sessions each replica holds, and which calls of a session are on
    a replica now. Not thread-safe: Serve calls its router from one event loop."""

    def __init__(self, move_gap: int = MOVE_GAP, idle_s: float = IDLE_S, max_sessions: int = MAX_SESSIONS,
                 clock=time.monotonic) -> None:
        self.move_gap = move_gap
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._homes: OrderedDict[str, tuple[R, float]] = OrderedDict()  # session -> (home, last seen); oldest first
        self._held: Counter[R] = Counter()  # replica -> sessions it is home to
        self._calls: dict[Hashable, tuple[str, R]] = {}  # call id -> (session, replica) while on a replica
        self._busy: Counter[tuple[str, R]] = Counter()  # (session, replica) -> its calls on that replica now

    def home(self, session: str, live: Sequence[R]) -> R:
        """The replica ``session``'s calls go to: its home while that is among ``live``, else (a new session, or
        its home has gone) the live replica holding the fewest sessions, which becomes its home."""
        self._forget_idle()
        home = self.home_of(session, live)
        if home is None:
            fewest = min(self._held[r] for r in live)
            home = random.choice([r for r in live if self._held[r] == fewest])
            self._set(session, home)
        else:
            self._homes[session] = (home, self._clock())
            self._homes.move_to_end(session)
        return home

    def home_of(self, session: str, live: Sequence[R]) -> R | None:
        """``session``'s home if it has one among ``live`` (nothing is assigned or refreshed)."""
        entry = self._homes.get(session)
        return entry[0] if entry is not None and entry[0] in live else None

    def move_targets(self, session: str, live: Sequence[R]) -> list[R]:
        """Where ``session`` may go when its home is full: none while a call of it is on its home (the engine
        there holds its frames); else the live replicas holding at least ``move_gap`` fewer sessions."""
        home = self.home_of(session, live)
        if home is None or self._busy[session, home]:
            return []
        return [r for r in live if r != home and self._held[r] <= self._held[home] - self.move_gap]

    def routed(self, session: str, replica: R, call: Hashable, moves: bool = True) -> None:
        """A call of ``session`` was taken by ``replica``; when that is not its home and ``moves``, the session
        moves there (``move_targets`` offered it)."""
        self._calls[call] = (session, replica)
        self._busy[session, replica] += 1
        entry = self._homes.get(session)
        if moves and entry is not None and entry[0] != replica:
            self._set(session, replica)

    def completed(self, replica: R, call: Hashable) -> None:
        """A call has finished (answered, failed or cancelled)."""
        entry = self._calls.get(call)
        if entry is None or entry[1] != replica:
            return
        del self._calls[call]
        self._busy[entry] -= 1
        if self._busy[entry] <= 0:
            del self._busy[entry]

    def keep_only(self, live: Sequence[R]) -> None:
        """Forgets the homes and calls on replicas not in ``live`` (they died or were replaced): their sessions get
        new homes on their next call."""
        alive = set(live)
        for session in [s for s, (home, _) in self._homes.items() if home not in alive]:
            self._drop(session)
        for call in [c for c, (_, replica) in self._calls.items() if replica not in alive]:
            self.completed(self._calls[call][1], call)
        for replica in [r for r in self._held if r not in alive]:
            del self._held[replica]

    def sessions_per_replica(self) -> Counter[R]:
        return +self._held

    def _set(self, session: str, home: R) -> None:
        self._drop(session)
        self._homes[session] = (home, self._clock())
        self._held[home] += 1

    def _drop(self, session: str) -> None:
        entry = self._homes.pop(session, None)
        if entry is not None:
            self._held[entry[0]] -= 1

    def _forget_idle(self) -> None:
        limit = self._clock() - self.idle_s
        while self._homes:
            session, (_, seen) = next(iter(self._homes.items()))
            if seen >= limit and len(self._homes) < self.max_sessions:
                return
            self._drop(session)


class SessionRouter(RequestRouter):
    """Serve's request router for ``EngineReplica``: session calls to their home, the rest by power of two
    choices (see the module docstring). Serve makes one per handle process and calls it from one event loop."""

    def initialize_state(self, move_gap: int = MOVE_GAP, idle_s: float = IDLE_S,
                         max_sessions: int = MAX_SESSIONS) -> None:
        self.homes: SessionHomes[ReplicaID] = SessionHomes(move_gap, idle_s, max_sessions)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """Ranks of replicas, best first: Serve sends the call to the least busy replica with room in the first
        rank that has one, and tries again (after a back-off) when none has."""
        session = session_of(pending_request)
        live = [replica.replica_id for replica in candidate_replicas]
        if pending_request is not None:  # Serve waits (backs off) between tries only when asked to
            pending_request.routing_context.should_backoff = True
        if session is None or not live:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        if pending_request.metadata.call_method == "cancel":
            home = self.homes.home_of(session, live)
            if home is None:  # no replica holds it
                return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
            return [[self._replicas[home]]]
        home = self.homes.home(session, live)
        ranks = [[self._replicas[home]]]
        if targets := self.homes.move_targets(session, live):
            ranks.append([self._replicas[r] for r in targets])
        return ranks

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        session = session_of(pending_request)
        if session is not None:
            self.homes.routed(session, replica_id, pending_request.metadata.internal_request_id,
                              moves=pending_request.metadata.call_method != "cancel")

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self.homes.completed(replica_id, internal_request_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self.homes.keep_only([replica.replica_id for replica in replicas])

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.homes.keep_only(list(self._replicas))


class SessionCalls:
    """The calls of each session that wait for an answer (``DeploymentResponse``s), so that a Stop or a final can
    cancel them through Serve: a call still waiting in Serve's router for its full home never reaches a replica; one
    already on the replica is answered as cancelled at once, and the engine's own cancel there (the Stop's, or the
    final's when it reaches the engine) stops its work. Thread-safe."""

    def __init__(self) -> None:
        self._calls: dict[str, dict[Any, bool]] = {}  # session -> {response: it is a draft}
        self._lock = threading.Lock()

    def add(self, session: str | None, response: Any, draft: bool) -> None:
        if session is not None:
            with self._lock:
                self._calls.setdefault(session, {})[response] = draft

    def remove(self, session: str | None, response: Any) -> None:
        if session is not None:
            with self._lock:
                calls = self._calls.get(session, {})
                calls.pop(response, None)
                if not calls:
                    self._calls.pop(session, None)

    def cancel(self, session: str, drafts_only: bool = False, keep: Any = None) -> int:
        """Cancels ``session``'s waiting calls (only its drafts with ``drafts_only``; never ``keep``); returns how
        many."""
        with self._lock:
            calls = [r for r, draft in self._calls.get(session, {}).items() if r is not keep and
                     (draft or not drafts_only)]
        for response in calls:
            response.cancel()
        return len(calls)
