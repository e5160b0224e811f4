"""The campaign manager's side of the pilot: submit a task with the function that handles its outcome.

Handlers run in the manager's main thread, one at a time, in the order tasks
finish; each task's record is stored as soon as its handler has run. Ctrl-C
(or SIGTERM) never interrupts a handler halfway: it lands while the loop
waits (see :mod:`.events`), and then :meth:`TaskLoop.drain` stops the pilot
and still keeps the results of every task that finished.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .events import EventQueue, InterruptGuard
from .runtime import Pilot, Task, TaskFuture, TaskState
from .store import Store

Handler = Callable[[TaskFuture], None]


class TaskLoop:
    """Tasks in flight for one session, and the loop that hands each finished one to its handler."""

    def __init__(self, pilot: Pilot, store: Store, session: int, guard: InterruptGuard) -> None:
        self.pilot = pilot
        self.store = store
        self.session = session
        self.guard = guard
        self.events = EventQueue()  # (future, handler) of finished tasks, from the backends' threads
        self.outstanding = 0
        self.draining = False  # after Ctrl-C: results are kept, nothing new is started
        self.failed: list[str] = []  # "stage name: reason" of every task that ended FAILED

    def submit(self, task: Task, handler: Handler) -> None:
        if self.draining:
            return  # the run is stopping: the next session starts this task
        with self.guard.deferred():  # a submitted task always reaches its handler, even on Ctrl-C
            future = self.pilot.submit(task)
            self.outstanding += 1
            future.add_done_callback(lambda f: self.events.put((f, handler)))

    def run(self) -> None:
        """Handle finished tasks until none is outstanding."""
        while self.outstanding:
            item = self.events.pop()
            if item is None:
                self.events.wait()  # Ctrl-C lands here, before an event is taken, or after one is handled
                continue
            future, handler = item
            self.outstanding -= 1
            with self.guard.deferred():
                try:
                    handler(future)
                finally:
                    self.store.add_task_records(self.session, [future.record])

    def drain(self) -> None:
        """After Ctrl-C: stop the pilot, then hand every task's outcome to its handler: a finished task's
        results are kept, and so is what a canceled one finished before it was stopped (a docking task's
        complete lines); nothing new starts (:meth:`submit` is off)."""
        self.draining = True
        self.pilot.shutdown(cancel_pending=True)  # every future is final now: its event is queued
        while (item := self.events.pop()) is not None:
            future, handler = item
            self.outstanding -= 1
            try:
                handler(future)
            except Exception as exc:  # noqa: BLE001 - keep draining the others
                print(f"warning: could not keep the result of {future.record.name}: {exc}", file=sys.stderr)
            finally:
                self.store.add_task_records(self.session, [future.record])

    def failed_task(self, future: TaskFuture, stage: str) -> bool:
        """True (and noted, with a warning) if the task did not end DONE; a canceled one is redone on resume."""
        record = future.record
        if record.state is TaskState.DONE:
            return False
        if record.state is TaskState.FAILED:
            self.failed.append(f"{stage} {record.name}: {record.error}")
            print(f"warning: {stage} task {record.name} failed: {record.error}", file=sys.stderr)
        return True

    def close(self) -> None:
        self.events.close()
