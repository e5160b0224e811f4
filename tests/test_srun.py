"""The srun baseline backend on a real Slurm: every task one ``srun`` step in one allocation."""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import sys
import time

import pytest

from impeccable.runtime import probes
from impeccable.runtime.backends.slurm.local import start as start_cluster
from impeccable.runtime.backends.slurm.srun import SrunBackend
from impeccable.runtime.bench import run_pilot
from impeccable.runtime.bench.raw import raw_srun
from impeccable.runtime.metrics import concurrency_series
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.records import TaskState
from impeccable.runtime.resources import Allocation
from impeccable.runtime.task import executable_task, function_task

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SH = shutil.which("sh")
SLEEP = shutil.which("sleep")
TRUE = shutil.which("true")


@pytest.fixture(scope="session")
def slurm():
    cluster = start_cluster()
    if not cluster.ok:
        pytest.skip(f"no Slurm cluster: {cluster.reason}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def srun_pilot(slurm):
    """A started srun pilot on 4 cores (its own salloc allocation), shut down after the test."""
    pilot = Pilot(Allocation(cores=4), routes={"executable": "srun", "function": "srun"})
    pilot.start()
    try:
        yield pilot
    finally:
        pilot.shutdown(cancel_pending=True)


def wait_all(futures, timeout=120):
    done, not_done = concurrent.futures.wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} tasks still running after {timeout} s"


def slurm_jobs() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_not_available_without_srun(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    ok, why = SrunBackend.available()
    assert not ok and "srun is not on PATH" in why


def test_executables_done_with_exit_codes(srun_pilot, tmp_path):
    out = tmp_path / "out.txt"
    good = executable_task(
        [SH, "-c", 'echo "$SLURM_JOB_ID $SLURM_STEP_ID $GREETING" > out.txt'],
        name="good",
        env={"GREETING": "hello"},
        cwd=str(tmp_path),
    )
    record = srun_pilot.submit(good).result(timeout=60)
    assert record.state is TaskState.DONE and record.exit_code == 0 and record.backend == "srun"
    job, step, greeting = out.read_text().split()
    assert job == srun_pilot.backends["srun"].job_id and step.isdigit() and greeting == "hello"
    assert record.submitted <= record.scheduled <= record.started <= record.finished


def test_function_tasks_return_results_via_python_m(srun_pilot, tmp_path):
    futures = [srun_pilot.submit(function_task(probes.add, i, 1, name=f"add{i}")) for i in range(6)]
    futures.append(srun_pilot.submit(function_task(probes.env_value, "SLURM_STEP_ID", name="step")))
    wait_all(futures)
    assert [f.result() for f in futures[:6]] == [i + 1 for i in range(6)]
    assert futures[-1].result().isdigit()  # it ran inside a Slurm step
    records = [f.record for f in futures]
    assert all(r.state is TaskState.DONE and r.exit_code == 0 for r in records)
    # the function's own start is recorded, after srun's launch
    assert all(r.scheduled <= r.started <= r.finished for r in records)


def test_max_running_caps_outstanding_sruns(slurm):
    tasks = [executable_task([SLEEP, "0.4"], name=f"s{i}") for i in range(8)]
    with Pilot(Allocation(cores=8), routes={"executable": "srun"}, options={"srun": {"max_running": 2}}) as pilot:
        wait_all(pilot.submit_many(tasks))
    records = pilot.records
    assert all(r.state is TaskState.DONE for r in records)
    assert max(busy for _, busy in concurrency_series(records)) <= 2
    makespan = max(r.finished for r in records) - min(r.submitted for r in records)
    assert makespan >= 4 * 0.4  # 8 tasks, 2 at a time


def test_allocation_is_released_at_shutdown(slurm):
    pilot = Pilot(Allocation(cores=2), routes={"executable": "srun"})
    pilot.start()
    job_id = pilot.backends["srun"].job_id
    assert job_id in slurm_jobs()
    pilot.submit(executable_task([TRUE])).result(timeout=60)
    pilot.shutdown()
    deadline = time.time() + 10
    while job_id in slurm_jobs() and time.time() < deadline:
        time.sleep(0.1)
    assert job_id not in slurm_jobs()


def test_bench_style_run_of_null_tasks(slurm):
    result = run_pilot("srun", "null-exec", 50, cores=16)
    metrics = result.metrics
    assert metrics["done"] == 50 and metrics["failed"] == 0
    assert metrics["peak_busy_cores"] <= 16 and metrics["throughput_tasks_per_s"] > 0
    assert raw_srun("null-exec", 20, 4, 0.0) > 0


def test_runs_inside_an_existing_allocation(slurm, tmp_path):
    """With SLURM_JOB_ID set (a batch script's case), steps go into that job and no salloc is made."""
    script = tmp_path / "inner.py"
    script.write_text(
        "import os\n"
        "from impeccable.runtime.pilot import Pilot\n"
        "from impeccable.runtime.task import executable_task\n"
        "with Pilot(2, routes={'executable': 'srun'}) as pilot:\n"
        "    record = pilot.submit(executable_task(['true'])).result(timeout=60)\n"
        "    assert pilot.backends['srun'].job_id == os.environ['SLURM_JOB_ID']\n"
        "print('inner', record.state.value, os.environ['SLURM_JOB_ID'])\n"
    )
    done = subprocess.run(
        ["salloc", "-n", "2", sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "inner DONE" in done.stdout
