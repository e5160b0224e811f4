"""The pilot: acquire an allocation once, lend its cores to whichever runtime has work, run many tasks.

Routing is configuration: a mapping from task kind to backend name. Callers
submit tasks and get futures back; they never learn which backend ran what.

    with Pilot(Allocation(cores=16), routes={"executable": "flux", "function": "dragon"}) as pilot:
        futures = pilot.submit_many(tasks)
        ...
    metrics = summarize(pilot.records, cores=16)
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .backends import backend_class, is_available
from .backends.base import Backend, Submission, TaskFuture
from .backends.options import parse_options
from .errors import BackendUnavailable, TaskError
from .node_watch import DEFAULT_INTERVAL_S, NodeEvent, NodeWatch
from .nodes import host_index
from .records import TaskRecord, TaskState
from .resources import Allocation, split_allocation
from .slots import SlotBroker, SlotView
from .stall import DEFAULT_AFTER_S, StallEvent, StallWatch
from .task import Task, TaskKind

DEFAULT_ROUTES: dict[str, str] = {"executable": "local", "function": "local"}
AUTO_CHOICES: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.EXECUTABLE: ("flux", "local"),
    TaskKind.FUNCTION: ("dragon", "local"),
}


def resolve_routes(routes: Mapping[str, str] | None) -> dict[TaskKind, str]:
    """Kind -> backend name; ``auto`` picks the first available of Flux/Dragon, else local."""
    resolved: dict[TaskKind, str] = {}
    for kind_name, backend_name in (routes or DEFAULT_ROUTES).items():
        try:
            kind = TaskKind(kind_name)
        except ValueError:
            raise ValueError(f"unknown task kind {kind_name!r} in routes: use 'executable' or 'function'") from None
        if backend_name == "auto":
            backend_name = next(n for n in AUTO_CHOICES[kind] if is_available(n)[0])
        resolved[kind] = backend_name
    return resolved


class Pilot:
    """Holds one allocation and routes each task to the backend configured for its kind.

    Every backend sees the whole allocation and takes slots from one pool as its tasks need them
    (:mod:`.slots`): a core idle in one runtime is lent to another that has work. ``shares``
    (backend name -> weight, equal by default) only decide who goes first when several runtimes
    wait for slots at once; ``exclusive=True`` fences instead, giving each backend a fixed slice of
    the cores in proportion to its weight, for sites that require it. ``options`` passes settings
    to each backend by name, e.g. ``{"local": {"function_workers": 4}}``. A stall watchdog
    (:mod:`.stall`) reports, in :attr:`stalls` and through ``on_stall``, any runtime left with work
    that fits free slots while nothing happens for ``stall_after_s`` seconds (None: no watchdog).
    On the nodes of a real Slurm allocation a node watch (:mod:`.node_watch`, every ``node_watch_s``
    seconds) takes a lost node out of the pool; :attr:`node_events` and ``on_node_lost`` say so.
    """

    def __init__(
        self,
        allocation: Allocation | int,
        routes: Mapping[str, str] | None = None,
        shares: Mapping[str, int] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        exclusive: bool = False,
        stall_after_s: float | None = DEFAULT_AFTER_S,
        on_stall: Callable[[StallEvent], None] | None = None,
        node_watch_s: float | None = DEFAULT_INTERVAL_S,
    ) -> None:
        self.allocation = allocation if isinstance(allocation, Allocation) else Allocation(cores=allocation)
        self.routes = resolve_routes(routes)
        for name, given in (options or {}).items():
            parse_options(name, given)  # a misspelt backend or option is refused, whether routed or not
        self.exclusive = exclusive
        names = list(dict.fromkeys(self.routes.values()))
        weights = {name: int((shares or {}).get(name, 1)) for name in names}
        unknown = set(shares or {}) - set(names)
        if unknown:
            raise ValueError(f"shares name backends the routes do not use: {', '.join(sorted(unknown))}")
        self.slots = self._lend(weights)
        self.backends: dict[str, Backend] = {}
        for name in names:
            cls = backend_class(name)
            ok, why = cls.available()
            if not ok:
                raise BackendUnavailable(f"backend {name!r} is not available here: {why}")
            backend = cls(self.slots[name], **dict((options or {}).get(name, {})))
            backend.serves = frozenset(kind for kind, routed in self.routes.items() if routed == name)
            backend.on_node_failure = self._node_lost
            self.backends[name] = backend
        self.records: list[TaskRecord] = []
        self._brokers = list({id(v.broker): v.broker for v in self.slots.values()}.values())
        self.on_stall = on_stall  # may be set later (a campaign sets it once its session is known)
        self._watch = (
            StallWatch(self._brokers, stall_after_s, self._stalled, self._has_pending) if stall_after_s else None
        )
        self.node_events: list[NodeEvent] = []
        self.on_node_lost: Callable[[NodeEvent], None] | None = None  # a campaign records them in its run
        self._lost_nodes: set[str] = set()
        self._node_lock = threading.Lock()
        self._node_watch = (
            NodeWatch(self.allocation.nodes, self._node_lost, node_watch_s)
            if node_watch_s and self.allocation.real_nodes and self.allocation.manager == "slurm"
            else None
        )
        self._started = False
        self._closed = False

    def _lend(self, weights: dict[str, int]) -> dict[str, SlotView]:
        """One pool for all (weights for contention only), or fenced slices (``exclusive``)."""
        if not self.exclusive:
            broker = SlotBroker(self.allocation)
            return {name: broker.view(name, weight, self._reach(name)) for name, weight in weights.items()}
        shares = split_allocation(self.allocation, weights)
        return {
            name: SlotBroker(self.allocation, shares[name].cores, shares[name].gpus).view(name, 1.0, self._reach(name))
            for name in weights
        }

    def _reach(self, name: str) -> tuple[int, ...] | None:
        """The nodes backend ``name`` may use: all of them, unless the nodes are real hosts and it starts
        processes on this host only; then this host's node, and none if the pilot runs elsewhere (a login node)."""
        if not self.allocation.real_nodes or backend_class(name).spans_nodes:
            return None
        here = host_index(self.allocation.nodes)
        if here is None:
            raise BackendUnavailable(
                f"backend {name!r} runs tasks on this host only, and this host ({socket.gethostname()}) is not one "
                f"of the allocation's nodes ({', '.join(self.allocation.nodes)}): run the pilot on one of them (a "
                "batch script does), or route its tasks to srun, flux or dragon, which start them on every node"
            )
        return (here,)

    # lifecycle ---------------------------------------------------------------
    def start(self) -> Pilot:
        """Start every backend side by side (Dragon's runtime takes seconds to come up, Flux's too)."""
        if self._started:
            return self
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_start, args=(b, errors), name=f"start-{b.name}", daemon=True)
            for b in self.backends.values()
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException as exc:  # Ctrl-C while runtimes come up: let them finish starting, then stop them
            for thread in threads:
                thread.join()
            errors.insert(0, exc)
        if errors:
            for backend in self.backends.values():
                backend.shutdown(cancel_pending=True)
            raise errors[0]
        self._started = True
        if self._watch is not None:
            self._watch.start()
        if self._node_watch is not None:
            self._node_watch.start()
        return self

    def _node_lost(self, node: str, state: str) -> None:
        """A node of the allocation is gone: no slot of it is lent again, and the backends hear of it. Once per
        node, whoever saw it first: the node watch (Slurm says down) or a backend (srun's node failure)."""
        with self._node_lock:
            if node in self._lost_nodes:
                return
            self._lost_nodes.add(node)
            if self._node_watch is not None:
                self._node_watch.lost.add(node)
        index = self.allocation.nodes.index(node)
        event = NodeEvent(node, state, time.time())
        self.node_events.append(event)
        for broker in self._brokers:
            broker.mark_down(index)
        for backend in self.backends.values():
            backend.node_lost(index, f"node {node} lost (Slurm: {state}); run again on another node")
        if self.on_node_lost is not None:
            self.on_node_lost(event)

    def _stalled(self, event: StallEvent) -> None:
        if self.on_stall is not None:
            self.on_stall(event)

    def _has_pending(self) -> bool:
        """Some task has not started (the watchdog asks only after seconds without activity)."""
        return any(r.state is TaskState.PENDING for r in list(self.records))

    @property
    def stalls(self) -> list[StallEvent]:
        """What the stall watchdog found (empty when all is well, or when it is off)."""
        return list(self._watch.events) if self._watch is not None else []

    @property
    def stuck(self) -> bool:
        """A runtime has work that fits free slots and nothing can wake it (see :mod:`.stall`)."""
        return self._watch is not None and self._watch.stuck

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Wait for (or cancel) every task, then stop every backend. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for backend in self.backends.values():
            try:
                backend.shutdown(cancel_pending=cancel_pending or not wait)
            except BaseException as exc:  # stop the others all the same
                errors.append(exc)
        if self._watch is not None:
            self._watch.stop()
        if self._node_watch is not None:
            self._node_watch.stop()
        if errors:
            raise errors[0]

    def __enter__(self) -> Pilot:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # on an exception (Ctrl-C included) do not wait for queued work: cancel it
        self.shutdown(cancel_pending=exc_type is not None)

    # submission --------------------------------------------------------------
    def backend_for(self, task: Task) -> Backend:
        try:
            return self.backends[self.routes[task.kind]]
        except KeyError:
            raise TaskError(f"task {task.label}: this pilot has no backend for {task.kind.value} tasks") from None

    def submit(self, task: Task) -> TaskFuture:
        """Validate and queue one task; returns at once."""
        return self.submit_many([task])[0]

    def submit_many(self, tasks: Iterable[Task]) -> list[TaskFuture]:
        """Validate all, then queue all (one hand-off per backend); returns at once.

        A task that can never run raises TaskError before anything is queued.
        """
        if not self._started:
            self.start()
        if self._closed:
            raise RuntimeError("the pilot is shut down")
        now = time.time()
        batches: dict[str, list[Submission]] = {}
        futures: list[TaskFuture] = []
        planned: list[tuple[Backend, Submission]] = []
        for task in tasks:
            backend = self.backend_for(task)
            backend.check(task)
            record = task.new_record(now, backend.name)
            future = TaskFuture(task, record)
            planned.append((backend, Submission(task, record, future)))
            futures.append(future)
        for backend, submission in planned:
            batches.setdefault(backend.name, []).append(submission)
            self.records.append(submission.record)
        for broker in self._brokers:
            broker.note_activity()
        for name, submissions in batches.items():
            self.backends[name].submit(submissions)
        return futures

    def cancel(self, future: TaskFuture) -> None:
        """Cancel a queued or running task (running executables are killed)."""
        self.backends[future.record.backend].cancel(Submission(future.task, future.record, future))

    # convenience -------------------------------------------------------------
    def run(self, tasks: Sequence[Task], timeout: float | None = None) -> list[TaskRecord]:
        """Submit all, wait for all; returns their records (in the tasks' order)."""
        futures = self.submit_many(tasks)
        concurrent.futures.wait(futures, timeout=timeout)
        return [f.record for f in futures]


def _start(backend: Backend, errors: list[BaseException]) -> None:
    try:
        backend.start()
    except BaseException as exc:  # noqa: BLE001 - re-raised by Pilot.start in the caller's thread
        errors.append(exc)
