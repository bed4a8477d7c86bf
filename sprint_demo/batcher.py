"""The engine's one model thread and the order in which it takes work: ``Batcher``.

Every piece of model work of an engine runs on one long-lived thread (``Batcher.thread``): frames, in batches of
up to ``max_batch_size`` rows, and other jobs (warm-up, a photo's HED edge map) through ``call``. One thread
because torch keeps per-thread state that matters here: compiled with CUDA graphs, the graph trees recorded at
warm-up belong to the thread that recorded them; and one thread's allocations stay in one malloc arena.

What the thread takes next, when it is free:

* **sessions** (a browser tab, a camera stream; ``None``: a caller without one) have at most one frame waiting:
  a newer frame of the same session takes the waiting one's place, and the older caller gets ``Superseded`` at
  once; but a draft never takes a waiting final's place: it is refused (``Superseded``) instead, since its
  request may have been overtaken on the way by the final the page asked for after it, and the final is the
  frame the user keeps. A final frame also stops its session's draft in flight (``Ticket.cancelled``; the engine
  stops a batch whose frames are all cancelled between stages and denoising steps and, when not compiled, before
  each transformer block and decoder layer);
* **priority**: waiting finals (the frame a user keeps) go before waiting drafts (frames while a pen moves, camera
  frames); within a priority, **round-robin** over sessions: the session served longest ago goes first;
* **batches**: the first frame in that order and others of the same ``key`` (size, steps, image-to-image strength,
  autoencoder lane: one latent shape and schedule) in the same order, up to ``max_batch_size``. When company can be
  expected (a batch of more than one frame in the last ``company_memory_s``), the thread waits up to ``window_s``
  after the first frame arrived for the batch to fill; a lone user's frame goes at once;
* at most ``max_waiting`` sessions wait at once (each waiting caller holds a server thread); a frame of one more
  session raises ``EngineBusy`` at once instead of queueing. Callers that something else bounds already (Gradio's
  queue) pass ``Ticket.refusable=False``: they neither count nor are refused.

``inline=True`` (ZeroGPU, where each frame runs in a process the platform forks for it, with the GPU, and no
thread of the main process can reach that GPU) has no thread: each caller runs its own frame, one at a time.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Superseded(Exception):
    """A newer frame of the same session took this frame's place (waiting), or stopped it (a draft in flight)."""


class EngineBusy(RuntimeError):
    """Too many sessions wait for the engine already: the frame was refused, not queued."""


class Priority(enum.IntEnum):
    FINAL = 0  # a frame a user keeps: pen lifted, inputs settled, an API call
    DRAFT = 1  # a frame shown for a moment: the pen moving, a camera stream


@dataclass(eq=False)
class Ticket(Generic[T]):
    """One caller's frame (``payload``) on its way through the batcher; ``result`` or ``error`` is set once."""

    payload: T
    key: Hashable
    session: str | None = None
    priority: Priority = Priority.FINAL
    arrived: float = field(default_factory=time.perf_counter)
    refusable: bool = True  # counts toward, and is refused beyond, Batcher.max_waiting
    cancelled: bool = False  # superseded while in flight: its batch may stop early
    result: Any = None
    error: BaseException | None = None
    done: bool = False

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(eq=False)
class _Job:
    fn: Callable[[], Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = False


class Batcher:
    """Runs ``run_batch(tickets)`` (which sets each ticket's result or error) and jobs on one thread; see the module
    docstring for the order. Thread-safe; ``close`` ends the thread."""

    def __init__(self, run_batch: Callable[[list[Ticket]], None], *, max_batch_size: int, window_s: float,
                 max_waiting: int, company_memory_s: float, name: str = "engine", inline: bool = False):
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self.max_waiting = max_waiting
        self.company_memory_s = company_memory_s
        self.expect_full_batches = False  # True: always wait the window for a full batch (tests' deterministic mode)
        self._cond = threading.Condition()
        self._waiting: list[Ticket] = []  # oldest first
        self._jobs: list[_Job] = []
        self._running: list[Ticket] = []
        self._served: dict[str | None, int] = {}  # session -> when it was last served (a counter, for round-robin)
        self._turns = itertools.count(1)
        self._shared_batch_at = -float("inf")  # when the last batch of more than one frame was gathered
        self._closed = False
        self._inline_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        if not inline:
            self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
            self.thread.start()

    # --- callers ------------------------------------------------------------------------------------------------

    def submit(self, ticket: Ticket) -> Any:
        """Queue ``ticket`` and wait for its outcome: the result, or the error that stopped it (``Superseded``,
        ``EngineBusy``, a model fault). From the engine thread itself (warm-up) the batch runs at once, inline."""
        if self.thread is None:
            with self._inline_lock:
                self._run_batch([ticket])
            return ticket.outcome()
        if threading.current_thread() is self.thread:
            self._run_batch([ticket])
            return ticket.outcome()
        with self._cond:
            self._check_open()
            if ticket.session is not None:
                self._supersede(ticket)
            self._waiting.append(ticket)
            self._cond.notify_all()
            while not ticket.done:
                self._cond.wait()
        return ticket.outcome()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the engine thread, before any batch that is not yet running; its result or its error."""
        if threading.current_thread() is self.thread:
            return fn()
        if self.thread is None:
            with self._inline_lock:
                return fn()
        job = _Job(fn)
        with self._cond:
            self._check_open()
            self._jobs.append(job)
            self._cond.notify_all()
            while not job.done:
                self._cond.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def cancel(self, session: str) -> None:
        """The session has gone (a stopped camera): its waiting frame is dropped and its frame in flight is
        cancelled (its batch stops at the next stop point once all of its frames are)."""
        with self._cond:
            for ticket in [t for t in self._waiting if t.session == session]:
                self._finish(ticket, error=Superseded(f"session {session} stopped"))
            for ticket in self._running:
                if ticket.session == session:
                    ticket.cancelled = True
            self._cond.notify_all()

    def close(self) -> None:
        """Ends the thread after its current work; callers still waiting get a RuntimeError."""
        with self._cond:
            self._closed = True
            for ticket in self._waiting:
                self._finish(ticket, error=RuntimeError("the engine was closed"))
            for job in self._jobs:
                job.error, job.done = RuntimeError("the engine was closed"), True
            self._jobs.clear()
            self._cond.notify_all()
        if self.thread is not None and threading.current_thread() is not self.thread:
            self.thread.join(timeout=30)

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def expects_company(self, now: float) -> bool:
        """Whether a batch of more than one frame was gathered in the ``company_memory_s`` before ``now``
        (``time.perf_counter()``): if not, a lone user is being served and a batch does not wait for others."""
        return now - self._shared_batch_at <= self.company_memory_s

    # --- the thread ---------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the engine was closed")

    def _supersede(self, ticket: Ticket) -> None:
        """(Lock held.) ``ticket`` replaces its session's waiting frame (a draft does not replace a final: it is
        refused); as a final, it stops its session's draft in flight. A session beyond ``max_waiting`` is refused."""
        older = [t for t in self._waiting if t.session == ticket.session]
        if ticket.priority == Priority.DRAFT and any(t.priority == Priority.FINAL for t in older):
            raise Superseded(f"session {ticket.session}'s final frame is waiting")
        sessions = {t.session for t in self._waiting if t.session is not None and t.refusable}
        if ticket.refusable and not older and len(sessions) >= self.max_waiting:  # refused: nothing else changes
            raise EngineBusy(f"{len(sessions)} sessions are waiting for the engine")
        for old in older:
            self._finish(old, error=Superseded(f"a newer frame of session {ticket.session} replaced it"))
        if ticket.priority == Priority.FINAL:
            for running in self._running:
                if running.session == ticket.session and running.priority == Priority.DRAFT:
                    running.cancelled = True

    def _finish(self, ticket: Ticket, result: Any = None, error: BaseException | None = None) -> None:
        """(Lock held.) Hands a waiting ticket its outcome and takes it out of line."""
        ticket.result, ticket.error, ticket.done = result, error, True
        self._waiting.remove(ticket)

    def _order(self, tickets: list[Ticket]) -> list[Ticket]:
        """Finals first; then the session served longest ago (never served: first); then arrival."""
        return sorted(tickets, key=lambda t: (t.priority, self._served.get(t.session, 0), t.arrived))

    def _gather(self) -> list[Ticket]:
        """(Lock held, something waiting.) The next batch, taken out of line."""
        lead = self._order(self._waiting)[0]
        now = time.perf_counter()
        company = self.expect_full_batches or self.expects_company(now)
        wanted = self.max_batch_size if company else 1
        deadline = lead.arrived + self.window_s

        def same() -> list[Ticket]:
            return self._order([t for t in self._waiting if t.key == lead.key])[: self.max_batch_size]

        while (len(same()) < wanted and (left := deadline - time.perf_counter()) > 0 and lead in self._waiting
               and not self._jobs and not self._closed):
            self._cond.wait(left)
        batch = same() if lead in self._waiting else []
        for ticket in batch:
            self._waiting.remove(ticket)
            self._served[ticket.session] = next(self._turns)
        if len(batch) > 1:
            self._shared_batch_at = now
        if len(self._served) > 4 * self.max_waiting + 64:  # forget sessions long gone
            for session in sorted(self._served, key=self._served.get)[: len(self._served) // 2]:
                del self._served[session]
        return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._jobs or self._closed):
                    self._cond.wait()
                if self._closed:
                    return
                job = self._jobs.pop(0) if self._jobs else None
                batch = [] if job else self._gather()
                self._running = batch
            if job is not None:
                try:
                    job.result = job.fn()
                except BaseException as error:  # noqa: BLE001 - handed to the caller
                    job.error = error
                with self._cond:
                    job.done = True
                    self._cond.notify_all()
                continue
            if batch:
                self._run(batch)

    def _run(self, batch: list[Ticket]) -> None:
        try:
            self._run_batch(batch)
        except BaseException as error:  # noqa: BLE001 - run_batch should set errors itself; never lose a caller
            for ticket in batch:
                if ticket.result is None and ticket.error is None:
                    ticket.error = error
        finally:
            with self._cond:
                for ticket in batch:
                    ticket.done = True
                self._running = []
                self._cond.notify_all()
