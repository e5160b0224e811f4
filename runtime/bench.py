"""Synthetic workloads through the pilot, side by side with the raw mechanism underneath.

Every run measures our pilot and the plain baseline (``subprocess`` launches,
a plain ``multiprocessing.Pool``; for other backends, their own raw API) on
the same cores, in the same process, interleaved ``repeat`` times, and
reports medians. Figures come from task records (see ``metrics``).

A backend module may define ``raw_throughput(workload, n_tasks, cores, duration_s) -> float``
to provide its own baseline; the local one is here.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .metrics import summarize
from .pilot import Pilot
from .resources import Allocation
from .task import Task, TaskKind, executable_task, function_task

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
        argv = [_program("true")] if workload == "null-exec" else [_program("sleep"), f"{duration_s:g}"]
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
            name: {**summarize([r for r in pilot.records if r.backend == name], share.n_cores).to_dict(),
                   "serves": sorted(k.value for k in pilot.backends[name].serves)}
            for name, share in pilot.shares.items()
        }
    return RunResult(metrics=metrics, startup_s=startup, cpu=meter.figures(len(tasks)))


def raw_throughput(backend: str, workload: str, n_tasks: int, cores: int, duration_s: float) -> float | None:
    """Tasks/s of the backend's own plain mechanism, or None if it has none."""
    if backend == "hybrid":
        return None  # each half has its own baseline: bench flux and dragon separately
    if backend == "local":
        return raw_local_throughput(workload, n_tasks, cores, duration_s)
    module = importlib.import_module(f"impeccable.runtime.backends.{backend}")
    measure: Callable[..., float] | None = getattr(module, "raw_throughput", None)
    return measure(workload, n_tasks, cores, duration_s) if measure else None


def raw_local_throughput(workload: str, n_tasks: int, cores: int, duration_s: float) -> float:
    """Plain ``subprocess.Popen`` with ``cores`` children at a time, or a plain ``multiprocessing.Pool``."""
    if workload_kind(workload) is TaskKind.EXECUTABLE:
        argv = [_program("true")] if workload == "null-exec" else [_program("sleep"), f"{duration_s:g}"]
        return _raw_subprocess(argv, n_tasks, cores)
    fn, args = (null_function, ()) if workload == "null-func" else (sleep_function, (duration_s,))
    with multiprocessing.get_context("forkserver").Pool(cores) as pool:
        pool.apply(null_function)  # warm: workers up before the clock starts, as our pilot's are
        t0 = time.perf_counter()
        results = [pool.apply_async(fn, args) for _ in range(n_tasks)]
        for r in results:
            r.get()
        return n_tasks / (time.perf_counter() - t0)


def _raw_subprocess(argv: list[str], n_tasks: int, cores: int) -> float:
    running: dict[int, subprocess.Popen] = {}
    launched = 0
    t0 = time.perf_counter()
    while launched < n_tasks or running:
        while launched < n_tasks and len(running) < cores:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            running[p.pid] = p
            launched += 1
        pid, status = os.wait()
        p = running.pop(pid, None)
        if p is not None:
            p.returncode = os.waitstatus_to_exitcode(status)
            p.stderr.close()  # type: ignore[union-attr]
    return n_tasks / (time.perf_counter() - t0)


def bench(backend: str, workload: str, n_tasks: int, cores: int, duration_s: float = 1.0, repeat: int = 3,
          options: Mapping[str, Mapping[str, Any]] | None = None, raw: bool = True) -> dict[str, Any]:
    """Median figures over ``repeat`` interleaved runs of ours and the raw baseline."""
    workload_kind(workload)
    label = workload.split("-")[0] + "-mixed" if backend == "hybrid" else workload
    ours: list[RunResult] = []
    raws: list[float] = []
    for _ in range(repeat):
        ours.append(run_pilot(backend, workload, n_tasks, cores, duration_s, options))
        if raw:
            value = raw_throughput(backend, workload, n_tasks, cores, duration_s)
            if value is not None:
                raws.append(value)
    keys = [k for k in ours[0].metrics if k != "per_backend"]
    med: dict[str, Any] = {k: statistics.median(r.metrics[k] for r in ours) for k in keys}
    if "per_backend" in ours[0].metrics:  # from the run with the median throughput
        ranked = sorted(ours, key=lambda r: r.metrics["throughput_tasks_per_s"])
        med["per_backend"] = ranked[len(ranked) // 2].metrics["per_backend"]
    throughput = med["throughput_tasks_per_s"]
    raw_median = statistics.median(raws) if raws else None
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
        "raw_throughput_tasks_per_s": raw_median,
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


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"the benchmark needs {name!r} on PATH")
    return found
