"""The allocation a pilot holds, the shares it hands to backends, and slot accounting.

Cores and GPUs are numbered slots (0..N-1 over the whole allocation). A pilot
splits them into disjoint :class:`ResourceShare` objects, one per backend; a
backend places each task on free slots of its share and records which ones,
so utilisation and the per-core timeline come straight from the records.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from .gpus import discover
from .nodes import NodeList, cpus_per_node


@dataclass(frozen=True)
class Allocation:
    """What the pilot owns: ``cores`` and ``gpus`` spread evenly over ``nodes``.

    ``cores`` may exceed the machine's (an advertised allocation); :meth:`emulated` names N nodes
    that all live on this machine, to try multi-node placement where only one node exists.
    ``gpus`` counts GPU *slots*: each device is ``gpu_shares`` slots, so that a task asking for a
    fraction of a GPU holds one slot and several share the device (:mod:`.gpus`). ``gpu_devices``
    are the IDs of each node's devices (default 0..n-1), what a task's ``CUDA_VISIBLE_DEVICES`` names.
    ``manager`` is "" for this machine (and emulated nodes), or "slurm"/"flux" when ``nodes`` are
    real hosts of a job that manager started (:meth:`on_nodes`): only then do backends start
    processes on other nodes (srun steps, Flux brokers, Dragon's Slurm launch).
    """

    cores: int
    gpus: int = 0
    nodes: tuple[str, ...] = field(default_factory=lambda: (socket.gethostname(),))
    gpu_shares: int = 1
    gpu_devices: tuple[str, ...] = ()
    manager: str = ""

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ValueError(f"an allocation needs at least one core, got cores={self.cores}")
        if self.gpus < 0:
            raise ValueError(f"gpus must be >= 0, got {self.gpus}")
        if not self.nodes:
            raise ValueError("an allocation needs at least one node")
        if self.cores % len(self.nodes) or self.gpus % len(self.nodes):
            raise ValueError(
                f"{self.cores} cores and {self.gpus} GPUs do not split evenly over "
                f"{len(self.nodes)} nodes: give each node the same number"
            )
        if self.gpu_shares < 1 or self.gpus_per_node % self.gpu_shares:
            raise ValueError(
                f"gpu_shares must be >= 1 and divide the {self.gpus_per_node} GPU slots per node, got {self.gpu_shares}"
            )
        if self.gpu_devices and len(self.gpu_devices) != self.devices_per_node:
            raise ValueError(
                f"gpu_devices names {len(self.gpu_devices)} devices, each node has {self.devices_per_node}"
            )

    @classmethod
    def emulated(
        cls, cores: int, nodes: int = 1, gpus: int = 0, gpu_shares: int = 1, gpu_devices: tuple[str, ...] = ()
    ) -> Allocation:
        """``nodes`` nodes (node0, node1, ...) sharing this machine: multi-node placement, emulated."""
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        names = (socket.gethostname(),) if nodes == 1 else tuple(f"node{i}" for i in range(nodes))
        return cls(cores=cores, gpus=gpus, nodes=names, gpu_shares=gpu_shares, gpu_devices=gpu_devices)

    @classmethod
    def on_nodes(cls, found: NodeList, nodes: int, cores: int | None = None, gpus: int = 0) -> Allocation:
        """The first ``nodes`` nodes of a real allocation (:func:`.nodes.discover`), with ``cores`` over all of
        them (default: every core the allocation gives on each)."""
        if nodes > len(found.names):
            raise ValueError(
                f"{nodes} nodes asked for, but the {found.manager} allocation has {len(found.names)} "
                f"({', '.join(found.names)})"
            )
        cores = found.cores_per_node * nodes if cores is None else cores
        if cores > found.cores_per_node * nodes:
            raise ValueError(
                f"{cores} cores asked for on {nodes} nodes, but the {found.manager} allocation gives "
                f"{found.cores_per_node} per node"
            )
        return cls(cores=cores, gpus=gpus, nodes=found.names[:nodes], manager=found.manager)

    @property
    def real_nodes(self) -> bool:
        """Whether the nodes are hosts of their own (processes reach them through ``manager``)."""
        return bool(self.manager) and len(self.nodes) > 1

    def hosts(self, cores: Iterable[int]) -> str:
        """The names of the nodes these core slots are on (slot i on node i // cores per node), comma-separated."""
        return ",".join(dict.fromkeys(self.nodes[c // self.cores_per_node] for c in cores))

    @property
    def cores_per_node(self) -> int:
        return self.cores // len(self.nodes)

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // len(self.nodes)

    @property
    def devices_per_node(self) -> int:
        """Physical GPUs per node (``gpus_per_node`` counts slots)."""
        return self.gpus_per_node // self.gpu_shares

    @classmethod
    def detect(cls) -> Allocation:
        """The cores this process may use (affinity mask) and the GPUs :func:`.gpus.discover` finds."""
        found = discover()
        return cls(cores=len(os.sched_getaffinity(0)), gpus=found.count, gpu_devices=found.ids)


def machine_cores() -> int:
    """The cores this process may really use: inside a Slurm job, the job's CPUs on all its nodes
    (``SLURM_JOB_CPUS_PER_NODE``, e.g. ``36(x2),4``); otherwise this process's affinity mask."""
    return _slurm_job_cores() or len(os.sched_getaffinity(0))


def cores_source() -> str:
    """Where :func:`machine_cores` takes its number from."""
    if _slurm_job_cores():
        return f"SLURM_JOB_CPUS_PER_NODE={os.environ['SLURM_JOB_CPUS_PER_NODE']}"
    return "this process's CPU affinity mask (sched_getaffinity)"


def _slurm_job_cores() -> int:
    try:
        return sum(cpus_per_node(os.environ.get("SLURM_JOB_CPUS_PER_NODE", "")))
    except ValueError:
        return 0


@dataclass(frozen=True)
class ResourceShare:
    """The disjoint slice of the allocation one backend owns."""

    cores: tuple[int, ...]
    gpus: tuple[int, ...] = ()
    nodes: tuple[str, ...] = field(default_factory=lambda: (socket.gethostname(),))

    @property
    def n_cores(self) -> int:
        return len(self.cores)

    @property
    def n_gpus(self) -> int:
        return len(self.gpus)


def split_allocation(allocation: Allocation, weights: dict[str, int]) -> dict[str, ResourceShare]:
    """Split cores and GPUs into disjoint shares proportional to ``weights`` (backend name -> weight).

    Every share gets at least one core; GPUs go to the shares in the same proportion.
    """
    names = list(weights)
    if not names:
        raise ValueError("no backends to share the allocation between")
    if len(names) > allocation.cores:
        raise ValueError(
            f"{len(names)} backends need at least {len(names)} cores, the allocation has {allocation.cores}"
        )
    core_counts = _apportion(allocation.cores, [weights[n] for n in names], minimum=1)
    gpu_counts = _apportion(allocation.gpus, [weights[n] for n in names], minimum=0)
    shares: dict[str, ResourceShare] = {}
    core, gpu = 0, 0
    for name, n_cores, n_gpus in zip(names, core_counts, gpu_counts):
        shares[name] = ResourceShare(
            cores=tuple(range(core, core + n_cores)), gpus=tuple(range(gpu, gpu + n_gpus)), nodes=allocation.nodes
        )
        core += n_cores
        gpu += n_gpus
    return shares


def _apportion(total: int, weights: list[int], minimum: int) -> list[int]:
    """Largest-remainder split of ``total`` by ``weights`` with a per-part minimum."""
    if any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"share weights must be >= 0 and not all zero, got {weights}")
    base = [minimum] * len(weights)
    rest = total - minimum * len(weights)
    exact = [rest * w / sum(weights) for w in weights]
    counts = [b + int(e) for b, e in zip(base, exact)]
    left = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    for i in order[:left]:
        counts[i] += 1
    return counts


class SlotPool:
    """Free/used bookkeeping for a set of numbered slots. Not thread-safe: one owner thread."""

    __slots__ = ("_free", "capacity")

    def __init__(self, slots: tuple[int, ...]) -> None:
        # a stack: the lowest-numbered slots are reused first, which keeps timelines compact
        self._free = sorted(slots, reverse=True)
        self.capacity = len(slots)

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def used(self) -> int:
        return self.capacity - len(self._free)

    def take(self, n: int) -> tuple[int, ...] | None:
        """``n`` slots, or None if fewer are free. ``n == 0`` gives an empty tuple."""
        if n > len(self._free):
            return None
        if n == 0:
            return ()
        taken = self._free[-n:]
        del self._free[-n:]
        return tuple(reversed(taken))

    def give_back(self, slots: tuple[int, ...]) -> None:
        if slots:
            self._free.extend(sorted(slots, reverse=True))
            if len(self._free) > self.capacity:
                raise RuntimeError("slot returned twice: core accounting is broken")


class Slots:
    """The core and GPU slots a dispatcher places tasks on: both kinds are taken together or not at all.

    One owner thread, like :class:`SlotPool`. Dispatchers see only this interface, so the pool
    behind it may be the backend's own share or, later, one shared by all of the pilot's runtimes.
    """

    __slots__ = ("cores", "gpus")

    def __init__(self, cores: tuple[int, ...], gpus: tuple[int, ...] = ()) -> None:
        self.cores = SlotPool(cores)
        self.gpus = SlotPool(gpus)

    @property
    def free_cores(self) -> int:
        return self.cores.free

    def take(self, n_cores: int, n_gpus: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Core and GPU slots for one task, or None when either kind is short."""
        cores = self.cores.take(n_cores)
        if cores is None:
            return None
        gpus = self.gpus.take(n_gpus)
        if gpus is None:
            self.cores.give_back(cores)
            return None
        return cores, gpus

    def give_back(self, cores: tuple[int, ...], gpus: tuple[int, ...] = ()) -> None:
        self.cores.give_back(cores)
        self.gpus.give_back(gpus)
