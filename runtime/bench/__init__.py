"""Synthetic workloads through the pilot, side by side with the raw mechanism underneath.

Every run measures our pilot and the plain baselines of the same backend
(:mod:`.raw`: ``subprocess`` launches, ``multiprocessing.Pool`` with the
default and the forkserver start method, ``FluxExecutor``, Dragon's own
``Pool``, bare ``srun`` steps) on the same cores, in the same process,
interleaved ``repeat`` times, and reports medians; the ratio is to the
strongest baseline. Figures come from task records (see ``metrics``).
"""

from __future__ import annotations

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

from ..metrics import summarize
from ..pilot import Pilot
from ..resources import Allocation
from ..task import Task, TaskKind, executable_task, function_task

WORKLOADS = ("null-exec", "null-func", "sleep-exec", "sleep-func")


def null_function() -> None:
    """The null function task: measures pure dispatch cost."""
    return None


def sleep_function(duration_s: float) -> float:
    time.sleep(duration_s)
    return duration_s


def workload_kind(workload: str) -> TaskKind:
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}: choose one of {', '.join(WORKLOADS)}")
    return TaskKind.EXECUTABLE if workload.endswith("exec") else TaskKind.FUNCTION


def make_tasks(workload: str, n_tasks: int, duration_s: float = 1.0) -> list[Task]:
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
    return [template.model_copy(update={"uid": f"{workload}.{i:07d}"}) for i in range(n_tasks)]


@dataclass
class RunResult:
    metrics: dict[str, Any]
    startup_s: float
    cpu: dict[str, float]


class CpuMeter:
    """CPU time spent by this process and by its reaped children while the meter runs.

    Children are the backend's helpers (Flux brokers and their job shells, the
    Dragon runtime, ``srun``) and executables: what they cost per task tells
    whether a backend is bound by the machine's cores or by its own design.
    """

    def __enter__(self) -> "CpuMeter":
        self._wall = time.perf_counter()
        self._self = _cpu_seconds(resource.RUSAGE_SELF)
        self._children = _cpu_seconds(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.self_s = _cpu_seconds(resource.RUSAGE_SELF) - self._self
        self.children_s = _cpu_seconds(resource.RUSAGE_CHILDREN) - self._children

    def figures(self, n_tasks: int) -> dict[str, float]:
        usable = len(os.sched_getaffinity(0))
        return {
            "pilot_cpu_per_task_ms": 1e3 * self.self_s / max(n_tasks, 1),
            "child_cpu_per_task_ms": 1e3 * self.children_s / max(n_tasks, 1),
            "machine_cpu_busy": (self.self_s + self.children_s) / (self.wall_s * usable) if self.wall_s else 0.0,
        }


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_pilot(backend: str, workload: str, n_tasks: int, cores: int, duration_s: float = 1.0,
              options: Mapping[str, Mapping[str, Any]] | None = None) -> RunResult:
    """One pass of the workload through a fresh pilot; start-up is timed apart from the run.

    Backend ``hybrid`` is the reference study's Flux+Dragon set-up: half the tasks are executables and
    half functions of the same family (null or sleep), routed ``auto`` (Flux and Dragon where found).
    """
    kind = workload_kind(workload)
    if backend == "hybrid":
        family = workload.split("-")[0]
        tasks = make_tasks(f"{family}-exec", n_tasks // 2, duration_s) + \
            make_tasks(f"{family}-func", n_tasks - n_tasks // 2, duration_s)
        routes = {"executable": "auto", "function": "auto"}
    else:
        tasks = make_tasks(workload, n_tasks, duration_s)
        routes = {kind.value: backend}
    with CpuMeter() as meter:  # start-up and shutdown included: brokers are reaped at shutdown
        t0 = time.perf_counter()
        pilot = Pilot(Allocation(cores=cores), routes=routes, options=options)
        pilot.start()
        startup = time.perf_counter() - t0
        try:
            futures = pilot.submit_many(tasks)
            for future in futures:
                future.exception()  # wait; failures are counted from the records
        finally:
            pilot.shutdown()
    metrics = summarize(pilot.records, cores).to_dict()
    if len(pilot.backends) > 1:
        metrics["per_backend"] = {
            name: {**summarize([r for r in pilot.records if r.backend == name], view.n_cores).to_dict(),
                   "serves": sorted(k.value for k in pilot.backends[name].serves)}
            for name, view in pilot.slots.items()
        }
    return RunResult(metrics=metrics, startup_s=startup, cpu=meter.figures(len(tasks)))


def bench(backend: str, workload: str, n_tasks: int, cores: int, duration_s: float = 1.0, repeat: int = 3,
          options: Mapping[str, Mapping[str, Any]] | None = None, raw: bool = True) -> dict[str, Any]:
    """Median figures over ``repeat`` interleaved runs of ours and the raw baseline."""
    workload_kind(workload)
    label = workload.split("-")[0] + "-mixed" if backend == "hybrid" else workload
    from .raw import raw_baselines

    ours: list[RunResult] = []
    raws: dict[str, list[float]] = {}
    for _ in range(repeat):
        ours.append(run_pilot(backend, workload, n_tasks, cores, duration_s, options))
        if raw:
            for name, value in raw_baselines(backend, workload, n_tasks, cores, duration_s).items():
                raws.setdefault(name, []).append(value)
    keys = [k for k in ours[0].metrics if k != "per_backend"]
    med: dict[str, Any] = {k: statistics.median(r.metrics[k] for r in ours) for k in keys}
    if "per_backend" in ours[0].metrics:  # from the run with the median throughput
        ranked = sorted(ours, key=lambda r: r.metrics["throughput_tasks_per_s"])
        med["per_backend"] = ranked[len(ranked) // 2].metrics["per_backend"]
    throughput = med["throughput_tasks_per_s"]
    baselines = {name: statistics.median(values) for name, values in raws.items()}
    strongest = max(baselines, key=baselines.__getitem__) if baselines else None
    raw_median = baselines[strongest] if strongest else None
    return {
        "backend": backend,
        "workload": label,
        "tasks": n_tasks,
        "cores": cores,
        "duration_s": duration_s if workload.startswith("sleep") else 0.0,
        "repeat": repeat,
        **{k: v for k, v in med.items() if k not in ("tasks", "cores")},
        "startup_s": statistics.median(r.startup_s for r in ours),
        **{k: statistics.median(r.cpu[k] for r in ours) for k in ours[0].cpu},
        "runs_throughput_tasks_per_s": [r.metrics["throughput_tasks_per_s"] for r in ours],
        "raw_throughput_tasks_per_s": raw_median,  # the strongest baseline's median
        "raw_baseline": strongest,
        "raw_baselines_tasks_per_s": baselines,
        "ratios_to_raw": {name: throughput / value for name, value in baselines.items() if value},
        "runs_raw_throughput_tasks_per_s": raws,
        "ratio_to_raw": (throughput / raw_median) if raw_median else None,
        "machine": machine_info(),
    }


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
