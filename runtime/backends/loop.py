"""The skeleton of a backend whose whole state lives in one dispatcher thread.

Callers (the pilot, any thread) only append to an inbox and write an eventfd;
the dispatcher thread sleeps in ``epoll`` on that eventfd and on whatever its
backend watches (child pidfds, worker pipes, a runtime's socket), and its
only timer is the nearest deadline. So no lock guards scheduling state, and
nothing polls or sleeps. The local and Dragon backends share this skeleton,
and the policy for pipelining calls into persistent workers (:class:`CallPipelining`).
"""

from __future__ import annotations

import abc
import collections
import heapq
import itertools
import os
import selectors
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..resources import ResourceShare, SlotPool
from .base import Backend, Submission


class ThreadedBackend(Backend):
    """The caller-facing half: submit, cancel and shutdown post messages to the dispatcher."""

    def __init__(self, share: ResourceShare, **options: Any) -> None:
        super().__init__(share, **options)
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._closed = False

    def _run_dispatcher(self, loop: "Dispatcher") -> None:
        self._thread = threading.Thread(target=loop.run, name=f"impeccable-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, submissions: Sequence[Submission]) -> None:
        self._post("submit", submissions)

    def cancel(self, submission: Submission) -> None:
        self._post("cancel", submission.task.uid)

    def shutdown(self, cancel_pending: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._thread is not None:
                self._post("stop", cancel_pending)
                self._thread.join()
        finally:
            self._after_stop()
            os.close(self._wake_fd)

    def _after_stop(self) -> None:
        """Release what outlives the dispatcher thread (e.g. an external runtime)."""

    def _post(self, what: str, payload: Any) -> None:
        if self._closed and what != "stop":
            raise RuntimeError(f"the {self.name} backend is shut down")
        if self._thread is None:
            raise RuntimeError(f"the {self.name} backend is not started")
        self._inbox.append((what, payload))
        os.eventfd_write(self._wake_fd, 1)


class Dispatcher(abc.ABC):
    """The dispatcher-thread half: the pending queue, the slots, deadlines and the event loop."""

    def __init__(self, backend: ThreadedBackend) -> None:
        self.backend = backend
        self.cores = SlotPool(backend.share.cores)
        self.gpus = SlotPool(backend.share.gpus)
        self.pending: collections.deque[Submission] = collections.deque()
        self.deadlines: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self.selector = selectors.EpollSelector()
        self.selector.register(backend._wake_fd, selectors.EVENT_READ, self._on_wake)
        self.stopping = False

    def run(self) -> None:
        select = self.selector.select
        try:
            while True:
                for key, _ in select(self._timeout()):
                    key.data(key.fileobj)
                if self.deadlines:
                    self._expire(time.time())
                self._after_events()
                self._schedule()
                self._flush()
                if self.stopping and self._drained():
                    break
            self._on_drained()
        except BaseException as exc:
            # a bug here must not leave callers waiting forever on futures
            self._abandon(f"{self.backend.name} backend dispatcher crashed: {type(exc).__name__}: {exc}")
            raise
        finally:
            self._teardown()

    def _timeout(self) -> float | None:
        if not self.deadlines:
            return None
        return max(0.0, self.deadlines[0][0] - time.time())

    def _on_wake(self, fd: int) -> None:
        os.eventfd_read(fd)
        inbox = self.backend._inbox
        while inbox:
            what, payload = inbox.popleft()
            if what == "submit":
                self.pending.extend(payload)
            elif what == "cancel":
                self._cancel(payload)
            elif what == "stop":
                self._on_stop(bool(payload))

    def _on_stop(self, cancel_pending: bool) -> None:
        self.stopping = True
        if cancel_pending:
            self._cancel_everything()

    def _arm(self, when: float, what: str, target: Any) -> None:
        heapq.heappush(self.deadlines, (when, next(self._seq), what, target))

    def _expire(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, what, target = heapq.heappop(self.deadlines)
            self._deadline(what, target, now)

    def _come_round_again(self) -> None:
        """Slots were freed outside an event (e.g. while flushing): schedule once more before sleeping."""
        os.eventfd_write(self.backend._wake_fd, 1)

    def _take_slots(self, n_cores: int, n_gpus: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Core and GPU slots for one task, both or neither."""
        cores = self.cores.take(n_cores)
        if cores is None:
            return None
        gpus = self.gpus.take(n_gpus)
        if gpus is None:
            self.cores.give_back(cores)
            return None
        return cores, gpus

    def _cancel_pending(self, uid: str) -> bool:
        """Cancel a task still in the queue; False if it is not there."""
        for sub in self.pending:
            if sub.task.uid == uid:
                self.pending.remove(sub)
                sub.cancel("canceled before it started")
                return True
        return False

    # hooks ----------------------------------------------------------------
    def _after_events(self) -> None:
        """Called once per loop turn after events and deadlines, before scheduling."""

    def _on_drained(self) -> None:
        """Called once after a stop request found nothing left to run."""

    def _teardown(self) -> None:
        self.selector.close()

    @abc.abstractmethod
    def _schedule(self) -> None: ...

    @abc.abstractmethod
    def _flush(self) -> None: ...

    @abc.abstractmethod
    def _drained(self) -> bool: ...

    @abc.abstractmethod
    def _deadline(self, what: str, target: Any, now: float) -> None: ...

    @abc.abstractmethod
    def _cancel(self, uid: str) -> None: ...

    @abc.abstractmethod
    def _cancel_everything(self) -> None: ...

    @abc.abstractmethod
    def _abandon(self, reason: str) -> None:
        """Fail every task not yet final with ``reason`` (no retry): the dispatcher cannot go on."""


class LeasedWorker:
    """A persistent worker as a dispatcher sees it: the slots it leases and the calls queued in it."""

    __slots__ = ("outstanding", "cores", "gpus", "exclusive", "outbox", "kill_reason", "alive")

    def __init__(self) -> None:
        self.outstanding: collections.deque[Any] = collections.deque()
        self.cores: tuple[int, ...] = ()
        self.gpus: tuple[int, ...] = ()
        self.exclusive = False  # leased for a multi-core or GPU call: nothing is pipelined behind it
        self.outbox: list[tuple] = []  # calls to send at the end of this loop turn
        self.kill_reason = ""
        self.alive = True


class CallPipelining:
    """How function calls go to persistent workers, for a :class:`Dispatcher` with workers.

    A one-core call takes an idle worker and leases it one core slot; when no
    core is free, it is queued behind the calls of the least-loaded leased
    worker, up to ``depth`` calls, where ``depth`` is how many calls of the
    running average length fill ``pipeline_s``. A worker is topped up only
    once it has run down to half of that, so that one message carries many
    calls instead of one call per result. Calls run one at a time in a
    worker, so the records never show more busy cores than the share has.
    Multi-core and GPU calls lease a worker exclusively.
    """

    cores: SlotPool
    gpus: SlotPool
    _take_slots: Any  # Dispatcher._take_slots
    idle_workers: list[Any]
    depth: int = 1
    runtime_ewma_s: float = 0.0

    # provided by the dispatcher
    def _all_workers(self) -> Iterable[Any]:
        raise NotImplementedError

    def _get_idle_worker(self) -> Any | None:
        """An idle worker (started now if the pool may grow), or None."""
        raise NotImplementedError

    def _could_get_worker(self) -> bool:
        raise NotImplementedError

    def _enqueue_call(self, worker: Any, sub: Submission, now: float) -> None:
        """Queue the call in the worker's outbox (sent at the end of the loop turn)."""
        raise NotImplementedError

    def _pipeline_limits(self) -> tuple[float, int]:
        """``(pipeline_s, max_pipeline)`` from the backend's options."""
        raise NotImplementedError

    def _place_call(self, sub: Submission) -> bool:
        task = sub.task
        if task.cores_per_rank == 1 and task.gpus == 0:
            worker = self._get_idle_worker() if self.cores.free else None
            if worker is not None:
                worker.cores = self.cores.take(1)
                worker.exclusive = False
            else:
                worker = min((w for w in self._all_workers() if self._takes_more(w)),
                             key=lambda w: len(w.outstanding), default=None)
                if worker is None:
                    return False
        else:
            if not self._could_get_worker():
                return False
            slots = self._take_slots(task.cores, task.gpus)
            if slots is None:
                return False
            worker = self._get_idle_worker()
            (worker.cores, worker.gpus), worker.exclusive = slots, True
        now = time.time()
        if not sub.begin(worker.cores, worker.gpus, when=now):
            if not worker.outstanding:
                self._idle(worker)
            return True
        self._enqueue_call(worker, sub, now)
        return True

    def _worker_room(self) -> bool:
        return any(self._takes_more(w) for w in self._all_workers())

    def _takes_more(self, w: Any) -> bool:
        """Whether a busy worker may be sent another call now (see the class docstring)."""
        if not w.cores or w.exclusive or not w.alive:
            return False
        queued = len(w.outstanding)
        return queued < self.depth and (queued <= self.depth // 2 or bool(w.outbox))

    def _call_finished(self, started: float, finished: float) -> None:
        """Update the running average call length, and with it the pipeline depth."""
        runtime = finished - started
        self.runtime_ewma_s = runtime if not self.runtime_ewma_s else 0.8 * self.runtime_ewma_s + 0.2 * runtime
        pipeline_s, max_pipeline = self._pipeline_limits()
        self.depth = max(1, min(max_pipeline, int(pipeline_s / max(self.runtime_ewma_s, 1e-6))))

    def _idle(self, worker: Any) -> None:
        self._release_worker(worker)
        worker.exclusive = False
        if worker.alive:
            self.idle_workers.append(worker)

    def _release_worker(self, worker: Any) -> None:
        self.cores.give_back(worker.cores)
        self.gpus.give_back(worker.gpus)
        worker.cores, worker.gpus = (), ()
