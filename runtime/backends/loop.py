"""The skeleton of a backend whose whole state lives in one dispatcher thread.

Data flow (one backend)::

    caller threads                 dispatcher thread
    submit/cancel/shutdown --> inbox + eventfd --> epoll loop --> pending queue --> runners
                                                      ^                              |
                     child exits, worker pipes, ------+---- results, deaths ---------+
                     a runtime's socket, deadlines

Callers (the pilot, any thread) only append to an inbox and write an eventfd;
the dispatcher thread sleeps in ``epoll`` on that eventfd and on whatever its
runners watch (child pidfds, worker pipes, a runtime's socket); its only timer
is the nearest deadline. So no lock guards scheduling state, and nothing
polls or sleeps. Each turn of the loop reads as its steps: handle events,
expire deadlines, schedule pending tasks on free slots, flush what the
runners queued.

A *runner* is one way of running tasks on the dispatcher's slots: child
processes through a launcher (:mod:`.processes`), or calls into persistent
workers (:mod:`.pool`). The local backend has both, srun only the first,
Dragon only the second.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import selectors
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import BackendBroken
from ..slots import SlotView
from ..task import TaskKind
from .admission import admit
from .base import Backend, Submission


class Runner(Protocol):
    """What a dispatcher asks of a way of running tasks. All methods run in the dispatcher thread."""

    def place(self, sub: Submission) -> bool:
        """Take slots for ``sub`` and start or queue it; False when it cannot be placed now."""

    def has_room(self) -> bool:
        """Whether a one-core task could be placed now (lets the scheduler stop scanning early)."""

    def can_use_slots(self) -> bool:
        """Whether it could start a task now if slots were free (no cap of its own reached)."""

    def flush(self) -> None:
        """End of a loop turn: send whatever was queued during it."""

    def cancel(self, uid: str) -> bool:
        """Cancel a task this runner holds; False if it holds none with this uid."""

    def cancel_everything(self) -> None:
        """Shutdown with cancel: every task it holds ends CANCELED."""

    def abandon(self, reason: str) -> None:
        """The dispatcher cannot go on: fail every task it holds with ``reason``, no retry."""

    def drained(self) -> bool:
        """Nothing running or queued here."""

    def after_events(self) -> None:
        """Once per loop turn, after events and deadlines."""

    def on_drained(self) -> None:
        """Once, after a stop request found nothing left to run."""

    def teardown(self) -> None:
        """Release processes and descriptors (the dispatcher thread is ending)."""


class ThreadedBackend(Backend):
    """The caller-facing half: submit, cancel and shutdown post messages to the dispatcher."""

    def __init__(self, slots: SlotView, **options: Any) -> None:
        super().__init__(slots, **options)
        self._inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._closed = False

    def _run_dispatcher(self, loop: Dispatcher) -> None:
        self._thread = threading.Thread(target=loop.run, name=f"impeccable-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, submissions: Sequence[Submission]) -> None:
        self._post("submit", submissions)

    def cancel(self, submission: Submission) -> None:
        self._post("cancel", submission.task.uid)

    def node_lost(self, node: int, reason: str) -> None:
        if self._thread is not None and not self._closed:
            self._post("node_lost", (node, reason))

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


class Dispatcher:
    """The dispatcher-thread half: the pending queue, the slots, deadlines, the event loop and the runners."""

    def __init__(self, backend: ThreadedBackend) -> None:
        self.backend = backend
        self.slots = backend.slots
        self.slots.wake = self.wake  # slots freed by another runtime while we wait: schedule again
        self.runners: dict[TaskKind, Runner] = {}
        self._distinct_runners: list[Runner] = []
        self.pending: collections.deque[Submission] = collections.deque()
        self.deadlines: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.selector = selectors.EpollSelector()
        self.selector.register(backend._wake_fd, selectors.EVENT_READ, self._on_wake)
        self.stopping = False

    def serve(self, kinds: Sequence[TaskKind], runner: Runner) -> None:
        for kind in kinds:
            self.runners[kind] = runner
        self._distinct_runners = list({id(r): r for r in self.runners.values()}.values())

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        select = self.selector.select
        runners = self._distinct_runners
        try:
            while True:
                for key, _ in select(self._timeout()):
                    key.data(key.fileobj)
                self.end_turn()
                if self.stopping and not self.pending and all(r.drained() for r in runners):
                    break
            for runner in runners:
                runner.on_drained()
        except BaseException as exc:
            # a bug here must not leave callers waiting forever on futures
            self.abandon(f"{self.backend.name} backend dispatcher crashed: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.slots.wake = None
            self.slots.schedule_pass_ends(0)  # no claim on slots once stopped
            for runner in runners:
                runner.teardown()
            self.selector.close()

    def end_turn(self) -> None:
        """After a round of events: expire deadlines, schedule pending tasks on free slots, send what
        the runners queued. Every turn schedules, so a runtime's own events never need a wake-up."""
        if self.deadlines:
            self._expire(time.time())
        runners = self._distinct_runners
        for runner in runners:
            runner.after_events()
        self._schedule()
        for runner in runners:
            runner.flush()

    def _schedule(self) -> None:
        """Place pending tasks in order; one that does not fit yet lets smaller ones behind it go (backfill)."""
        runners = self.runners
        distinct = self._distinct_runners
        admit(
            self.pending,
            lambda sub: runners[sub.task.kind].place(sub),
            self.slots,
            lambda: any(r.has_room() for r in distinct),
            lambda sub: runners[sub.task.kind].can_use_slots(),
        )

    def _on_wake(self, fd: int) -> None:
        os.eventfd_read(fd)
        inbox = self.backend._inbox
        while inbox:
            what, payload = inbox.popleft()
            if what == "submit":
                self.pending.extend(payload)
            elif what == "cancel":
                self._cancel(payload)
            elif what == "node_lost":  # a runner that can ends what ran there and runs it again elsewhere; a
                for runner in self._distinct_runners:  # function pool's workers die with the node, which requeues
                    if hasattr(runner, "node_lost"):
                        runner.node_lost(*payload)
            elif what == "stop":
                self.stopping = True
                if payload:  # cancel_pending
                    while self.pending:
                        self.pending.popleft().cancel("canceled at shutdown")
                    for runner in self._distinct_runners:
                        runner.cancel_everything()

    def _cancel(self, uid: str) -> None:
        for sub in self.pending:
            if sub.task.uid == uid:
                self.pending.remove(sub)
                sub.cancel("canceled before it started")
                return
        for runner in self._distinct_runners:
            if runner.cancel(uid):
                return

    def abandon(self, reason: str) -> None:
        """Fail every task not yet final, without retry: the dispatcher cannot go on."""
        for sub in self.pending:
            if not sub.future.done():
                sub.fail(reason, final=True, exception=BackendBroken(reason))
        self.pending.clear()
        for runner in self._distinct_runners:
            runner.abandon(reason)

    # ------------------------------------------------------------ services for runners
    def arm(self, when: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` in this thread at ``when`` (wall-clock seconds)."""
        heapq.heappush(self.deadlines, (when, next(self._seq), callback))

    def requeue(self, sub: Submission, front: bool = False) -> None:
        """A task goes back to the queue (a retry, or a call whose worker died before it ran)."""
        if front:
            self.pending.appendleft(sub)
        else:
            self.pending.append(sub)

    def wake(self) -> None:
        """Slots were freed outside an event (e.g. while flushing): schedule once more before sleeping."""
        os.eventfd_write(self.backend._wake_fd, 1)

    # ------------------------------------------------------------ deadlines
    def _timeout(self) -> float | None:
        if not self.deadlines:
            return None
        return max(0.0, self.deadlines[0][0] - time.time())

    def _expire(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, callback = heapq.heappop(self.deadlines)
            callback()
