"""Executables and MPI tasks on Flux: one or several Flux instances (partitions) per backend.

Each partition is a Flux instance that owns a disjoint slice of the backend's
cores (and GPUs), started by :class:`~.instance.FluxInstance` and ended
with the pilot. Inside an existing Flux allocation (``FLUX_URI`` set, with
``use_existing=True`` or no ``partitions`` option) that instance is used
instead. One thread per partition runs the Flux reactor
(:mod:`.reactor`); this module splits the nodes, hands each task to the
least-loaded partition that fits it, and starts and stops the instances.

An MPI task (``mpi=True``) is ``ranks`` processes launched by Flux (PMI from
the job shell, no mpiexec) and may spread over brokers; any other task is one
process on all its cores, as in the local backend.

Options:

- ``partitions``: Flux instances to start, the nodes split evenly (default 1).
- ``use_existing``: use the enclosing instance (``FLUX_URI``); default: when
  ``FLUX_URI`` is set and ``partitions`` is not given.
- ``validate``: run Flux's jobspec validator on each job (default False: tasks
  are validated when built, and the validator costs broker time per job).
- ``cpu_affinity``: the job shell's ``cpu-affinity`` option (default ``"off"``:
  advertised cores need not exist on this machine).
- ``start_timeout_s``: how long an instance may take to start (default 60).
- ``ahead``: waiting tasks per partition submitted ahead of their slots, held at urgency 0 and let go
  when the pilot places them, so that Flux's ingest is off the critical path (:mod:`.ahead`;
  default: the partition's cores, at most 64; 0 turns it off). Partitions of one broker only, tasks
  without GPUs only.

The ``flux`` command is found on PATH, or at ``$IMPECCABLE_FLUX`` (the command
itself or its ``bin`` directory, e.g. ``/opt/flux/bin``); if ``import flux``
fails, the bindings next to that command
(``<prefix>/lib/pythonX.Y/site-packages``) are tried.

A failed task's reason ends with the last line of its stderr, read back from
the job's output eventlog (only for failures, and only when the task gives
no ``stderr`` path). Placement is the pilot's (:mod:`..slots`): a task enters Flux only once the
pilot has lent it slots, pinned to the brokers of the nodes chosen (a jobspec
rank constraint), so a Flux job and another runtime's task never share a
core; Flux's own core choice inside a node does not matter (cpu-affinity is
off by default). Each partition is an instance over whole nodes, one broker
per node. Limits: in an existing instance (``use_existing``), its broker
ranks are taken as the allocation's nodes, in order.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from ...errors import BackendUnavailable, TaskError
from ...gpus import node_table
from ...slots import SlotView
from ...task import Task, TaskKind
from ..base import Backend, Submission
from ..options import FluxOptions
from .instance import NOT_FOUND, FluxInstance, flux_command, import_flux
from .reactor import PartitionConfig, Reactor, job_shape

__all__ = ["FluxBackend", "NOT_FOUND", "flux_command", "import_flux"]


class FluxBackend(Backend):
    """Executable (and MPI) tasks as Flux jobs, spread least-loaded over one or more Flux instances."""

    name = "flux"
    spans_nodes = True
    kinds = frozenset({TaskKind.EXECUTABLE})
    opts: FluxOptions

    def __init__(self, slots: SlotView, **options: Any) -> None:
        super().__init__(slots, **options)
        self._flux = flux_command()
        o = self.opts
        existing = os.environ.get("FLUX_URI")
        use_existing = o.use_existing
        if use_existing is None:
            use_existing = bool(existing) and o.partitions is None
        if use_existing and not existing:
            raise ValueError("flux backend: use_existing=True but FLUX_URI is not set (not inside a Flux instance)")
        nodes = slots.node_indices
        n = 1 if use_existing else (o.partitions or 1)
        if n < 1 or n > len(nodes):
            raise ValueError(
                f"flux backend: partitions must be between 1 and the {len(nodes)} node(s) it may use, "
                f"got {n} (each partition is a Flux instance over whole nodes; emulate more nodes with "
                "--nodes)"
            )
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
        self._lock = threading.Lock()
        self._partitions = []
        for i, group in enumerate(_split(nodes, n)):
            cores = sum((slots.node_cores(g) for g in group), ())
            config = PartitionConfig(
                name=str(i),
                nodes=group,
                cores=cores,
                ahead=min(len(cores), 64) if o.ahead is None else o.ahead,
                gpus=sum((slots.node_gpus(g) for g in group), ()),
                gpus_per_node=slots.broker.gpus_per_node,
                gpu_table=node_table(slots.broker.allocation),
                validate=o.validate_jobspec,
                cpu_affinity=o.cpu_affinity,
                base_env=base_env,
                existing_uri=existing if use_existing else None,
            )
            self._partitions.append(_Partition(config, slots.subview(group), self._lock))
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._closed = False

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if flux_command() is None:
            return False, NOT_FOUND
        try:
            import_flux()
        except ImportError as exc:
            return False, f"{NOT_FOUND} (the flux command exists but `import flux` fails: {exc})"
        return True, ""

    @property
    def partitions(self) -> list[str]:
        return [p.config.name for p in self._partitions]

    # ------------------------------------------------------------------ API
    def check(self, task: Task) -> None:
        super().check(task)
        parts = [p.config for p in self._partitions]
        if task.partition is not None:
            parts = [p for p in parts if p.name == task.partition]
            if not parts:
                raise TaskError(
                    f"task {task.label}: no flux partition {task.partition!r}; "
                    f"this backend has {', '.join(self.partitions)}"
                )
        if not any(p.fits(task) for p in parts):
            biggest = max(parts, key=lambda p: len(p.cores))
            ranks, cores, gpus = job_shape(task)
            raise TaskError(
                f"task {task.label} needs {ranks} process(es) of {cores} cores and {gpus} GPUs each"
                f"{'' if task.mpi else ' (not MPI: one process)'}, but the largest flux partition has "
                f"{len(biggest.cores)} cores and {len(biggest.gpus)} GPUs over {biggest.brokers} broker(s), "
                "and a process cannot span brokers"
            )

    def start(self) -> None:
        flux = import_flux()
        first = self._partitions[0]
        if first.config.existing_uri is not None:
            first.connect(flux, first.config.existing_uri)
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="impeccable-flux-")
        try:
            for part in self._partitions:  # all instances boot side by side
                part.launch(self._flux, self._tmp.name)
            deadline = time.monotonic() + self.opts.start_timeout_s
            for part in self._partitions:
                part.connect(flux, part.instance.read_uri(deadline))  # type: ignore[union-attr]
        except BaseException:
            self._stop_all(cancel_pending=True)
            raise

    def submit(self, submissions: Sequence[Submission]) -> None:
        if self._closed:
            raise RuntimeError("the flux backend is shut down")
        parts = self._partitions
        batches: dict[int, list[Submission]] = collections.defaultdict(list)
        with self._lock:
            for sub in submissions:
                candidates = [
                    i
                    for i, p in enumerate(parts)
                    if p.config.fits(sub.task) and (sub.task.partition is None or p.config.name == sub.task.partition)
                ]
                # least loaded: outstanding cores relative to the partition's size
                best = min(candidates, key=lambda i: (parts[i].load + sub.task.cores) / len(parts[i].config.cores))
                parts[best].load += sub.task.cores
                batches[best].append(sub)
        for i, batch in batches.items():
            parts[i].post("submit", batch)

    def cancel(self, submission: Submission) -> None:
        for part in self._partitions:
            part.post("cancel", submission.task.uid)

    def shutdown(self, cancel_pending: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_all(cancel_pending)

    def _stop_all(self, cancel_pending: bool) -> None:
        try:
            for part in self._partitions:
                part.post("stop", cancel_pending)
            for part in self._partitions:
                part.join()
        finally:
            for part in self._partitions:  # all instances wind down side by side
                part.end_instance()
            for part in self._partitions:
                part.close_instance()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None


class _Partition:
    """One Flux instance, its reactor thread, its inbox and its load (a :class:`~.reactor.PartitionLink`)."""

    def __init__(self, config: PartitionConfig, slots: SlotView, lock: threading.Lock) -> None:
        self.config = config
        self.slots = slots
        self._lock = lock  # the backend's: guards ``load`` across the caller's and the reactor's threads
        self.load = 0  # cores of the tasks handed here and not yet final
        self.instance: FluxInstance | None = None
        self.uri = ""
        self.thread: threading.Thread | None = None
        self.inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # slots freed by another runtime while tasks here wait: the reactor admits again
        self.slots.wake = lambda: os.eventfd_write(self.wake_fd, 1)

    def launch(self, flux: str | None, tmp: str) -> None:
        allocation = self.slots.broker.allocation  # real Slurm nodes: one broker on each, started by srun
        hosts = [allocation.nodes[n] for n in self.config.nodes] if allocation.manager == "slurm" else []
        self.instance = FluxInstance(
            self.config.name, self.config.cores, self.config.gpus, self.config.brokers, spare=True, hosts=hosts
        )
        self.instance.launch(tmp, flux)

    def connect(self, flux: Any, uri: str) -> None:
        self.uri = uri
        ready = threading.Event()
        failure: list[BaseException] = []
        self.thread = threading.Thread(
            target=Reactor(self, flux, ready, failure).run, name=f"impeccable-flux-{self.config.name}", daemon=True
        )
        self.thread.start()
        ready.wait()
        if failure:
            self.thread.join()
            raise BackendUnavailable(
                f"flux partition {self.config.name}: cannot connect to {uri}: {failure[0]}"
            ) from failure[0]

    def post(self, what: str, payload: Any) -> None:
        if self.thread is None or not self.thread.is_alive():
            if what == "submit":
                for sub in payload:
                    sub.fail(f"flux partition {self.config.name} is not running", final=True)
            return
        self.inbox.append((what, payload))
        os.eventfd_write(self.wake_fd, 1)

    def release(self, cores: int) -> None:
        with self._lock:
            self.load -= cores

    def add_load(self, cores: int) -> None:
        with self._lock:
            self.load += cores

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def end_instance(self) -> None:
        if self.instance is not None:
            self.instance.end()

    def close_instance(self) -> None:
        if self.instance is not None:
            self.instance.close()
            self.instance = None
        self.slots.wake = None
        if self.wake_fd >= 0:
            os.close(self.wake_fd)
            self.wake_fd = -1

    @property
    def process(self) -> Any:
        """The instance's ``flux start`` process (None when not started here)."""
        return self.instance.process if self.instance is not None else None


def _split(items: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """``items`` in ``n`` contiguous, nearly equal parts."""
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        parts.append(tuple(items[start:end]))
        start = end
    return parts
