"""A deterministic simulation of the pilot's runtimes sharing one slot pool: no processes, no threads.

The real admission code runs here: the slot broker and its views, the local
dispatcher's turn (:class:`~impeccable.runtime.backends.loop.Dispatcher`) with
the real :class:`ProcessRunner` (launch and kill replaced) and the real
:class:`FunctionPool` (behind a simulated transport, growing like the local
pool or with a fixed set of workers replaced on death like Dragon's), and the
real Flux partition reactor (:class:`~impeccable.runtime.backends.flux.reactor.Reactor`)
behind a fake ``flux`` module. Only the outside world is simulated: which
event happens next (a submission, a wake-up delivered, a process ending, a
worker's result or death, a Flux RPC reply or journal event, a cancel) is
chosen by a seeded random generator, so every interleaving is reproducible
from its seed.

A wake-up is delivered only if some code asked for it (a runtime's
``slots.wake`` or ``host.wake``, an inbox message): a lost wake-up leaves a
runtime asleep, as it would in the pilot. At every *settled* moment (no
wake-up or message in flight), the harness checks liveness by waking every
runtime by hand: if that pass places anything, a wake-up was lost. After every
event it checks that no slot is held twice or leaked. :func:`run` returns a
:class:`Outcome`; :func:`minimal_failure` shrinks a failing scenario and
:func:`replay_text` prints the event trace to replay it.
"""

from __future__ import annotations

import collections
import itertools
import os
import pickle
import random
from dataclasses import dataclass, field, replace
from typing import Any

from impeccable.runtime.backends.base import Submission, TaskFuture
from impeccable.runtime.backends.flux.reactor import PartitionConfig, Reactor
from impeccable.runtime.backends.loop import Dispatcher
from impeccable.runtime.backends.pool import FunctionPool, PoolWorker
from impeccable.runtime.backends.processes import ProcessRunner, _Child
from impeccable.runtime.records import TaskState
from impeccable.runtime.resources import Allocation
from impeccable.runtime.slots import SlotBroker
from impeccable.runtime.task import Task, TaskKind, executable_task, function_task

RUNTIME_KINDS = ("exe", "fn", "local", "dragon", "flux")  # what each serves: see _Runtime subclasses


def noop() -> None:
    """The function every simulated call names (never called)."""


# ---------------------------------------------------------------------- scenario
@dataclass(frozen=True)
class SimTask:
    uid: str
    runtime: int  # index into Scenario.runtimes
    kind: str  # "exe" | "fn"
    cores_per_rank: int = 1
    gpus_per_rank: int = 0
    ranks: int = 1
    mpi: bool = False
    fails: int = 0  # attempts that fail before one succeeds
    retries: int = 0
    cancel: bool = False  # the caller cancels it at some point
    batch: int = 0  # submitted with the other tasks of this batch


@dataclass(frozen=True)
class Scenario:
    seed: int
    nodes: int
    cores_per_node: int
    gpus_per_node: int
    runtimes: tuple[tuple[str, int], ...]  # (kind, weight)
    tasks: tuple[SimTask, ...]
    gates: tuple[int | None, ...] = ()  # per batch: the batch that must be final before it is submitted
    flux_partitions: int = 1
    faults: bool = True  # launch failures, worker crashes and Flux rejections happen now and then
    flux_ahead: int = 0  # Flux jobs submitted ahead, held until placed (PartitionConfig.ahead)

    def describe(self) -> str:
        lines = [
            f"Scenario(seed={self.seed}, nodes={self.nodes}, cores_per_node={self.cores_per_node}, "
            f"gpus_per_node={self.gpus_per_node}, runtimes={self.runtimes}, "
            f"flux_partitions={self.flux_partitions}, faults={self.faults}, flux_ahead={self.flux_ahead}, "
            f"gates={self.gates}, tasks=("
        ]
        lines += [f"    {t!r}," for t in self.tasks]
        return "\n".join(lines + ["))"])


def scenario(seed: int) -> Scenario:
    """A random scenario: 1-3 nodes of 1-4 cores and 0-2 GPUs, 2-4 runtimes, 4-24 tasks in phases."""
    rng = random.Random(seed)
    nodes, cpn, gpn = rng.randint(1, 3), rng.randint(1, 4), rng.choice((0, 0, 1, 2))
    n_runtimes = rng.randint(2, 4)
    kinds = [rng.choice(RUNTIME_KINDS) for _ in range(n_runtimes)]
    if "flux" in kinds[1:]:  # one flux runtime at most (its partitions share the runtime's name)
        kinds = [k for i, k in enumerate(kinds) if k != "flux" or i == kinds.index("flux")]
    runtimes = tuple((kind, rng.choice((1, 1, 2, 3))) for kind in kinds)
    partitions = rng.choice((1, 1, 2)) if nodes > 1 else 1
    n_batches = rng.randint(1, 4)
    tasks = []
    for i in range(rng.randint(4, 24)):
        r = rng.randrange(len(runtimes))
        kind = runtimes[r][0]
        task_kind = {"exe": "exe", "flux": "exe", "fn": "fn", "dragon": "fn"}.get(kind) or rng.choice(("exe", "fn"))
        cores = rng.choice([1, 1, 1, 2, cpn]) if cpn > 1 else 1
        cores = min(cores, cpn)
        gpus = rng.choice((0, 0, 0, 1)) if gpn else 0
        mpi = task_kind == "exe" and rng.random() < 0.2
        span = nodes // partitions if kind == "flux" else nodes  # the nodes of its smallest flux partition
        ranks = rng.randint(2, max(2, span * cpn // max(cores, 1))) if mpi else 1
        if mpi and ranks * cores > span * cpn:
            mpi, ranks = False, 1
        fails = rng.choice((0, 0, 0, 1))
        tasks.append(
            SimTask(
                f"t{i}",
                r,
                task_kind,
                cores,
                gpus if not mpi else 0,
                ranks,
                mpi,
                fails,
                retries=rng.choice((0, 1)),
                cancel=rng.random() < 0.1,
                batch=rng.randrange(n_batches),
            )
        )
    gates = tuple(None if b == 0 or rng.random() < 0.5 else rng.randrange(b) for b in range(n_batches))
    return Scenario(seed, nodes, cpn, gpn, runtimes, tuple(tasks), gates, partitions, flux_ahead=rng.choice((0, 1, 3)))


# ---------------------------------------------------------------------- outcome
@dataclass
class Outcome:
    scenario: Scenario
    failure: str = ""  # empty when every check held
    kind: str = ""  # "lost-wakeup", "deadlock", "unfinished", "slots", "crash"
    trace: list[str] = field(default_factory=list)
    steps: int = 0

    @property
    def ok(self) -> bool:
        return not self.failure


class SimFailure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------------- runtimes
class _Runtime:
    """One runtime of the simulation: its view(s), its queue(s) and its pending events."""

    def __init__(self, sim: Sim, index: int, kind: str, weight: int) -> None:
        self.sim = sim
        self.index = index
        self.kind = kind
        self.name = f"{kind}{index}"
        self.weight = weight

    def views(self) -> list:
        raise NotImplementedError

    def queued(self) -> int:
        raise NotImplementedError

    def held(self) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        """(who, cores, gpus) of every slot lease it holds now."""
        raise NotImplementedError

    def busy(self) -> bool:
        """Something of its own is running or in flight (an event will come)."""
        raise NotImplementedError


class _SimBackend:
    """What a Dispatcher needs of its backend."""

    def __init__(self, name: str, slots: Any) -> None:
        self.name = name
        self.slots = slots
        self._inbox: collections.deque = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


class _SimLauncher:
    """What the runner asks a launcher after a process ended: no node fails under a simulated task."""

    reports_node_failures = False


class _SimProcessRunner(ProcessRunner):
    """The real runner; launching and killing are the simulation's."""

    def __init__(self, host: Dispatcher, sim: Sim, owner: _DispatcherRuntime) -> None:
        super().__init__(host, launcher=_SimLauncher())  # type: ignore[arg-type]
        self.sim = sim
        self.owner = owner

    def _launch(self, sub: Submission, cores: tuple[int, ...], gpus: tuple[int, ...]) -> None:
        if self.sim.sc.faults and self.sim.rng.random() < 0.05:
            self._failed_to_start(sub, cores, gpus, "simulated launch failure")
            self.sim.note(f"{self.owner.name}: launch of {sub.task.uid} failed (slots given back in the pass)")
            return
        sub.started()
        self.children[sub.task.uid] = _Child(sub, None, cores, gpus)  # type: ignore[arg-type]
        self.sim.note(f"{self.owner.name}: {sub.task.uid} starts on cores {cores} gpus {gpus}")

    def _kill(self, child: _Child) -> None:
        self.owner.killed.add(child.sub.task.uid)


class _SimTransport:
    """Calls to simulated workers; grows like the local pool or replaces dead workers like Dragon."""

    def __init__(self, sim: Sim, owner: _DispatcherRuntime, max_workers: int, grows: bool) -> None:
        self.sim = sim
        self.owner = owner
        self.max_workers = max_workers
        self.grows = grows
        self.pool: FunctionPool = None  # type: ignore[assignment]
        self.calls: dict[int, collections.deque] = {}  # worker id -> calls sent, in order
        self.dying: set[int] = set()
        self.replacing: list[int] = []  # nodes of dead workers whose replacement has not come up
        self._ids = itertools.count()

    def new_worker(self, node: int) -> PoolWorker:
        worker = PoolWorker(next(self._ids), node)
        self.calls[worker.handle] = collections.deque()
        return worker

    def can_grow(self) -> bool:
        return self.grows and len(self.pool.workers) < self.max_workers

    def grow(self, node: int) -> PoolWorker | None:
        return self.new_worker(node) if self.can_grow() else None

    def send(self, worker: PoolWorker, batch: bytes) -> None:
        self.calls[worker.handle].extend(pickle.loads(batch))

    def kill(self, worker: PoolWorker) -> None:
        self.dying.add(worker.handle)

    def abort(self, busy: list[PoolWorker]) -> None:
        for worker in busy:
            self.kill(worker)

    def after_events(self) -> None: ...

    def on_drained(self) -> None: ...

    def teardown(self) -> None: ...


class _DispatcherRuntime(_Runtime):
    """The local dispatcher (exe, fn, local and dragon runtimes): the real Dispatcher and runners."""

    def __init__(self, sim: Sim, index: int, kind: str, weight: int) -> None:
        super().__init__(sim, index, kind, weight)
        self.view = sim.broker.view(self.name, weight)
        self.backend = _SimBackend(self.name, self.view)
        self.loop = Dispatcher(self.backend)  # type: ignore[arg-type]
        self.loop.wake = lambda: sim.wake(self)  # type: ignore[method-assign]
        self.view.wake = lambda: sim.wake(self)
        self.killed: set[str] = set()
        self.runner: _SimProcessRunner | None = None
        self.pool: FunctionPool | None = None
        self.transport: _SimTransport | None = None
        if kind in ("exe", "local"):
            self.runner = _SimProcessRunner(self.loop, sim, self)
            self.loop.serve([TaskKind.EXECUTABLE], self.runner)
        if kind in ("fn", "local", "dragon"):
            n = self.view.n_cores
            self.transport = _SimTransport(sim, self, n, grows=kind != "dragon")
            self.pool = FunctionPool(
                self.loop, self.transport, pipeline_s=0.02, max_pipeline=4, queue_ahead=1 if kind == "dragon" else 0
            )
            self.transport.pool = self.pool
            self.loop.serve([TaskKind.FUNCTION], self.pool)
            n_start = n if kind == "dragon" else sim.rng.randint(0, n)
            for i in range(n_start):
                self.pool.add_worker(self.transport.new_worker(i * sim.broker.n_nodes // n))

    def views(self) -> list:
        return [self.view]

    def queued(self) -> int:
        return len(self.loop.pending)

    def held(self) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        out = []
        if self.runner is not None:
            out += [(f"{self.name}:{uid}", c.cores, c.gpus) for uid, c in self.runner.children.items()]
        if self.pool is not None:
            out += [(f"{self.name}:worker{w.handle}", w.cores, w.gpus) for w in self.pool.workers if w.cores or w.gpus]
        return out

    def busy(self) -> bool:
        return bool(
            (self.runner and self.runner.children)
            or (self.pool and any(w.outstanding for w in self.pool.workers))
            or (self.transport and self.transport.replacing)
        )

    def deliver_inbox(self, what: str, payload: Any) -> None:
        self.backend._inbox.append((what, payload))
        self.sim.wake(self)

    def turn(self, woken: bool = False) -> None:
        if woken:
            os.eventfd_write(self.backend._wake_fd, 1)
            self.loop._on_wake(self.backend._wake_fd)
        self.loop.end_turn()

    def events(self) -> list[tuple[str, Any]]:
        ev: list[tuple[str, Any]] = []
        if self.runner is not None:
            ev += [("exit", c) for c in self.runner.children.values()]
        if self.transport is not None:
            for w in self.pool.workers:  # type: ignore[union-attr]
                if w.handle in self.transport.dying:
                    ev.append(("death", w))
                elif self.transport.calls[w.handle]:
                    ev.append(("result", w))
                    if self.sim.sc.faults:
                        ev.append(("crash", w))
            if self.transport.replacing:
                ev.append(("replacement", None))
        return ev

    def fire(self, event: tuple[str, Any]) -> None:
        what, obj = event
        sim = self.sim
        if what == "exit":
            child: _Child = obj
            uid = child.sub.task.uid
            killed = uid in self.killed
            self.killed.discard(uid)
            code = -9 if killed else (1 if sim.fails_now(child.sub) else 0)
            sim.note(f"{self.name}: {uid} exits with {code}")
            self.runner._ended(child, code, sim.clock())  # type: ignore[union-attr]
        elif what == "result":
            worker: PoolWorker = obj
            token = self.transport.calls[worker.handle].popleft()[0]  # type: ignore[union-attr]
            entry = next((sub for t, sub in worker.outstanding if t == token), None)
            ok = entry is None or not sim.fails_now(entry)
            payload = None if ok else (None, "simulated failure", None)
            now = sim.clock()
            sim.note(f"{self.name}: worker{worker.handle} returns call {token} ({'ok' if ok else 'failed'})")
            self.pool.on_result(worker, pickle.dumps((token, ok, payload, now - 0.01, now)))  # type: ignore[union-attr]
        elif what in ("death", "crash"):
            worker = obj
            self.transport.dying.discard(worker.handle)  # type: ignore[union-attr]
            self.transport.calls.pop(worker.handle, None)  # type: ignore[union-attr]
            sim.note(f"{self.name}: worker{worker.handle} dies ({what})")
            if self.kind == "dragon":
                self.transport.replacing.append(worker.node)  # type: ignore[union-attr]
            self.pool.on_worker_died(worker, None, -9)  # type: ignore[union-attr]
        elif what == "replacement":
            node = self.transport.replacing.pop(0)  # type: ignore[union-attr]
            sim.note(f"{self.name}: a replacement worker comes up on node {node}")
            self.pool.add_worker(self.transport.new_worker(node))  # type: ignore[union-attr]
        self.turn()

    def close(self) -> None:
        self.loop.selector.close()
        os.close(self.backend._wake_fd)


# ---------------------------------------------------------------------- flux
class _FakeJobspec:
    def __init__(self, **kwargs: Any) -> None:
        self.attrs: dict[str, Any] = dict(kwargs)
        self.environment: dict[str, str] = {}
        self.cwd = ""
        self.duration = 0.0
        self.stdout = self.stderr = ""

    @classmethod
    def from_command(cls, argv: list[str], **kwargs: Any) -> _FakeJobspec:
        return cls(argv=argv, **kwargs)

    def setattr(self, key: str, value: Any) -> None:
        self.attrs[key] = value

    def setattr_shell_option(self, key: str, value: Any) -> None:
        self.attrs[f"shell.{key}"] = value

    def dumps(self) -> str:
        return repr(self.attrs)


class _FakeFuture:
    def __init__(self, flux: _FakeFlux, kind: str, jobid: int | None = None) -> None:
        self.flux = flux
        self.kind = kind
        self.jobid = jobid
        self.rejected = False

    def then(self, callback: Any, *args: Any) -> None:
        self.flux.rpcs.append((self, callback, args))

    def get_id(self) -> int:
        if self.rejected:
            raise OSError(22, "simulated rejection")
        return self.jobid  # type: ignore[return-value]

    def get(self) -> dict:
        if self.kind == "urgency":  # the job-manager refuses a job that is gone (or, as a fault, at random)
            if self.rejected or self.jobid in self.flux.gone or self.jobid in self.flux.cancels:
                raise OSError(2, "simulated: no such job")
            self.flux.held.discard(self.jobid)
            return {}
        return {"guest.output": ""}


class _FakeJobModule:
    JobspecV1 = _FakeJobspec

    def __init__(self, flux: _FakeFlux) -> None:
        self.flux = flux

    def submit_async(self, handle: Any, spec: str, urgency: int = 16, novalidate: bool = True) -> _FakeFuture:
        future = _FakeFuture(self.flux, "submit", next(self.flux.ids))
        if urgency == 0:
            self.flux.held.add(future.jobid)  # type: ignore[arg-type]
        return future

    def cancel_async(self, handle: Any, jobid: int, reason: str) -> None:
        self.flux.cancels.add(jobid)

    def job_info_lookup(self, handle: Any, jobid: int, keys: Any) -> _FakeFuture:
        return _FakeFuture(self.flux, "lookup", jobid)


class _FakeFlux:
    """The few parts of the ``flux`` module the reactor uses after it has started."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.rpcs: list[tuple[_FakeFuture, Any, tuple]] = []
        self.cancels: set[int] = set()
        self.held: set[int] = set()  # submitted at urgency 0 and not let go: Flux does not allocate them
        self.gone: set[int] = set()  # cleaned
        self.job = _FakeJobModule(self)


class _FakeHandle:
    stopped = False

    def __init__(self, flux: _FakeFlux) -> None:
        self.flux = flux

    def reactor_stop(self) -> None:
        self.stopped = True

    def rpc(self, topic: str, payload: dict) -> _FakeFuture:
        assert topic == "job-manager.urgency", topic
        return _FakeFuture(self.flux, "urgency", payload["id"])


@dataclass
class _FakeEvent:
    jobid: int
    name: str
    context: dict
    timestamp: float


class _SimPartition:
    """A :class:`PartitionLink` without an instance."""

    def __init__(self, config: PartitionConfig, slots: Any) -> None:
        self.config = config
        self.slots = slots
        self.uri = "sim://"
        self.inbox: collections.deque = collections.deque()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def release(self, cores: int) -> None: ...

    def add_load(self, cores: int) -> None: ...


class _FluxRuntime(_Runtime):
    """The real partition reactors, behind a fake flux module; one runtime, 1-2 partitions."""

    STEPS = ("alloc", "start", "finish", "clean")

    def __init__(self, sim: Sim, index: int, kind: str, weight: int, partitions: int) -> None:
        super().__init__(sim, index, kind, weight)
        broker = sim.broker
        main = broker.view(self.name, weight)
        groups = (
            [tuple(range(broker.n_nodes))]
            if partitions == 1
            else [tuple(n for n in range(broker.n_nodes) if n % partitions == p) for p in range(partitions)]
        )
        self.flux = _FakeFlux()
        self.parts: list[_SimPartition] = []
        self.reactors: list[Reactor] = []
        for p, nodes in enumerate(groups):
            view = main.subview(nodes)
            cores = tuple(c for n in nodes for c in view.node_cores(n))
            gpus = tuple(g for n in nodes for g in view.node_gpus(n))
            config = PartitionConfig(f"p{p}", nodes, cores, gpus, broker.gpus_per_node, ahead=sim.sc.flux_ahead)
            part = _SimPartition(config, view)
            view.wake = lambda part=part: sim.wake(self, part)
            reactor = Reactor(part, self.flux, None, [])  # type: ignore[arg-type]
            reactor.h = _FakeHandle(self.flux)
            self.parts.append(part)
            self.reactors.append(reactor)
        self.progress: dict[int, int] = {}  # jobid -> index of its next lifecycle step

    def views(self) -> list:
        return [p.slots for p in self.parts]

    def queued(self) -> int:
        return sum(len(r.waiting) for r in self.reactors)

    def held(self) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        return [
            (f"{self.name}:{uid}", j.placement.cores, j.placement.gpus)
            for r in self.reactors
            for uid, j in r.by_uid.items()
            if j.placement is not None
        ]

    def busy(self) -> bool:
        return any(r.by_uid for r in self.reactors) or bool(self.flux.rpcs)

    def partition_for(self, task: Task) -> int:
        fits = [i for i, p in enumerate(self.parts) if p.config.fits(task)]
        return self.sim.rng.choice(fits)

    def deliver_inbox(self, what: str, payload: Any, part: int | None = None) -> None:
        targets = range(len(self.parts)) if part is None else (part,)
        for i in targets:
            self.parts[i].inbox.append((what, payload))
            self.sim.wake(self, self.parts[i])

    def turn_part(self, part: _SimPartition) -> None:
        reactor = self.reactors[self.parts.index(part)]
        os.eventfd_write(part.wake_fd, 1)
        reactor._on_wake()
        self._check(reactor)

    def _check(self, reactor: Reactor) -> None:
        if reactor.h.stopped and not reactor.stopping:
            raise SimFailure("crash", f"{self.name}: the reactor stopped")
        if reactor.stopping and any(s.record.error and "failed:" in (s.record.error or "") for s in reactor.waiting):
            raise SimFailure("crash", f"{self.name}: the reactor crashed")

    def events(self) -> list[tuple[str, Any]]:
        ev: list[tuple[str, Any]] = [("rpc", i) for i in range(len(self.flux.rpcs))]
        for reactor in self.reactors:
            for jobid in reactor.jobs:
                if jobid not in self.flux.held or jobid in self.flux.cancels:  # a held job only ends canceled
                    ev.append(("journal", (reactor, jobid)))
                elif self.sim.sc.faults and reactor.ahead.is_held(reactor.jobs[jobid]):
                    ev.append(("outside-cancel", (reactor, jobid)))  # `flux cancel` by someone else
        return ev

    def fire(self, event: tuple[str, Any]) -> None:
        what, obj = event
        sim = self.sim
        if what == "rpc":
            future, callback, args = self.flux.rpcs.pop(obj)
            reactor = next(r for r in self.reactors if getattr(callback, "__self__", None) is r)
            if future.kind in ("submit", "urgency") and sim.sc.faults and sim.rng.random() < 0.05:
                future.rejected = True
            sim.note(
                f"{self.name}: flux replies to {future.kind} (job {future.jobid}"
                f"{', rejected' if future.rejected else ''})"
            )
            callback(future, *args)
            self._check(reactor)
            return
        reactor, jobid = obj
        job = reactor.jobs[jobid]
        if what == "outside-cancel":
            sim.note(f"{self.name}: someone cancels held job {jobid} ({job.sub.task.uid}) in flux")
            self.flux.cancels.add(jobid)
            return
        step = self.progress.get(jobid, 0)
        canceled = jobid in self.flux.cancels
        now = sim.clock()
        if canceled and step < 2:  # canceled before it ran: exception, then clean
            sim.note(f"{self.name}: job {jobid} ({job.sub.task.uid}) canceled in flux before it ran")
            reactor._on_event(_FakeEvent(jobid, "exception", {"type": "cancel", "severity": 0, "note": ""}, now))
            reactor._on_event(_FakeEvent(jobid, "clean", {}, now))
            self._forget(jobid)
        elif self.STEPS[step] == "alloc":
            reactor._on_event(_FakeEvent(jobid, "alloc", {}, now))
        elif self.STEPS[step] == "start":
            reactor._on_event(_FakeEvent(jobid, "start", {}, now))
        elif self.STEPS[step] == "finish":
            status = 9 if canceled else (256 if sim.fails_now(job.sub) else 0)
            if canceled:
                reactor._on_event(_FakeEvent(jobid, "exception", {"type": "cancel", "severity": 0, "note": ""}, now))
            reactor._on_event(_FakeEvent(jobid, "finish", {"status": status}, now))
        else:
            sim.note(f"{self.name}: job {jobid} ({job.sub.task.uid}) clean")
            reactor._on_event(_FakeEvent(jobid, "clean", {}, now))
            self._forget(jobid)
        if jobid in reactor.jobs:
            self.progress[jobid] = step + 1
            sim.note(f"{self.name}: job {jobid} ({job.sub.task.uid}) {self.STEPS[step]}")
        self._check(reactor)

    def _forget(self, jobid: int) -> None:
        self.progress.pop(jobid, None)
        self.flux.cancels.discard(jobid)
        self.flux.held.discard(jobid)
        self.flux.gone.add(jobid)

    def close(self) -> None:
        for part in self.parts:
            os.close(part.wake_fd)


# ---------------------------------------------------------------------- the simulation
class Sim:
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.rng = random.Random(sc.seed * 7919 + 1)
        self.trace: list[str] = []
        self._time = 1000.0
        alloc = Allocation.emulated(sc.nodes * sc.cores_per_node, nodes=sc.nodes, gpus=sc.nodes * sc.gpus_per_node)
        self.broker = SlotBroker(alloc)
        self.runtimes: list[_Runtime] = []
        for i, (kind, weight) in enumerate(sc.runtimes):
            if kind == "flux":
                self.runtimes.append(_FluxRuntime(self, i, kind, weight, sc.flux_partitions))
            else:
                self.runtimes.append(_DispatcherRuntime(self, i, kind, weight))
        self.wakes: dict[tuple[int, int], tuple[_Runtime, Any]] = {}  # pending wake-ups (eventfd counters)
        self.subs: dict[str, Submission] = {}
        self.attempts_failed: collections.Counter = collections.Counter()
        self.batches_sent: set[int] = set()
        self.cancels_sent: set[str] = set()
        self.by_uid = {t.uid: t for t in sc.tasks}

    # ------------------------------------------------------------ services
    def clock(self) -> float:
        self._time += self.rng.choice((0.0, 0.001, 0.1))
        return self._time

    def note(self, line: str) -> None:
        self.trace.append(line)

    def wake(self, runtime: _Runtime, part: Any = None) -> None:
        self.wakes[(runtime.index, id(part))] = (runtime, part)

    def fails_now(self, sub: Submission) -> bool:
        spec = self.by_uid[sub.task.uid]
        if self.attempts_failed[spec.uid] < spec.fails:
            self.attempts_failed[spec.uid] += 1
            return True
        return False

    # ------------------------------------------------------------ tasks
    def _task(self, spec: SimTask) -> Task:
        if spec.kind == "exe":
            return executable_task(
                ["true"],
                name=spec.uid,
                uid=spec.uid,
                cores_per_rank=spec.cores_per_rank,
                gpus_per_rank=spec.gpus_per_rank,
                ranks=spec.ranks,
                mpi=spec.mpi,
                retries=spec.retries,
            )
        return function_task(
            noop,
            name=spec.uid,
            uid=spec.uid,
            cores_per_rank=spec.cores_per_rank,
            gpus_per_rank=spec.gpus_per_rank,
            retries=spec.retries,
        )

    def submit_batch(self, batch: int) -> None:
        self.batches_sent.add(batch)
        per_runtime: dict[int, list[Submission]] = collections.defaultdict(list)
        for spec in self.sc.tasks:
            if spec.batch != batch:
                continue
            task = self._task(spec)
            record = task.new_record(self.clock(), self.runtimes[spec.runtime].name)
            sub = Submission(task, record, TaskFuture(task, record))
            self.subs[spec.uid] = sub
            per_runtime[spec.runtime].append(sub)
        self.note(
            f"submit batch {batch}: "
            + ", ".join(f"{s.task.uid}->{self.runtimes[r].name}" for r, subs in per_runtime.items() for s in subs)
        )
        for r, subs in per_runtime.items():
            runtime = self.runtimes[r]
            if isinstance(runtime, _FluxRuntime):
                by_part: dict[int, list[Submission]] = collections.defaultdict(list)
                for sub in subs:
                    by_part[runtime.partition_for(sub.task)].append(sub)
                for p, part_subs in by_part.items():
                    runtime.deliver_inbox("submit", part_subs, p)
            else:
                runtime.deliver_inbox("submit", subs)  # type: ignore[attr-defined]

    def _batch_ready(self, batch: int) -> bool:
        gate = self.sc.gates[batch] if batch < len(self.sc.gates) else None
        gated_on = [t for t in self.sc.tasks if t.batch == gate]
        if not gated_on:  # no gate, or a batch with no tasks
            return True
        return gate in self.batches_sent and all(self.subs[t.uid].future.done() for t in gated_on)

    def _cancelable(self) -> list[str]:
        return [
            t.uid
            for t in self.sc.tasks
            if t.cancel and t.uid in self.subs and t.uid not in self.cancels_sent and not self.subs[t.uid].future.done()
        ]

    # ------------------------------------------------------------ the run
    def events(self) -> list[tuple[Any, ...]]:
        ev: list[tuple[Any, ...]] = [("wake", key) for key in self.wakes]
        batches = {t.batch for t in self.sc.tasks}
        ev += [("batch", b) for b in sorted(batches - self.batches_sent) if self._batch_ready(b)]
        ev += [("cancel", uid) for uid in self._cancelable()]
        for runtime in self.runtimes:
            ev += [("runtime", runtime, e) for e in runtime.events()]  # type: ignore[attr-defined]
        return ev

    def fire(self, event: tuple[Any, ...]) -> None:
        if event[0] == "wake":
            runtime, part = self.wakes.pop(event[1])
            self.note(f"{runtime.name}: woken")
            if isinstance(runtime, _FluxRuntime):
                runtime.turn_part(part)
            else:
                runtime.turn(woken=True)  # type: ignore[attr-defined]
        elif event[0] == "batch":
            self.submit_batch(event[1])
        elif event[0] == "cancel":
            uid = event[1]
            self.cancels_sent.add(uid)
            runtime = self.runtimes[self.by_uid[uid].runtime]
            self.note(f"cancel {uid} ({runtime.name})")
            runtime.deliver_inbox("cancel", uid)  # type: ignore[attr-defined]
        else:
            event[1].fire(event[2])

    def check_outcomes(self) -> None:
        """A task ends canceled only if the scenario cancels it, and fails only with a reason (a held job lost
        in Flux is not a failure of its task)."""
        for uid, sub in self.subs.items():
            record = sub.record
            if record.state is TaskState.CANCELED and not self.by_uid[uid].cancel:
                raise SimFailure("outcome", f"{uid} ended canceled, never asked: {record.error}")
            if record.state is TaskState.FAILED and "exit code None" in (record.error or ""):
                raise SimFailure("outcome", f"{uid} failed with no failure: {record.error}")

    def check_slots(self) -> None:
        held_cores: list[int] = []
        held_gpus: list[int] = []
        used: collections.Counter = collections.Counter()
        for runtime in self.runtimes:
            for _who, cores, gpus in runtime.held():
                held_cores += cores
                held_gpus += gpus
                used[runtime.name] += len(cores)
        free_cores = [c for node in self.broker._free_cores for c in node]
        free_gpus = [g for node in self.broker._free_gpus for g in node]
        all_cores = sorted(held_cores + free_cores)
        if all_cores != list(range(self.broker.capacity_cores)):
            dup = sorted(c for c, n in collections.Counter(all_cores).items() if n > 1)
            lost = sorted(set(range(self.broker.capacity_cores)) - set(all_cores))
            raise SimFailure("slots", f"core slots held twice {dup} or lost {lost}")
        if sorted(held_gpus + free_gpus) != list(range(self.broker.capacity_gpus)):
            raise SimFailure(
                "slots", f"GPU slots held twice or lost: held {sorted(held_gpus)}, free {sorted(free_gpus)}"
            )
        for runtime in self.runtimes:
            if self.broker._used[runtime.name] != used[runtime.name]:
                raise SimFailure(
                    "slots",
                    f"{runtime.name}: the broker counts {self.broker._used[runtime.name]} "
                    f"cores used, it holds {used[runtime.name]}",
                )

    def check_settled(self) -> None:
        """No wake-up or message in flight: waking every runtime by hand must not place anything."""
        for runtime in self.runtimes:
            before = runtime.queued()
            if not before:
                continue
            if isinstance(runtime, _FluxRuntime):
                for part in runtime.parts:
                    runtime.turn_part(part)
            else:
                runtime.turn()  # type: ignore[attr-defined]
            if runtime.queued() < before:
                raise SimFailure(
                    "lost-wakeup",
                    f"{runtime.name} had {before} tasks pending and placed "
                    f"{before - runtime.queued()} when woken by hand: a wake-up was lost",
                )
        if any(r.queued() for r in self.runtimes) and not any(r.busy() for r in self.runtimes):
            raise SimFailure(
                "deadlock",
                "tasks pending, nothing running or in flight: "
                + ", ".join(f"{r.name}: {r.queued()} pending" for r in self.runtimes if r.queued()),
            )

    @staticmethod
    def name_of(event: tuple[Any, ...]) -> str:
        """How a script names an event: "wake exe0", "batch 1", "cancel t3", "exit exe0 t1", "result fn1" ..."""
        if event[0] == "wake":
            return f"wake {event[1][0]}"
        if event[0] in ("batch", "cancel"):
            return f"{event[0]} {event[1]}"
        runtime, (what, obj) = event[1], event[2]
        detail = obj.sub.task.uid if what == "exit" else ""
        return f"{what} {runtime.name} {detail}".strip()

    def _choose(self, events: list[tuple[Any, ...]], script: list[str]) -> tuple[Any, ...]:
        """The next scripted event if it is possible now, else a random one (worker crashes are rare)."""
        if script:
            named = [e for e in events if self.name_of(e).startswith(script[0])]
            if named:
                script.pop(0)
                return named[0]
        weights = [0.1 if e[0] == "runtime" and e[2][0] == "crash" else 1.0 for e in events]
        return self.rng.choices(events, weights)[0]

    def run(self, max_steps: int = 5000, script: list[str] | None = None) -> Outcome:
        """Fire events until none is left; ``script`` names events to fire first, in order, where possible
        ("wake 1" delivers the wake-up of runtime 1, "batch 0" submits batch 0, "exit exe0" ends a process)."""
        steps = 0
        script = list(script or ())
        try:
            while steps < max_steps:
                events = self.events()
                if not self.wakes:
                    self.check_settled()
                    events = self.events()
                if not events:
                    break
                self.fire(self._choose(events, script))
                steps += 1
                self.check_slots()
            unfinished = [uid for uid, sub in self.subs.items() if not sub.future.done()]
            if unfinished or len(self.subs) < len(self.sc.tasks):
                raise SimFailure(
                    "unfinished",
                    f"no event left, tasks not final: {unfinished}, "
                    f"never submitted: {len(self.sc.tasks) - len(self.subs)}",
                )
            self.check_outcomes()
        except SimFailure as exc:
            return Outcome(self.sc, str(exc), exc.kind, self.trace, steps)
        except Exception as exc:  # noqa: BLE001 - a crash of the real code is a finding too
            return Outcome(self.sc, f"{type(exc).__name__}: {exc}", "crash", self.trace, steps)
        finally:
            for runtime in self.runtimes:
                runtime.close()  # type: ignore[attr-defined]
        return Outcome(self.sc, trace=self.trace, steps=steps)


def run(sc: Scenario, script: list[str] | None = None) -> Outcome:
    return Sim(sc).run(script=script)


def minimal_failure(outcome: Outcome) -> Outcome:
    """Shrink a failing scenario: drop tasks one at a time while the same kind of failure remains."""
    best = outcome
    changed = True
    while changed:
        changed = False
        for task in best.scenario.tasks:
            smaller = replace(best.scenario, tasks=tuple(t for t in best.scenario.tasks if t is not task))
            if not smaller.tasks:
                continue
            trial = run(smaller)
            if not trial.ok and trial.kind == best.kind:
                best, changed = trial, True
                break
    return best


def replay_text(outcome: Outcome) -> str:
    return "\n".join(
        [
            f"{outcome.kind}: {outcome.failure}",
            outcome.scenario.describe(),
            "events:",
            *(f"  {i:3d} {line}" for i, line in enumerate(outcome.trace)),
        ]
    )
