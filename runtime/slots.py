"""The pilot's one pool of core and GPU slots, per node, lent to whichever runtime has work.

Slots are numbered over the whole allocation; node ``i`` holds cores
``i*C .. (i+1)*C - 1`` (and GPUs alike). Every runtime (local, Flux, Dragon,
srun) places its tasks through a :class:`SlotView` of one :class:`SlotBroker`:
a task is admitted only when its slots are free, whichever runtime serves it,
so a busy Dragon worker and a Flux job never share a core, and a core idle in
one runtime is lent to another that has work. An idle persistent worker holds
no slot.

Placement. A process's cores are on one node; a task that fits on one node is
placed on the lowest-numbered node with room (first fit keeps timelines
compact and whole nodes free for wide tasks); an MPI task wider than a node
takes whole free nodes, and nothing else runs there.

Contention. Weights (the campaign's ``[pilot.shares]``) matter only when
several runtimes wait for slots at once: a runtime may take slots unless
another runtime waits that ranks before it: lower usage per unit of weight,
or equal usage and waiting since earlier. The freed slots are then kept for
that one (so a wide task is not starved by a stream of one-core calls). The
ranking is a strict order, so the first-ranked waiting runtime is never
refused for contention: two runtimes can never hold each other off with
nothing running. With one runtime waiting, it gets everything.

Wake-ups (liveness). A runtime with pending work is *hungry* from the start
of a scheduling pass until a pass ends with nothing pending, whether or not it
asked for slots (it may have decided there was no room without asking): every
slot another runtime gives back wakes every hungry runtime, and a runtime that
gives slots back during its own pass wakes itself at the pass's end. A
runtime's own give-backs outside a pass need no wake-up, because every runtime
runs a pass after each of its events (the dispatcher's loop turn, the Flux
reactor's callbacks). So no "is there room?" check in a runtime can lose a
wake-up: the tests in ``tests/test_liveness_sim.py`` drive the real runtimes
through thousands of seeded interleavings to show it.

Thread-safe: views are used from each runtime's own thread; a view's ``wake``
callback (an eventfd write) is called, from whatever thread freed slots.
``activity`` counts takes, give-backs and submissions, for the pilot's stall
watchdog (:mod:`.stall`), which also uses :meth:`SlotBroker.probe`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .resources import Allocation


@dataclass(frozen=True)
class Placement:
    """Where a task runs: its core and GPU slots and the node of each of its processes."""

    cores: tuple[int, ...]
    gpus: tuple[int, ...]
    nodes: tuple[int, ...]  # one per process
    hosts: str = ""  # the names of its nodes, comma-separated (what the task's record says)


class NodeLoss:
    """A lost node (see ``runtime.node_watch``) leaves the pool for good: its free slots at once, its busy ones
    when their tasks end (they are not given back). Part of :class:`SlotBroker`, which holds the state."""

    _lock: threading.Lock
    _free_cores: list[list[int]]
    _free_gpus: list[list[int]]
    _node_cores: list[int]  # what each node has in the pool: 0 once it is lost
    _node_gpus: list[int]
    capacity_cores: int
    capacity_gpus: int
    node_of_core: Callable[[int], int]
    node_of_gpu: Callable[[int], int]

    def mark_down(self, node: int) -> None:
        """Node ``node`` is lost: its slots leave the pool, busy ones included (they are not given back)."""
        with self._lock:
            self.capacity_cores -= self._node_cores[node]
            self.capacity_gpus -= self._node_gpus[node]
            self._node_cores[node] = self._node_gpus[node] = 0
            del self._free_cores[node][:], self._free_gpus[node][:]

    def _still_up(self, cores: Sequence[int], gpus: Sequence[int]) -> tuple[list[int], list[int]]:
        """Those of these slots whose node is still in the pool (a lost node has none there)."""
        return (
            [c for c in cores if self._node_cores[self.node_of_core(c)]],
            [g for g in gpus if self._node_gpus[self.node_of_gpu(g)]],
        )


class SlotBroker(NodeLoss):
    """The free core and GPU slots of an allocation (or of a fenced share of it), per node."""

    def __init__(
        self, allocation: Allocation, cores: Iterable[int] | None = None, gpus: Iterable[int] | None = None
    ) -> None:
        self.allocation = allocation
        self.cores_per_node = allocation.cores_per_node
        self.gpus_per_node = allocation.gpus_per_node
        self.gpu_shares = getattr(allocation, "gpu_shares", 1)  # GPU slots per device
        self.n_nodes = len(allocation.nodes)
        cores = sorted(range(allocation.cores) if cores is None else cores)
        gpus = sorted(range(allocation.gpus) if gpus is None else gpus)
        # per node, a stack: the lowest-numbered slots are reused first
        self._free_cores: list[list[int]] = [[] for _ in range(self.n_nodes)]
        self._free_gpus: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for c in reversed(cores):
            self._free_cores[self.node_of_core(c)].append(c)
        for g in reversed(gpus):
            self._free_gpus[self.node_of_gpu(g)].append(g)
        self.capacity_cores = len(cores)
        self.capacity_gpus = len(gpus)
        self._members = frozenset(cores)
        self._gpu_members = frozenset(gpus)
        self._node_cores = [len(f) for f in self._free_cores]  # what each node has in this pool
        self._node_gpus = [len(f) for f in self._free_gpus]
        self._lock = threading.Lock()
        self._used: dict[str, int] = {}
        self._weight: dict[str, float] = {}
        # views that failed to place a task and still wait -> when they began to wait (a sequence number;
        # None: placed something since, so no longer blocked, but still to be woken until its pass ends)
        self._waiting: dict[SlotView, int | None] = {}
        self._ticket = itertools.count()
        self._views: list[SlotView] = []
        self._hungry: set[SlotView] = set()  # views with pending work: woken by every give-back
        self.activity = 0  # takes, give-backs and submissions so far (the stall watchdog's progress signal)
        self._probe: tuple[int, dict] | None = None  # (activity, state) when the watchdog last woke everyone
        self.on_stall: Callable[[str, dict], None] | None = None  # a pass woken only by a probe placed a task

    def node_of_core(self, slot: int) -> int:
        return slot // self.cores_per_node

    def node_of_gpu(self, slot: int) -> int:
        return slot // self.gpus_per_node if self.gpus_per_node else 0

    def view(self, runtime: str, weight: float = 1.0, nodes: Iterable[int] | None = None) -> SlotView:
        """A runtime's handle; ``nodes`` restricts it to some nodes (a Flux partition's)."""
        if weight <= 0:
            raise ValueError(f"the weight of {runtime!r} must be > 0, got {weight}")
        with self._lock:
            self._used.setdefault(runtime, 0)
            self._weight[runtime] = float(weight)
            view = SlotView(self, runtime, tuple(sorted(set(nodes))) if nodes is not None else None)
            self._views.append(view)
        return view

    @property
    def free_cores(self) -> int:
        return sum(len(f) for f in self._free_cores)

    def note_activity(self) -> None:
        """Work arrived (a submission): progress, as far as the stall watchdog is concerned."""
        with self._lock:
            self.activity += 1

    # ------------------------------------------------------------ the stall watchdog's view
    def has_pending_work(self) -> bool:
        """Whether some runtime had tasks left after its last scheduling pass."""
        return bool(self._hungry)

    def probe(self) -> dict:
        """Wake every view (a stall is suspected): a pass that begins with nothing happened since, and
        places a task, proves a lost wake-up and is reported through ``on_stall``. Returns the state."""
        with self._lock:
            state = self._state()
            self._probe = (self.activity, state)
            wake = [v.wake for v in self._views if v.wake is not None]
        for callback in wake:
            callback()
        return state

    def state(self) -> dict:
        """Per runtime view: pending, wanted, held cores, claim; free slots per node (for a stall's dump)."""
        with self._lock:
            return self._state()

    def _state(self) -> dict:
        return _describe(self)

    def _could_place(self, view: SlotView) -> bool:
        """Whether ``view``'s smallest wanted task fits now and it may take (lock held)."""
        if not view.wanted or not self._may_take(view):
            return False
        nodes = view.nodes if view.nodes is not None else range(self.n_nodes)
        return self._plan(nodes, view.wanted) is not None

    # ------------------------------------------------------------ used by views
    def _take(
        self, view: SlotView, processes: Sequence[tuple[int, int]], only: Iterable[int] | None = None
    ) -> Placement | None:
        stall = None
        with self._lock:
            nodes: Sequence[int] = view.nodes if view.nodes is not None else range(self.n_nodes)
            if only is not None:
                allowed = set(only)
                nodes = [n for n in nodes if n in allowed]
            may_take = self._may_take(view)
            placement = self._place(list(nodes), processes) if may_take else None
            if not may_take:
                view._held_off = True  # refused for another runtime's claim: woken when the ranking moves
            if placement is None:
                self._enlist(view)
                return None
            if view._probed:  # a pass woken by nothing but the watchdog placed a task: a lost wake-up
                view._probed = False
                stall = self._probe[1] if self._probe is not None else self._state()
                self._probe = None
            self.activity += 1
            view._took = True
            self._used[view.runtime] += len(placement.cores)
            if view in self._waiting:
                self._waiting[view] = None  # placed: it ranks behind real waiters until it fails again
        if stall is not None and self.on_stall is not None:
            self.on_stall(view.runtime, stall)
        return placement

    def _pass_begins(self, view: SlotView) -> None:
        view._took = view._held_off = False
        with self._lock:
            self._hungry.add(view)
            view._probed = self._probe is not None and self._probe[0] == self.activity

    def _give_back(self, view: SlotView, cores: Sequence[int], gpus: Sequence[int]) -> None:
        if not cores and not gpus:
            return
        if view._in_pass:
            view._freed_in_pass = True  # slots it skipped earlier in this pass may fit now
        with self._lock:
            self.activity += 1
            self._used[view.runtime] -= len(cores)
            cores, gpus = self._still_up(cores, gpus)  # a lost node's slots stay lost
            for c in sorted(cores, reverse=True):
                node = self.node_of_core(c)
                self._free_cores[node].append(c)
                if len(self._free_cores[node]) > self._node_cores[node]:
                    raise RuntimeError(f"core slot {c} returned twice: core accounting is broken")
            for g in sorted(gpus, reverse=True):
                self._free_gpus[self.node_of_gpu(g)].append(g)
            wake = [v.wake for v in self._hungry.union(self._waiting) if v is not view and v.wake is not None]
        for callback in wake:
            callback()

    def _end_pass(self, view: SlotView, still_waiting: bool, hungry: bool) -> None:
        """A view keeps its claim (and its place in the ranking) while it has tasks it could not place,
        and stays hungry (woken by every give-back) while it has any pending task. A pass that moved
        the ranking (took slots, or its claim changed) wakes the runtimes it held off, while slots are free."""
        wake: list[Callable[[], None]] = []
        with self._lock:
            claim = self._waiting.get(view, -1)  # -1: no claim (tickets count from 0; None: placed since)
            if still_waiting:
                self._enlist(view)
            else:
                self._waiting.pop(view, None)
            if hungry:
                self._hungry.add(view)
            else:
                self._hungry.discard(view)
            view._probed = False
            moved = view._took or self._waiting.get(view, -1) != claim
            if moved and self.free_cores:
                wake = [v.wake for v in self._hungry if v._held_off and v is not view and v.wake is not None]
        for callback in wake:
            callback()

    def _enlist(self, view: SlotView) -> None:
        """``view`` is blocked: it waits from now on, unless it was already blocked (then it keeps its place)."""
        if self._waiting.get(view) is None:
            self._waiting[view] = next(self._ticket)

    def _rank(self, view: SlotView) -> tuple[float, float]:
        since = self._waiting.get(view)
        return self._used[view.runtime] / self._weight[view.runtime], float("inf") if since is None else since

    def _may_take(self, view: SlotView) -> bool:
        """Unless a view of another runtime, blocked now, ranks before this one (a strict order: no cycles)."""
        mine = self._rank(view)
        return not any(
            other.runtime != view.runtime and since is not None and self._rank(other) < mine
            for other, since in self._waiting.items()
        )

    def _place(self, nodes: list[int], processes: Sequence[tuple[int, int]]) -> Placement | None:
        chosen = self._plan(nodes, processes)
        if chosen is None:
            return None
        if len(chosen) == 1:  # the whole task on one node
            fit = chosen[0]
            on_one = self._pop(self._free_cores[fit], sum(c for c, _ in processes))
            gpus_on_one = self._take_gpus(fit, self._gpu_pick(fit, sum(g for _, g in processes)) or [])
            return Placement(on_one, gpus_on_one, (fit,) * len(processes), self.allocation.nodes[fit])
        # wider than a node: whole free nodes, nothing else runs there, processes spread evenly
        cores: tuple[int, ...] = ()
        gpus: tuple[int, ...] = ()
        for n in chosen:
            cores += self._pop(self._free_cores[n], len(self._free_cores[n]))
            gpus += self._pop(self._free_gpus[n], len(self._free_gpus[n]))
        per_node = -(-len(processes) // len(chosen))
        owners = tuple(chosen[i // per_node] for i in range(len(processes)))
        return Placement(cores, gpus, owners, self.allocation.hosts(cores))

    def _plan(self, nodes: Sequence[int], processes: Sequence[tuple[int, int]]) -> list[int] | None:
        """The node a task fits on (first fit), or the whole free nodes a task wider than a node takes;
        None when it does not fit now. Takes nothing."""
        total_cores = sum(c for c, _ in processes)
        total_gpus = sum(g for _, g in processes)
        fit = next((n for n in nodes if self._fits(n, total_cores, total_gpus)), None)
        if fit is not None:
            return [fit]
        if len(processes) == 1:
            return None  # one process cannot span nodes
        n_needed = -(-total_cores // self.cores_per_node)
        idle = [n for n in nodes if len(self._free_cores[n]) == self._node_cores[n] == self.cores_per_node]
        free_nodes = [n for n in idle if len(self._free_gpus[n]) == self._node_gpus[n]]
        chosen = free_nodes[:n_needed]
        if len(chosen) < n_needed or total_gpus > sum(self._node_gpus[n] for n in chosen):
            return None
        return chosen

    def _fits(self, node: int, n_cores: int, n_gpus: int) -> bool:
        return len(self._free_cores[node]) >= n_cores and self._gpu_pick(node, n_gpus) is not None

    def _gpu_pick(self, node: int, n: int) -> list[int] | None:
        return pick_gpu_slots(self._free_gpus[node], n, self.gpu_shares)

    def _take_gpus(self, node: int, slots: list[int]) -> tuple[int, ...]:
        stack = self._free_gpus[node]
        for g in slots:
            stack.remove(g)
        return tuple(slots)

    @staticmethod
    def _pop(stack: list[int], n: int) -> tuple[int, ...]:
        if n == 0:
            return ()
        taken = stack[-n:]
        del stack[-n:]
        return tuple(reversed(taken))


def pick_gpu_slots(free: Sequence[int], n: int, shares: int) -> list[int] | None:
    """``n`` of the ``free`` GPU slots that a task can use together: with ``shares`` slots per device, whole
    free devices for a whole-GPU request, and for a fraction, slots of one device (the fullest that has room,
    so that whole devices stay free); None when there are none."""
    if n == 0:
        return []
    if len(free) < n:
        return None
    k = shares
    if k == 1:
        return sorted(free)[:n]
    by_device: dict[int, list[int]] = {}
    for g in free:
        by_device.setdefault(g // k, []).append(g)
    whole = sorted(d for d, slots in by_device.items() if len(slots) == k)
    n_whole, part = divmod(n, k)
    if len(whole) < n_whole:
        return None
    picked = [g for d in whole[:n_whole] for g in sorted(by_device[d])]
    if part:
        rest = [(len(slots), d) for d, slots in by_device.items() if d not in whole[:n_whole] and len(slots) >= part]
        if not rest:
            return None
        _, d = min(rest)
        picked += sorted(by_device[d])[:part]
    return picked


def _describe(broker: SlotBroker) -> dict:
    """The broker's state for a stall's dump (lock held): what each view asked for and holds, what is free."""
    views = [
        {
            "runtime": v.runtime,
            "nodes": list(v.nodes) if v.nodes is not None else "all",
            "pending": v.pending,
            "wanted": [list(p) for p in v.wanted] if v.wanted else None,
            "hungry": v in broker._hungry,
            "waiting_for_slots": broker._waiting.get(v) is not None,
            "held_cores": broker._used[v.runtime],
            "could_place_now": broker._could_place(v),
            "wake_callback": v.wake is not None,
        }
        for v in broker._views
    ]
    return {
        "activity": broker.activity,
        "free_cores_per_node": [len(f) for f in broker._free_cores],
        "free_gpus_per_node": [len(f) for f in broker._free_gpus],
        "views": views,
    }


class SlotView:
    """One runtime's handle on the broker: take and give back slots, be woken when some are freed."""

    def __init__(self, broker: SlotBroker, runtime: str, nodes: tuple[int, ...] | None) -> None:
        self.broker = broker
        self.runtime = runtime
        self.nodes = nodes
        self.wake: Callable[[], None] | None = None
        self.pending = 0  # tasks left after its last pass
        self.wanted: tuple[tuple[int, int], ...] | None = None  # the processes of the smallest task it left then
        self._failed = False  # a take failed during this scheduling pass
        self._listed = False  # the broker holds a claim or a hunger for this view (cheap check for idle passes)
        self._in_pass = False
        self._freed_in_pass = False
        self._probed = False  # this pass began with nothing happened since the watchdog's probe
        self._took = False  # took slots during this pass
        self._held_off = False  # refused during this pass because another runtime's claim ranks first

    def subview(self, nodes: Iterable[int]) -> SlotView:
        """The same runtime restricted to some nodes (a Flux partition), counted under the same weight."""
        return self.broker.view(self.runtime, self.broker._weight[self.runtime], nodes)

    @property
    def node_indices(self) -> tuple[int, ...]:
        """The nodes this view may place on that hold any of the pool's slots."""
        nodes = self.nodes if self.nodes is not None else range(self.broker.n_nodes)
        return tuple(n for n in nodes if self.broker._node_cores[n])

    def node_cores(self, node: int) -> tuple[int, ...]:
        """The core slots of ``node`` that belong to the pool (all of them, or a fenced share's)."""
        first = node * self.broker.cores_per_node
        return tuple(c for c in range(first, first + self.broker.cores_per_node) if c in self.broker._members)

    def node_gpus(self, node: int) -> tuple[int, ...]:
        per = self.broker.gpus_per_node
        return tuple(g for g in range(node * per, (node + 1) * per) if g in self.broker._gpu_members)

    @property
    def n_cores(self) -> int:
        """The cores this runtime may ever use (its nodes of the pool)."""
        if self.nodes is None:
            return self.broker.capacity_cores
        return sum(self.broker._node_cores[n] for n in self.nodes)

    @property
    def n_gpus(self) -> int:
        if self.nodes is None:
            return self.broker.capacity_gpus
        return sum(self.broker._node_gpus[n] for n in self.nodes)

    @property
    def free_cores(self) -> int:
        nodes = self.nodes if self.nodes is not None else range(self.broker.n_nodes)
        return sum(len(self.broker._free_cores[n]) for n in nodes)

    def take(
        self, n_cores: int, n_gpus: int = 0, nodes: Iterable[int] | None = None
    ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Slots for one process (all on one node; on one of ``nodes`` if given), or None."""
        placement = self.place([(n_cores, n_gpus)], nodes)
        return None if placement is None else (placement.cores, placement.gpus)

    def place(self, processes: Sequence[tuple[int, int]], nodes: Iterable[int] | None = None) -> Placement | None:
        """Slots for a task of several processes ((cores, gpus) each), or None (then this view waits).
        ``nodes`` narrows the view's nodes for this task (where a runtime has an idle worker)."""
        placement = self.broker._take(self, processes, nodes)
        if placement is None:
            self._failed = self._listed = True
        return placement

    def give_back(self, cores: Sequence[int], gpus: Sequence[int] = ()) -> None:
        self.broker._give_back(self, cores, gpus)

    def schedule_pass_begins(self) -> None:
        """A pass over pending work begins: from now on this view is hungry (woken by every give-back)."""
        self._failed = False
        self._in_pass = True
        self._freed_in_pass = False
        self._listed = True
        self.broker._pass_begins(self)

    def schedule_pass_ends(
        self, still_pending: int | bool, wanted: Sequence[tuple[int, int]] | None = None, claim: bool = True
    ) -> None:
        """A runtime that no longer waits for slots (nothing pending, or nothing refused) keeps no claim;
        one with tasks it could not place keeps it, even if it placed others after them in this pass.
        ``still_pending``: how many tasks are left; ``wanted``: the (cores, gpus) of each process of the
        smallest task it skipped (what the stall watchdog checks against the free slots); ``claim``: False
        when none of the tasks it skipped could use slots now (no idle worker left, say)."""
        still_waiting = bool(still_pending) and self._failed and claim
        freed = self._freed_in_pass and bool(still_pending)
        self.pending = int(still_pending)
        self.wanted = tuple(wanted) if still_pending and wanted else None
        if still_pending or self._listed:
            self.broker._end_pass(self, still_waiting, bool(still_pending))
        self._listed = bool(still_pending)
        self._failed = self._in_pass = self._freed_in_pass = self._took = False
        if freed and self.wake is not None:
            self.wake()  # it gave slots back during this pass, after skipping tasks that may fit now


def task_processes(ranks: int, cores_per_rank: int, gpus_per_rank: int, mpi: bool) -> list[tuple[int, int]]:
    """(cores, gpus) of each process of a task: an MPI task's ranks, else one process on all of its cores."""
    if mpi:
        return [(cores_per_rank, gpus_per_rank)] * ranks
    return [(ranks * cores_per_rank, ranks * gpus_per_rank)]


def cuda_visible_devices(gpus: Sequence[int], gpus_per_node: int) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for a task holding these GPU slots: their indices on their node, "-1" (no GPU
    at all) for a task with none in an allocation that has GPUs, None where the allocation has none."""
    if not gpus_per_node:
        return None
    return ",".join(str(g % gpus_per_node) for g in gpus) or "-1"
