"""Synthetic workloads through the pilot, side by side with the raw mechanism underneath.

Every run measures our pilot and the plain baselines of the same backend
(:mod:`.raw`: ``subprocess`` launches, ``multiprocessing.Pool`` with the
default and the forkserver start method, ``FluxExecutor``, Dragon's own
``Pool``, bare ``srun`` steps) on the same cores, in the same process,
interleaved ``repeat`` times, and reports medians; the ratio is to the
strongest baseline. Figures come from task records (see ``metrics``).
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import resource
import shutil
import socket
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..metrics import summarize, utilisation_losses
from ..pilot import Pilot
from ..resources import Allocation
from ..task import Task, TaskKind, executable_task, function_task

WORKLOADS = ("null-exec", "null-func", "sleep-exec", "sleep-func", "phased")
PHASED = "phased"  # hybrid only: a burst of executables, then a burst of functions, then both


def null_function() -> None:
    """The null function task: measures pure dispatch cost."""
    return None


def sleep_function(duration_s: float) -> float:
    time.sleep(duration_s)
    return duration_s


def workload_kind(workload: str) -> TaskKind:
    if workload not in WORKLOADS or workload == PHASED:
        raise ValueError(f"unknown workload {workload!r}: choose one of {', '.join(WORKLOADS)}")
    return TaskKind.EXECUTABLE if workload.endswith("exec") else TaskKind.FUNCTION


def workload_phases(backend: str, workload: str, n_tasks: int, duration_s: float) -> list[list[Task]]:
    """The tasks of a run, phase by phase (each phase is submitted once the previous one has ended).

    ``hybrid`` mixes executables and functions of one family (null or sleep) in one phase; ``phased``
    (hybrid only) runs a third of the tasks as executables, then a third as functions, then the rest
    as both, which is how a campaign alternates between docking and inference.
    """
    if workload == PHASED:
        if backend != "hybrid":
            raise ValueError("the phased workload alternates executables and functions: use --backend hybrid")
        third = n_tasks // 3
        both = n_tasks - 2 * third
        return [
            make_tasks("sleep-exec", third, duration_s, "phase1"),
            make_tasks("sleep-func", third, duration_s, "phase2"),
            make_tasks("sleep-exec", both // 2, duration_s, "phase3")
            + make_tasks("sleep-func", both - both // 2, duration_s, "phase3"),
        ]
    if backend == "hybrid":
        family = workload.split("-")[0]
        return [
            make_tasks(f"{family}-exec", n_tasks // 2, duration_s)
            + make_tasks(f"{family}-func", n_tasks - n_tasks // 2, duration_s)
        ]
    return [make_tasks(workload, n_tasks, duration_s)]


def make_tasks(workload: str, n_tasks: int, duration_s: float = 1.0, prefix: str = "") -> list[Task]:
    """``n_tasks`` identical one-core tasks of the workload."""
    kind = workload_kind(workload)
    if kind is TaskKind.EXECUTABLE:
        argv = [program("true")] if workload == "null-exec" else [program("sleep"), f"{duration_s:g}"]
        template = executable_task(argv, name=workload, tags={"stage": workload})
    elif workload == "null-func":
        template = function_task(null_function, name=workload, tags={"stage": workload})
    else:
        template = function_task(sleep_function, duration_s, name=workload, tags={"stage": workload})
    # copies with fresh uids, without re-validating n times
    return [template.model_copy(update={"uid": f"{prefix}{workload}.{i:07d}"}) for i in range(n_tasks)]


@dataclass
class RunResult:
    metrics: dict[str, Any]
    startup_s: float
    cpu: dict[str, float]
    stalls: list[dict[str, Any]]


class BenchStuck(RuntimeError):
    """The pilot's watchdog found a runtime that nothing can wake: the run stops with its dump."""


class CpuMeter:
    """CPU time spent by this process and by its reaped children while the meter runs.

    Children are the backend's helpers (Flux brokers and their job shells, the
    Dragon runtime, ``srun``) and executables: what they cost per task tells
    whether a backend is bound by the machine's cores or by its own design.
    """

    def __enter__(self) -> CpuMeter:
        self._wall = time.perf_counter()
        self._self = cpu_seconds(resource.RUSAGE_SELF)
        self._children = cpu_seconds(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.self_s = cpu_seconds(resource.RUSAGE_SELF) - self._self
        self.children_s = cpu_seconds(resource.RUSAGE_CHILDREN) - self._children

    def figures(self, n_tasks: int) -> dict[str, float]:
        usable = len(os.sched_getaffinity(0))
        return {
            "pilot_cpu_per_task_ms": 1e3 * self.self_s / max(n_tasks, 1),
            "child_cpu_per_task_ms": 1e3 * self.children_s / max(n_tasks, 1),
            "machine_cpu_busy": (self.self_s + self.children_s) / (self.wall_s * usable) if self.wall_s else 0.0,
        }


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (or of its reaped children), from getrusage."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_pilot(
    backend: str,
    workload: str,
    n_tasks: int,
    cores: int,
    duration_s: float = 1.0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    nodes: int = 1,
    exclusive: bool = False,
) -> RunResult:
    """One pass of the workload through a fresh pilot; start-up is timed apart from the run.

    Backend ``hybrid`` is the reference study's Flux+Dragon set-up, routed ``auto`` (Flux and Dragon
    where found); ``exclusive`` fences the cores between them instead of lending them (static shares).
    ``nodes`` emulates a multi-node allocation on this machine.
    """
    phases = workload_phases(backend, workload, n_tasks, duration_s)
    if backend == "hybrid":
        routes = {"executable": "auto", "function": "auto"}
    else:
        routes = {workload_kind(workload).value: backend}
    n = sum(len(phase) for phase in phases)
    with CpuMeter() as meter:  # start-up and shutdown included: brokers are reaped at shutdown
        t0 = time.perf_counter()
        pilot = Pilot(Allocation.emulated(cores, nodes=nodes), routes=routes, options=options, exclusive=exclusive)
        pilot.start()
        startup = time.perf_counter() - t0
        try:
            for phase in phases:
                _wait(pilot, pilot.submit_many(phase))  # failures are counted from the records
        finally:
            pilot.shutdown(cancel_pending=pilot.stuck)
    if pilot.stuck:
        raise BenchStuck("the benchmark stopped: " + "; ".join(e.describe() for e in pilot.stalls))
    metrics = summarize(pilot.records, cores).to_dict()
    metrics["losses"] = utilisation_losses(pilot.records, cores, _phase_of)
    if len(pilot.backends) > 1:
        metrics["per_backend"] = {
            name: {
                **summarize([r for r in pilot.records if r.backend == name], view.n_cores).to_dict(),
                "serves": sorted(k.value for k in pilot.backends[name].serves),
            }
            for name, view in pilot.slots.items()
        }
    return RunResult(
        metrics=metrics, startup_s=startup, cpu=meter.figures(n), stalls=[e.to_dict() for e in pilot.stalls]
    )


def _phase_of(record: Any) -> str:
    """A phased workload's uids start with their phase ("phase2sleep-func.0000007")."""
    return record.uid.split("sleep")[0] if record.uid.startswith("phase") else ""


def _wait(pilot: Pilot, futures: list[Any]) -> None:
    """Until every future is done, or the watchdog says the pilot is stuck (then never hang: stop)."""
    pending = set(futures)
    while pending and not pilot.stuck:
        _, pending = concurrent.futures.wait(pending, timeout=1.0)


def bench(
    backend: str,
    workload: str,
    n_tasks: int,
    cores: int,
    duration_s: float = 1.0,
    repeat: int = 3,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    raw: bool = True,
    nodes: int = 1,
    exclusive: bool = False,
    static: bool = False,
) -> dict[str, Any]:
    """Median figures over ``repeat`` interleaved runs of ours and the raw baselines.

    ``static`` (``hybrid`` with the ``phased`` workload) also runs static shares (``exclusive``),
    interleaved in the same invocation: the figures are the lent run's, and ``static`` holds the
    fenced run's.
    """
    from .raw import raw_baselines

    workload_phases(backend, workload, 3, duration_s)  # validates the pair
    compare_static = static and backend == "hybrid" and workload == PHASED and not exclusive
    ours: list[RunResult] = []
    static_runs: list[RunResult] = []  # the fenced runs (compare_static)
    raws: dict[str, list[float]] = {}
    for _ in range(repeat):
        ours.append(run_pilot(backend, workload, n_tasks, cores, duration_s, options, nodes, exclusive))
        if compare_static:
            static_runs.append(run_pilot(backend, workload, n_tasks, cores, duration_s, options, nodes, True))
        if raw and backend != "hybrid":
            for name, value in raw_baselines(backend, workload, n_tasks, cores, duration_s).items():
                raws.setdefault(name, []).append(value)
    med = _medians(ours)
    throughput = med["throughput_tasks_per_s"]
    baselines = {name: statistics.median(values) for name, values in raws.items()}
    strongest = max(baselines, key=baselines.__getitem__) if baselines else None
    raw_median = baselines[strongest] if strongest else None
    label = workload if workload == PHASED or backend != "hybrid" else workload.split("-")[0] + "-mixed"
    return {
        "backend": backend,
        "workload": label,
        "tasks": n_tasks,
        "cores": cores,
        "nodes": nodes,
        "sharing": "static shares (exclusive)" if exclusive else "one pool, cores lent",
        "duration_s": duration_s if workload.startswith("sleep") or workload == PHASED else 0.0,
        "repeat": repeat,
        **{k: v for k, v in med.items() if k not in ("tasks", "cores")},
        "startup_s": statistics.median(r.startup_s for r in ours),
        **{k: statistics.median(r.cpu[k] for r in ours) for k in ours[0].cpu},
        "runs_throughput_tasks_per_s": [r.metrics["throughput_tasks_per_s"] for r in ours],
        "runs_utilization": [r.metrics["utilization"] for r in ours],
        "static": (
            {**_medians(static_runs), "runs_utilization": [r.metrics["utilization"] for r in static_runs]}
            if static_runs
            else None
        ),
        "raw_throughput_tasks_per_s": raw_median,  # the strongest baseline's median
        "raw_baseline": strongest,
        "raw_baselines_tasks_per_s": baselines,
        "ratios_to_raw": {name: throughput / value for name, value in baselines.items() if value},
        "runs_raw_throughput_tasks_per_s": raws,
        "ratio_to_raw": (throughput / raw_median) if raw_median else None,
        "stall_events": [event for run in ours + static_runs for event in run.stalls],
        "machine": machine_info(),
    }


def _median(values: list[Any]) -> Any:
    """The median of the runs that have the figure (a GPU figure is None on a machine without GPUs)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _medians(runs: list[RunResult]) -> dict[str, Any]:
    if not runs:
        return {}
    keys = [k for k in runs[0].metrics if k not in ("per_backend", "losses")]
    med: dict[str, Any] = {k: _median([r.metrics[k] for r in runs]) for k in keys}
    ranked = sorted(runs, key=lambda r: r.metrics["throughput_tasks_per_s"])
    for key in ("per_backend", "losses"):  # from the run with the median throughput
        if key in runs[0].metrics:
            med[key] = ranked[len(ranked) // 2].metrics[key]
    return med


def machine_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"the benchmark needs {name!r} on PATH")
    return found
