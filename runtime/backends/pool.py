"""Function calls on persistent workers: placement, pipelining, results, deaths, timeouts and cancel.

One :class:`FunctionPool` serves both the local backend (a worker is a
process at the end of a pipe) and the Dragon backend (a worker is a
Dragon-managed process behind the runtime's socket). What differs is only how
bytes reach a worker and how a worker is killed: the :class:`WorkerTransport`.

Placement. A one-core call takes an idle worker and leases it one core slot;
when no core is free, it is queued behind the calls of the least-loaded leased
worker, up to ``depth`` calls, where ``depth`` is how many calls of the running
average length fill ``pipeline_s``. A worker is topped up only once it has run
down to half of that, so that one message carries many calls instead of one
call per result. Calls run one at a time in a worker, so the records never
show more busy cores than there are slots. Multi-core and GPU calls lease a
worker exclusively. An idle worker holds no slot.

Wire format (both transports): a batch is the pickled list of
``(token, "module:qualname", args, kwargs, env)``; a result is the pickled
``(token, ok, payload, started, finished)`` of ``runtime/worker.py``.
"""

from __future__ import annotations

import collections
import pickle
import time
from typing import Any, Protocol

from ..errors import BackendBroken
from ..slots import cuda_visible_devices
from .base import Submission, exit_description
from .loop import Dispatcher


class PoolWorker:
    """A persistent worker as the pool sees it: the slots it leases and the calls queued in it, in order."""

    __slots__ = (
        "outstanding",
        "cores",
        "gpus",
        "exclusive",
        "outbox",
        "kill_reason",
        "kill_target",
        "alive",
        "handle",
        "node",
    )

    def __init__(self, handle: Any, node: int = 0) -> None:
        self.handle = handle  # the transport's own: a process and its pipe, or a Dragon worker id
        self.node = node  # the node it runs on: it leases only that node's slots
        self.outstanding: collections.deque[tuple[int, Submission]] = collections.deque()
        self.cores: tuple[int, ...] = ()
        self.gpus: tuple[int, ...] = ()
        self.exclusive = False  # leased for a multi-core or GPU call: nothing is pipelined behind it
        self.outbox: list[tuple] = []  # calls to send at the end of this loop turn
        self.kill_reason = ""
        self.kill_target: Submission | None = None
        self.alive = True


class WorkerTransport(Protocol):
    """How bytes reach workers. Results and deaths come back through the pool's ``on_*`` methods."""

    def send(self, worker: PoolWorker, batch: bytes) -> None:
        """Hand a pickled batch of calls to the worker without blocking the dispatcher."""

    def kill(self, worker: PoolWorker) -> None:
        """Kill the worker (timeout, cancel); its death is reported through ``on_worker_died``."""

    def abort(self, busy: list[PoolWorker]) -> None:
        """Shutdown with cancel: the busy workers' calls are canceled; stop them without waiting."""

    def can_grow(self) -> bool:
        """Whether :meth:`grow` would start a worker."""

    def grow(self, node: int) -> PoolWorker | None:
        """A new worker on ``node`` when the pool may grow, else None."""

    def after_events(self) -> None: ...

    def on_drained(self) -> None: ...

    def teardown(self) -> None: ...


class Pipelining:
    """How many calls a busy worker may hold (see the module docstring): as many as fill ``pipeline_s``
    at the running average call length, at least ``1 + queue_ahead``, at most ``max_pipeline``."""

    def __init__(self, pipeline_s: float, max_pipeline: int, queue_ahead: int = 0) -> None:
        self.pipeline_s = pipeline_s
        self.max_pipeline = max_pipeline
        # calls kept queued behind the running one even when calls are long: its next call starts the
        # moment the current one ends, whatever the round trip to the worker costs (Dragon)
        self.min_depth = 1 + queue_ahead
        self.depth = self.min_depth
        self.runtime_ewma_s = 0.0

    def takes_more(self, w: PoolWorker) -> bool:
        """Whether a busy worker may be sent another call now; topped up only once half run down."""
        if not w.cores or w.exclusive or not w.alive or w.kill_reason:
            return False
        queued = len(w.outstanding)
        return queued < self.depth and (queued <= self.depth // 2 or bool(w.outbox))

    def finished(self, started: float, finished: float) -> None:
        """Update the running average call length, and with it the depth."""
        runtime = finished - started
        self.runtime_ewma_s = runtime if not self.runtime_ewma_s else 0.8 * self.runtime_ewma_s + 0.2 * runtime
        self.depth = max(self.min_depth, min(self.max_pipeline, int(self.pipeline_s / max(self.runtime_ewma_s, 1e-6))))


class FunctionPool:
    """Function tasks on persistent workers (a :class:`~.loop.Runner`)."""

    def __init__(
        self, host: Dispatcher, transport: WorkerTransport, pipeline_s: float, max_pipeline: int, queue_ahead: int = 0
    ) -> None:
        self.host, self.transport = host, transport
        self.pipeline = Pipelining(pipeline_s, max_pipeline, queue_ahead)
        self.workers: list[PoolWorker] = []
        self.idle: list[PoolWorker] = []
        self.tokens: dict[int, PoolWorker] = {}
        self._next_token = 0
        self._sent: list[PoolWorker] = []

    # ------------------------------------------------------------ workers
    def add_worker(self, worker: PoolWorker) -> None:
        self.workers.append(worker)
        self.idle.append(worker)

    def _lease(self, n_cores: int, n_gpus: int) -> PoolWorker | None:
        """Slots and an idle worker on their node (started if the pool may grow). Whenever a worker could
        take the call, the broker is asked, with no "is there room?" check: a refusal is a claim."""
        grow = self.transport.can_grow()
        if not (self.idle or grow):
            return None  # every worker is leased: one of them finishing is this runtime's own event
        nodes = None if grow else {w.node for w in self.idle}
        taken = self.host.slots.take(n_cores, n_gpus, nodes)
        if taken is None:
            return None
        node = self.host.slots.broker.node_of_core(taken[0][0])
        worker = next((w for w in reversed(self.idle) if w.node == node), None)
        if worker is not None:
            self.idle.remove(worker)
        else:
            worker = self.transport.grow(node)
            if worker is None:
                self.host.slots.give_back(*taken)
                return None
            self.workers.append(worker)
        worker.cores, worker.gpus = taken
        return worker

    # ------------------------------------------------------------ placement (Runner)
    def place(self, sub: Submission) -> bool:
        task = sub.task
        if task.cores_per_rank == 1 and task.gpus == 0:
            worker = self._lease(1, 0)
            if worker is not None:
                worker.exclusive = False
            else:
                busy = (w for w in self.workers if self.pipeline.takes_more(w))
                worker = min(busy, key=lambda w: len(w.outstanding), default=None)
                if worker is None:
                    return False
        else:
            worker = self._lease(task.cores, task.gpus)
            if worker is None:
                return False
            worker.exclusive = True
        now, hosts = time.time(), self.host.slots.broker.allocation.hosts(worker.cores)
        if not sub.begin(worker.cores, worker.gpus, when=now, node=hosts):
            if not worker.outstanding:
                self._idle(worker)
            return True
        self._enqueue(worker, sub, now)
        return True

    def can_use_slots(self) -> bool:
        return bool(self.idle) or self.transport.can_grow()

    def has_room(self) -> bool:
        if self.host.slots.free_cores and (self.idle or self.transport.can_grow()):
            return True
        return any(self.pipeline.takes_more(w) for w in self.workers)

    def _enqueue(self, worker: PoolWorker, sub: Submission, now: float) -> None:
        task = sub.task
        token = self._next_token
        self._next_token += 1
        visible = cuda_visible_devices(worker.gpus, self.host.slots.broker.gpus_per_node)
        env = {"CUDA_VISIBLE_DEVICES": visible} if visible else None
        worker.outstanding.append((token, sub))
        self.tokens[token] = worker
        worker.outbox.append((token, task.function, task.args, dict(task.kwargs) if task.kwargs else {}, env))
        if len(worker.outbox) == 1:
            self._sent.append(worker)
        if len(worker.outstanding) == 1:
            self._head_started(worker, now)

    def flush(self) -> None:
        for worker in self._sent:
            if worker.alive and worker.outbox:
                try:
                    batch: bytes | None = pickle.dumps(worker.outbox, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001 - some arguments cannot be pickled
                    batch = self._picklable_part(worker)
                if batch is not None:
                    self.transport.send(worker, batch)
            worker.outbox = []
        self._sent.clear()

    def _picklable_part(self, worker: PoolWorker) -> bytes | None:
        """Fail the calls whose arguments cannot be pickled (no retry can cure that); the batch of the others."""
        good, bad = _split_picklable(worker.outbox)
        for token, exc in bad:
            entry = next(e for e in worker.outstanding if e[0] == token)
            worker.outstanding.remove(entry)
            self.tokens.pop(token, None)
            entry[1].fail(f"arguments cannot be sent to a worker: {type(exc).__name__}: {exc}", final=True)
        if not worker.outstanding:
            self._idle(worker)
            self.host.wake()  # the slot is free again: the next task must not wait for another event
        elif good and worker.outstanding[0][0] == good[0][0]:
            self._head_started(worker, time.time())
        return pickle.dumps(good, protocol=pickle.HIGHEST_PROTOCOL) if good else None

    # ------------------------------------------------------------ results and deaths (from the transport)
    def on_result(self, worker: PoolWorker, data: bytes | memoryview, token: int | None = None) -> None:
        """One pickled result from ``worker``; ``token`` when the transport knows it without unpickling."""
        try:
            token, ok, payload, started, finished = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - e.g. a result class the pilot cannot import
            if token is None:  # results arrive in call order: it is the oldest call's
                token = worker.outstanding[0][0] if worker.outstanding else -1
            ok, started, finished = False, time.time(), time.time()
            payload = (None, f"result cannot be unpickled in the pilot: {type(exc).__name__}: {exc}", None)
        if self.tokens.get(token) is not worker or worker.outstanding[0][0] != token:
            return  # a worker already declared dead, or a call canceled at shutdown that ran anyway
        del self.tokens[token]
        _, sub = worker.outstanding.popleft()
        sub.started(started)
        self.pipeline.finished(started, finished)
        if ok:
            sub.complete(payload, when=finished)
        else:
            exception, text, trace = payload
            if sub.fail(text, when=finished, traceback=trace, exception=exception):
                self.host.requeue(sub)
        if worker.outstanding:
            self._head_started(worker, finished)
        else:
            self._idle(worker)

    def on_worker_died(self, worker: PoolWorker, running: int | None = None, exit_code: int | None = None) -> None:
        """Fail the call it was running (``running``: its token; None: the oldest); requeue the others.

        Calls queued behind it, and calls before it whose results died with it, go back to the
        queue without spending a retry.
        """
        if not worker.alive:
            return
        worker.alive = False
        self.workers.remove(worker)
        if worker in self.idle:
            self.idle.remove(worker)
        entries = list(worker.outstanding)
        for token, _ in entries:
            self.tokens.pop(token, None)
        worker.outstanding.clear()
        self._release(worker)
        culprit = _culprit(entries, running, worker.kill_target, worker.kill_reason)
        rest = [sub for _, sub in entries if sub is not culprit]
        for sub in rest:
            sub.record.attempts -= 1
        for sub in reversed(rest):
            self.host.requeue(sub, front=True)
        if culprit is None:
            return
        if worker.kill_reason == "canceled":
            culprit.cancel("canceled while running (worker killed)")
        elif culprit.fail(worker.kill_reason or f"worker process died ({exit_description(exit_code)})"):
            self.host.requeue(culprit)

    # ------------------------------------------------------------ timeouts, cancel, failure
    def _head_started(self, worker: PoolWorker, when: float) -> None:
        """The worker's oldest call now has the worker's slots: a call pipelined behind another got
        them only when that one finished, which is when its record says it was scheduled."""
        sub = worker.outstanding[0][1]
        record = sub.record
        if record.scheduled is not None and when > record.scheduled:
            record.scheduled = when
        if sub.task.timeout_s:
            self.host.arm(when + sub.task.timeout_s, lambda: self._timed_out(worker, sub))

    def _timed_out(self, worker: PoolWorker, sub: Submission) -> None:
        if worker.alive and worker.outstanding and worker.outstanding[0][1] is sub and worker.kill_target is None:
            self._kill(worker, sub, f"timed out after {sub.task.timeout_s:g} s (worker killed and replaced)")

    def _kill(self, worker: PoolWorker, sub: Submission, reason: str) -> None:
        worker.kill_reason = reason
        worker.kill_target = sub
        self.transport.kill(worker)

    def cancel(self, uid: str) -> bool:
        for worker in self.workers:
            if not worker.outstanding:
                continue
            head = worker.outstanding[0][1]
            if head.task.uid == uid:
                if worker.kill_target is None:
                    self._kill(worker, head, "canceled")
                return True
            if any(sub.task.uid == uid for _, sub in worker.outstanding):
                return True  # queued behind another call in a worker: handed over, it will run
        return False

    def cancel_everything(self) -> None:
        busy = [w for w in self.workers if w.outstanding]
        for worker in busy:
            for token, sub in worker.outstanding:
                self.tokens.pop(token, None)
                sub.cancel("canceled at shutdown")
            worker.outstanding.clear()
            self._release(worker)
        self.transport.abort(busy)

    def abandon(self, reason: str) -> None:
        for worker in self.workers:
            for _, sub in worker.outstanding:
                if not sub.future.done():
                    sub.fail(reason, final=True, exception=BackendBroken(reason))
            worker.outstanding.clear()
            worker.alive = False
            self._release(worker)
        self.tokens.clear()
        self.workers.clear()
        self.idle.clear()

    def drained(self) -> bool:
        return not any(w.outstanding for w in self.workers)

    def after_events(self) -> None:
        self.transport.after_events()

    def on_drained(self) -> None:
        self.transport.on_drained()

    def teardown(self) -> None:
        self.transport.teardown()

    # ------------------------------------------------------------ slots and pipelining
    def _idle(self, worker: PoolWorker) -> None:
        self._release(worker)
        worker.exclusive = False
        if worker.alive and not worker.kill_reason:  # a worker being killed takes no new call
            self.idle.append(worker)

    def _release(self, worker: PoolWorker) -> None:
        self.host.slots.give_back(worker.cores, worker.gpus)
        worker.cores, worker.gpus = (), ()


def _culprit(
    entries: list[tuple[int, Submission]], running: int | None, kill_target: Submission | None, kill_reason: str
) -> Submission | None:
    """Which of a dead worker's calls its death is charged to: the one it was running (the oldest when
    the transport cannot tell), unless we killed it for another call. Then the call we meant to kill had
    just finished (its result died with the worker): a canceled one stays canceled, a timed-out one runs
    again; nobody else is to blame."""
    if running is None and entries:
        running = entries[0][0]
    culprit = next((sub for token, sub in entries if token == running), None)
    if kill_target is not None and kill_target is not culprit:
        still_ours = any(sub is kill_target for _, sub in entries)
        culprit = kill_target if kill_reason == "canceled" and still_ours else None
    return culprit


def _split_picklable(calls: list[tuple]) -> tuple[list[tuple], list[tuple[int, Exception]]]:
    """The calls that pickle, and (token, error) of those that do not."""
    good, bad = [], []
    for call in calls:
        try:
            pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - PicklingError, TypeError, AttributeError ...
            bad.append((call[0], exc))
        else:
            good.append(call)
    return good, bad
