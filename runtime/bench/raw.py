"""The raw mechanisms underneath each backend, timed on the same workload: the baselines of ``impeccable bench``.

Each function returns tasks/s of a plain loop with nothing of ours in it (no
records, no slot accounting, no stderr capture), start-up excluded:

- local executables: ``subprocess.Popen``, ``cores`` children at a time;
- local functions: ``multiprocessing.Pool.apply_async`` with the default start
  method (fork on Linux) and with forkserver (what our workers use): both are
  reported, and the ratio is quoted against the stronger;
- flux: ``flux.job.FluxExecutor`` on a fresh instance advertising ``cores``;
- dragon: Dragon's own ``multiprocessing.Pool`` (start method "dragon");
- srun: bare ``srun --exact -n1 -c1`` steps, ``cores`` at a time, in one allocation.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..task import TaskKind
from . import null_function, program, sleep_function, workload_kind


def raw_baselines(backend: str, workload: str, n_tasks: int, cores: int, duration_s: float) -> dict[str, float]:
    """Baseline name -> tasks/s for this backend and workload ({} where there is none, e.g. hybrid)."""
    kind = workload_kind(workload)
    if backend == "local":
        if kind is TaskKind.EXECUTABLE:
            return {"subprocess.Popen": raw_subprocess(_argv(workload, duration_s), n_tasks, cores)}
        return {
            f"Pool ({method})": raw_pool(method, workload, n_tasks, cores, duration_s)
            for method in ("fork", "forkserver")
        }
    if backend == "flux":
        _require(kind, TaskKind.EXECUTABLE, backend, workload)
        return {"FluxExecutor": raw_flux(workload, n_tasks, cores, duration_s)}
    if backend == "dragon":
        _require(kind, TaskKind.FUNCTION, backend, workload)
        return {"Dragon Pool": raw_dragon(workload, n_tasks, cores, duration_s)}
    if backend == "srun":
        return {"srun steps": raw_srun(workload, n_tasks, cores, duration_s)}
    return {}


def raw_subprocess(argv: list[str], n_tasks: int, cores: int) -> float:
    running: dict[int, subprocess.Popen] = {}
    launched = 0
    t0 = time.perf_counter()
    while launched < n_tasks or running:
        while launched < n_tasks and len(running) < cores:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            running[p.pid] = p
            launched += 1
        pid, status = os.wait()
        ended = running.pop(pid, None)
        if ended is not None:
            ended.returncode = os.waitstatus_to_exitcode(status)
            ended.stderr.close()  # type: ignore[union-attr]
    return n_tasks / (time.perf_counter() - t0)


def raw_pool(method: str, workload: str, n_tasks: int, cores: int, duration_s: float) -> float:
    """A plain ``multiprocessing.Pool`` of ``cores`` workers, started (and warm) before the clock."""
    fn, args = (null_function, ()) if workload == "null-func" else (sleep_function, (duration_s,))
    with multiprocessing.get_context(method).Pool(cores) as pool:
        pool.apply(null_function)  # warm: workers up before the clock starts, as our pilot's are
        t0 = time.perf_counter()
        results = [pool.apply_async(fn, args) for _ in range(n_tasks)]
        for r in results:
            r.get()
        return n_tasks / (time.perf_counter() - t0)


def raw_flux(workload: str, n_tasks: int, cores: int, duration_s: float) -> float:
    """Plain ``FluxExecutor`` submissions, timed from the first submit to the last result."""
    from ..backends.flux.instance import FluxInstance, import_flux

    flux = import_flux()
    argv = _argv(workload, duration_s)
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="impeccable-flux-raw-") as tmp:
        instance = FluxInstance("raw", range(cores))
        try:
            instance.launch(tmp)
            uri = instance.read_uri(time.monotonic() + 60)
            with flux.job.FluxExecutor(handle_kwargs={"url": uri}) as executor:
                t0 = time.perf_counter()
                futures = []
                for _ in range(n_tasks):
                    jobspec = flux.job.JobspecV1.from_command(argv)
                    jobspec.environment = env
                    jobspec.cwd = os.getcwd()
                    futures.append(executor.submit(jobspec))
                for future in futures:
                    future.result()
                elapsed = time.perf_counter() - t0
        finally:
            instance.close()
    return n_tasks / elapsed


DRAGON_SCRIPT = """
import sys, time, multiprocessing
import dragon
from impeccable.runtime.bench import null_function, sleep_function

if __name__ == "__main__":
    multiprocessing.set_start_method("dragon")
    workload, n, cores, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    fn, args = (null_function, ()) if workload == "null-func" else (sleep_function, (duration,))
    with multiprocessing.Pool(cores) as pool:
        pool.apply(null_function)  # workers up before the clock starts
        t0 = time.perf_counter()
        results = [pool.apply_async(fn, args) for _ in range(n)]
        for r in results:
            r.get()
        elapsed = time.perf_counter() - t0
    print(f"RAW_TASKS_PER_S {n / elapsed}", flush=True)
"""


def raw_dragon(workload: str, n_tasks: int, cores: int, duration_s: float) -> float:
    """Dragon's own ``multiprocessing.Pool.apply_async`` in a fresh runtime; only submit-and-wait is timed."""
    from ..backends.dragon.backend import NOT_INSTALLED, find_launcher, launcher_argv, launcher_env

    launcher = find_launcher()
    if launcher is None:
        raise RuntimeError(NOT_INSTALLED)
    with tempfile.TemporaryDirectory(prefix="impeccable-dragon-raw-") as directory:
        script = os.path.join(directory, "raw_pool.py")
        Path(script).write_text(DRAGON_SCRIPT)
        argv = launcher_argv(launcher, [], script, workload, str(n_tasks), str(cores), repr(duration_s))
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=launcher_env(launcher),
            cwd=directory,
            process_group=0,
        )
    for line in done.stdout.splitlines():
        if line.startswith("RAW_TASKS_PER_S "):
            return float(line.split()[1])
    tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-10:])
    raise RuntimeError(f"raw Dragon Pool run failed (exit {done.returncode}): {tail}")


def raw_srun(workload: str, n_tasks: int, cores: int, duration_s: float) -> float:
    """Plain srun steps, ``cores`` at a time, in one allocation: the script-based baseline.

    Executables: ``srun --jobid=J --exact -n1 -c1 -Q ARGV``. Functions: the same step
    running ``python -c`` that imports and calls the benchmark function. The allocation
    is requested before the clock starts (or SLURM_JOB_ID reused).
    """
    from ..backends.slurm.srun import SlurmAllocation

    if workload_kind(workload) is TaskKind.EXECUTABLE:
        body = _argv(workload, duration_s)
    else:
        call = "null_function()" if workload == "null-func" else f"sleep_function({duration_s!r})"
        body = [sys.executable, "-c", f"from impeccable.runtime.bench import null_function, sleep_function; {call}"]
    with SlurmAllocation(cores) as job_id:
        argv = [shutil.which("srun") or "srun", f"--jobid={job_id}", "--exact", "-n", "1", "-c", "1", "-Q", *body]
        return raw_subprocess(argv, n_tasks, cores)


def _argv(workload: str, duration_s: float) -> list[str]:
    return [program("true")] if workload == "null-exec" else [program("sleep"), f"{duration_s:g}"]


def _require(kind: TaskKind, wanted: TaskKind, backend: str, workload: str) -> None:
    if kind is not wanted:
        raise ValueError(f"the {backend} backend runs {wanted.value} workloads only, not {workload!r}")
