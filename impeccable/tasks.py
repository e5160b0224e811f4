"""The campaign manager's side of the pilot: submit a task with the function that handles its outcome.

Handlers run in the manager's main thread, one at a time, in the order tasks
finish; each task's record is stored as soon as its handler has run. Finished
tasks are handled in bursts: every task waiting when the loop wakes (up to
``GROUP_MAX`` or ``GROUP_S`` seconds' worth), their writes committed as one
group (each handler's writes still all or nothing), then the tasks the
handlers asked for go to the pilot in one hand-off. So the manager's cost per
task does not grow with the campaign, and a kill loses at most one group.
Ctrl-C
(or SIGTERM) never interrupts a handler halfway: it lands while the loop
waits (see :mod:`.events`), and then :meth:`TaskLoop.drain` stops the pilot
and still keeps the results of every task that finished.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from .events import EventQueue, InterruptGuard
from .runtime import Pilot, Task, TaskFuture, TaskState
from .store import Store

Handler = Callable[[TaskFuture], None]
GROUP_MAX = 512  # finished tasks handled in one store transaction at most
GROUP_S = 0.05  # and for at most this long before their results are committed and their follow-ups sent


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
        # the main thread's CPU, for `impeccable bench --workload campaign`: when the first task went out
        # (thread and wall clocks), and the seconds spent in handlers and in storing task records
        self.first_submit: tuple[float, float] | None = None
        self.handler_cpu_s = 0.0
        self.record_cpu_s = 0.0
        self._to_submit: list[tuple[Task, Handler]] = []  # asked for by handlers, handed to the pilot in one go
        self.recorded: set[str] = set()  # uids whose final record is stored

    def submit(self, task: Task, handler: Handler) -> None:
        """Queue a task; it goes to the pilot at the end of this burst of handlers (:meth:`flush`)."""
        if self.draining:
            return  # the run is stopping: the next session starts this task
        self._to_submit.append((task, handler))
        self.outstanding += 1

    def flush(self) -> None:
        """Hand every queued task to the pilot at once."""
        if not self._to_submit:
            return
        if self.first_submit is None:
            self.first_submit = (time.thread_time(), time.perf_counter())
        batch, self._to_submit = self._to_submit, []
        put = self.events.put
        with self.guard.deferred():  # a submitted task always reaches its handler, even on Ctrl-C
            futures = self.pilot.submit_many([task for task, _ in batch])
            for future, (_, handler) in zip(futures, batch):
                future.add_done_callback(lambda f, h=handler: put((f, h)))

    def run(self) -> None:
        """Handle finished tasks until none is outstanding."""
        try:
            self.flush()
            while self.outstanding:
                if not self._handle_burst():
                    self.events.wait()  # Ctrl-C lands here, before an event is taken, or after one is handled
        finally:
            self.store.commit_group()  # what handlers completed is kept, whatever ends the loop

    def _handle_burst(self) -> bool:
        """Handle the finished tasks that were waiting when it began (up to GROUP_MAX, for up to GROUP_S)
        as one group: what they ask for is not held back by tasks finishing meanwhile. False if none."""
        waiting = min(len(self.events), GROUP_MAX)
        if not waiting:
            return False
        deadline = time.perf_counter() + GROUP_S
        self.store.group()
        for _ in range(waiting):
            self._handle(*self.events.pop())
            if time.perf_counter() > deadline:
                break
        self.store.commit_group()
        self.flush()
        return True

    def _handle(self, future: TaskFuture, handler: Handler) -> None:
        self.outstanding -= 1
        with self.guard.deferred():
            t0 = time.thread_time()
            try:
                handler(future)
            finally:
                t1 = time.thread_time()
                self.store.add_task_records(self.session, [future.record])
                self.recorded.add(future.record.uid)
                self.handler_cpu_s += t1 - t0
                self.record_cpu_s += time.thread_time() - t1

    def drain(self) -> None:
        """After Ctrl-C: stop the pilot, then hand every task's outcome to its handler: a finished task's
        results are kept, and so is what a canceled one finished before it was stopped (a docking task's
        complete lines); nothing new starts (:meth:`submit` is off)."""
        self.draining = True
        self._to_submit.clear()
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
