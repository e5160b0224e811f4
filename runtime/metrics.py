"""Throughput, utilisation, makespan and latencies, computed from task records alone.

Definitions (all times wall-clock seconds):
- makespan: first ``submitted`` to last ``finished``.
- throughput (overall): finished tasks / makespan.
- throughput (steady state): tasks finishing between the 10th and 90th
  percentile of finish times, divided by that interval; it leaves out the
  ramp-up and the tail.
- utilisation: busy core-seconds / (cores x makespan), where a task is busy
  from ``started`` to ``finished`` on the core slots it held (its ``cores``,
  or more: an MPI task wider than a node holds its nodes whole).
- GPU utilisation: busy GPU-seconds / (GPUs x makespan), the same for the GPU
  slots a task held, counted in devices (``gpu_shares`` slots per device).
  It says how long the GPUs were held, not how hard their cores worked.
- queue wait: ``scheduled - submitted``; launch overhead: ``started - scheduled``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .records import TaskRecord, TaskState


@dataclass(frozen=True)
class Metrics:
    tasks: int
    done: int
    failed: int
    canceled: int
    cores: int
    makespan_s: float
    throughput_tasks_per_s: float
    steady_throughput_tasks_per_s: float
    utilization: float
    peak_busy_cores: int
    queue_wait_median_s: float
    queue_wait_p95_s: float
    launch_overhead_median_s: float
    launch_overhead_p95_s: float
    runtime_median_s: float
    busy_core_s: float
    gpus: float = 0  # devices
    busy_gpu_s: float = 0.0
    gpu_utilization: float | None = None  # None without GPUs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(records: Sequence[TaskRecord], cores: int, gpus: int = 0, gpu_shares: int = 1) -> Metrics:
    """All figures for one set of records run on ``cores`` cores and ``gpus`` GPU slots (``gpu_shares`` per device)."""
    ran = [r for r in records if r.started is not None and r.finished is not None]
    finished = [r for r in records if r.finished is not None]
    submitted = [r.submitted for r in records if r.submitted is not None]
    makespan = (max(r.finished for r in finished) - min(submitted)) if finished and submitted else 0.0  # type: ignore[type-var,operator]
    done = sum(1 for r in records if r.state is TaskState.DONE)
    busy = sum(held(r) * (r.finished - r.started) for r in ran)  # type: ignore[operator,misc]
    queue_waits = [r.scheduled - r.submitted for r in records if r.scheduled is not None and r.submitted is not None]
    launches = [r.started - r.scheduled for r in ran if r.scheduled is not None]  # type: ignore[operator]
    runtimes = [r.finished - r.started for r in ran]  # type: ignore[operator]
    return Metrics(
        tasks=len(records),
        done=done,
        failed=sum(1 for r in records if r.state is TaskState.FAILED),
        canceled=sum(1 for r in records if r.state is TaskState.CANCELED),
        cores=cores,
        makespan_s=makespan,
        throughput_tasks_per_s=len(finished) / makespan if makespan > 0 else 0.0,
        steady_throughput_tasks_per_s=steady_throughput([r.finished for r in finished]),  # type: ignore[misc]
        utilization=busy / (cores * makespan) if makespan > 0 and cores else 0.0,
        peak_busy_cores=max((c for _, c in concurrency_series(records)), default=0),
        queue_wait_median_s=_median(queue_waits),
        queue_wait_p95_s=_percentile(queue_waits, 95),
        launch_overhead_median_s=_median(launches),
        launch_overhead_p95_s=_percentile(launches, 95),
        runtime_median_s=_median(runtimes),
        busy_core_s=busy,
        **_gpu_figures(ran, makespan, gpus, gpu_shares),
    )


def per_node_utilization(records: Sequence[TaskRecord], nodes: Sequence[str], cores: int) -> dict[str, float]:
    """Each node's busy core-seconds (from the slots its tasks held there) over its cores times the makespan of
    all ``records``: where the whole run's utilisation was lost. Slot i is on node i // (cores / nodes)."""
    finished = [r.finished for r in records if r.finished is not None]
    submitted = [r.submitted for r in records if r.submitted is not None]
    makespan = max(finished) - min(submitted) if finished and submitted else 0.0
    per_node = cores // len(nodes) if nodes else 0
    busy = [0.0] * len(nodes)
    for r in records:
        if r.started is not None and r.finished is not None:
            for slot in r.slots:
                if slot // per_node < len(nodes):
                    busy[slot // per_node] += r.finished - r.started
    return {name: (b / (per_node * makespan) if makespan > 0 and per_node else 0.0) for name, b in zip(nodes, busy)}


def _gpu_figures(ran: Sequence[TaskRecord], makespan: float, gpus: int, gpu_shares: int) -> dict[str, Any]:
    devices = gpus / gpu_shares
    busy = sum(held_gpus(r) * (r.finished - r.started) for r in ran) / gpu_shares  # type: ignore[operator,misc]
    return {
        "gpus": devices,
        "busy_gpu_s": busy,
        "gpu_utilization": busy / (devices * makespan) if devices and makespan > 0 else None,
    }


def held_gpus(record: TaskRecord) -> int:
    """GPU slots a task held (records written before GPU slots were kept: the ones it asked for)."""
    return max(len(record.gpu_slots), record.gpus)


def held(record: TaskRecord) -> int:
    """Core slots a task held: its cores, or more when it was given more (whole nodes for a wide MPI task)."""
    return max(len(record.slots), record.cores)


def steady_throughput(finish_times: Iterable[float], low: float = 10, high: float = 90) -> float:
    """Tasks per second between the ``low`` and ``high`` percentiles of finish times."""
    times = sorted(finish_times)
    if len(times) < 10:
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        return (len(times) - 1) / span if span > 0 else 0.0
    i, j = int(len(times) * low / 100), int(len(times) * high / 100) - 1
    span = times[j] - times[i]
    return (j - i) / span if span > 0 else 0.0


def concurrency_series(records: Iterable[TaskRecord]) -> list[tuple[float, int]]:
    """(time, busy cores) after every start and finish, in time order."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.started is not None and r.finished is not None:
            events.append((r.started, held(r)))
            events.append((r.finished, -held(r)))
    events.sort(key=lambda e: (e[0], e[1]))  # at equal times, finishes first
    busy, series = 0, []
    for when, delta in events:
        busy += delta
        series.append((when, busy))
    return series


def slot_overlaps(records: Iterable[TaskRecord]) -> list[tuple[int, str, str]]:
    """(slot, uid, uid) for every pair of tasks that held the same core slot at the same time.

    An empty list is the proof that core accounting held.
    """
    by_slot: dict[int, list[tuple[float, float, str]]] = {}
    for r in records:
        if r.started is None or r.finished is None:
            continue
        for slot in r.slots:
            by_slot.setdefault(slot, []).append((r.started, r.finished, r.uid))
    clashes = []
    for slot, spans in by_slot.items():
        spans.sort()
        for (_s1, f1, u1), (s2, _f2, u2) in zip(spans, spans[1:]):
            if s2 < f1:
                clashes.append((slot, u1, u2))
    return clashes


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def utilisation_losses(
    records: Sequence[TaskRecord], cores: int, phase_of: Callable[[TaskRecord], str] = lambda r: ""
) -> dict[str, float]:
    """Where a run's core-seconds went, as fractions of ``cores x makespan`` (they add up to 1).

    ``busy`` is the utilisation; ``launching``: slots held between ``scheduled`` and ``started`` (a
    launcher's overhead); the rest is slots no task held, by when: ``phase_tail`` after a phase's last
    task was placed until its last one ended (the last wave drains), ``between_phases`` from then until
    the next phase's first task was placed (the caller's submission, then admission), ``waiting`` any
    other time (slots idle while tasks of the phase waited: ramp-up or a scheduler's delay). Phases
    (``phase_of``) are taken in the order of their first submission.
    """
    ran = [r for r in records if r.scheduled is not None and r.started is not None and r.finished is not None]
    if not ran:
        return {}
    t0 = min(r.submitted for r in records if r.submitted is not None)
    t1: float = max(r.finished for r in ran)  # type: ignore[type-var,assignment]
    capacity = cores * (t1 - t0)
    if capacity <= 0:
        return {}
    busy = sum(held(r) * (r.finished - r.started) for r in ran)  # type: ignore[operator,misc]
    launching = sum(held(r) * (r.started - r.scheduled) for r in ran)  # type: ignore[operator,misc]
    phases: dict[str, list[TaskRecord]] = {}
    for r in sorted(ran, key=lambda r: r.submitted or 0.0):
        phases.setdefault(phase_of(r), []).append(r)
    windows: list[tuple[float, float, str]] = []  # (from, to, category) of the phases' tails and gaps
    spans: list[tuple[float, float, float]] = [
        (max(r.scheduled for r in rs), max(r.finished for r in rs), min(r.scheduled for r in rs))  # type: ignore[type-var,misc]
        for rs in phases.values()
    ]
    for i, (last_placed, last_finished, _) in enumerate(spans):
        windows.append((last_placed, last_finished, "phase_tail"))
        if i + 1 < len(spans):
            windows.append((last_finished, spans[i + 1][2], "between_phases"))
    idle = {"phase_tail": 0.0, "between_phases": 0.0, "waiting": 0.0}
    marks = [(r.scheduled, held(r)) for r in ran] + [(r.finished, -held(r)) for r in ran]
    events: list[tuple[float, int]] = sorted(marks)  # type: ignore[arg-type]
    holding, last = 0, t0
    for when, delta in [*events, (t1, 0)]:
        _add_idle(idle, windows, last, when, cores - holding)
        holding += delta
        last = when
    out = {"busy": busy / capacity, "launching": launching / capacity}
    out.update({k: v / capacity for k, v in idle.items()})
    return out


def _add_idle(
    idle: dict[str, float], windows: list[tuple[float, float, str]], start: float, end: float, free: int
) -> None:
    """Charge ``free`` idle slots over [start, end) to the windows it overlaps, the rest to ``waiting``."""
    if end <= start or free <= 0:
        return
    covered = 0.0
    for lo, hi, category in windows:
        overlap = min(end, hi) - max(start, lo)
        if overlap > 0:
            idle[category] += free * overlap
            covered += overlap
    idle["waiting"] += free * max(0.0, (end - start) - covered)
