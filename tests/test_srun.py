"""The srun baseline backend on a real Slurm: every task one ``srun`` step in one allocation."""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import sys
import time

import pytest

from impeccable.runtime import probes
from impeccable.runtime.backends.base import TaskFailed
from impeccable.runtime.backends.srun import SrunBackend
from impeccable.runtime.bench.raw import raw_srun
from impeccable.runtime.bench import run_pilot
from impeccable.runtime.metrics import concurrency_series, slot_overlaps
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.records import TaskState
from impeccable.runtime.resources import Allocation
from impeccable.runtime.task import executable_task, function_task

from impeccable.runtime.backends.slurm_local import start as start_cluster

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
    good = executable_task([SH, "-c", 'echo "$SLURM_JOB_ID $SLURM_STEP_ID $GREETING" > out.txt'], name="good",
                           env={"GREETING": "hello"}, cwd=str(tmp_path))
    record = srun_pilot.submit(good).result(timeout=60)
    assert record.state is TaskState.DONE and record.exit_code == 0 and record.backend == "srun"
    job, step, greeting = out.read_text().split()
    assert job == srun_pilot.backends["srun"].job_id and step.isdigit() and greeting == "hello"
    assert record.submitted <= record.scheduled <= record.started <= record.finished


def test_failing_exit_code_is_failed_with_the_code(srun_pilot):
    future = srun_pilot.submit(executable_task([SH, "-c", "echo oops >&2; exit 3"], name="bad"))
    with pytest.raises(TaskFailed) as info:
        future.result(timeout=60)
    record = info.value.record
    assert record.state is TaskState.FAILED and record.exit_code == 3
    assert "exit code 3" in record.error and "oops" in record.traceback


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


def test_raising_function_fails_with_its_exception(srun_pilot):
    future = srun_pilot.submit(function_task(probes.fail, "boom", name="raiser"))
    with pytest.raises(TaskFailed) as info:
        future.result(timeout=60)
    assert isinstance(info.value.__cause__, ValueError)
    record = info.value.record
    assert record.error == "ValueError: boom" and "Traceback" in record.traceback and record.exit_code == 1


def test_function_retry_then_success(srun_pilot, tmp_path):
    future = srun_pilot.submit(function_task(probes.fail_until, str(tmp_path / "m"), 1, name="flaky", retries=1))
    assert future.result(timeout=60) == 2
    assert future.record.attempts == 2


def test_core_accounting_never_exceeds_the_share(slurm):
    cores = 6
    tasks = [executable_task([SLEEP, "0.3"], name=f"t{i}", cores_per_rank=(1, 2, 4)[i % 3]) for i in range(12)]
    tasks += [function_task(probes.sleep, 0.2, name=f"f{i}", cores_per_rank=(1, 2)[i % 2]) for i in range(6)]
    with Pilot(Allocation(cores=cores), routes={"executable": "srun", "function": "srun"}) as pilot:
        wait_all(pilot.submit_many(tasks))
    records = pilot.records
    assert all(r.state is TaskState.DONE for r in records), [r.error for r in records if r.error]
    assert slot_overlaps(records) == []
    assert all(len(r.slots) == r.cores and all(0 <= s < cores for s in r.slots) for r in records)
    assert 1 <= max(busy for _, busy in concurrency_series(records)) <= cores


def test_max_running_caps_outstanding_sruns(slurm):
    tasks = [executable_task([SLEEP, "0.4"], name=f"s{i}") for i in range(8)]
    with Pilot(Allocation(cores=8), routes={"executable": "srun"}, options={"srun": {"max_running": 2}}) as pilot:
        wait_all(pilot.submit_many(tasks))
    records = pilot.records
    assert all(r.state is TaskState.DONE for r in records)
    assert max(busy for _, busy in concurrency_series(records)) <= 2
    makespan = max(r.finished for r in records) - min(r.submitted for r in records)
    assert makespan >= 4 * 0.4  # 8 tasks, 2 at a time


def test_timeout_kills_the_step(srun_pilot):
    future = srun_pilot.submit(executable_task([SLEEP, "60"], name="slow", timeout_s=1))
    with pytest.raises(TaskFailed):
        future.result(timeout=60)
    record = future.record
    assert "timed out after 1 s" in record.error
    assert record.finished - record.started < 10


def test_cancel_running_step(srun_pilot):
    future = srun_pilot.submit(executable_task([SLEEP, "60"], name="victim"))
    deadline = time.time() + 30
    while future.record.state is not TaskState.RUNNING and time.time() < deadline:
        time.sleep(0.05)
    srun_pilot.cancel(future)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=30)
    assert future.record.state is TaskState.CANCELED


def test_mpi_task_uses_srun_ranks(srun_pilot, tmp_path):
    out = tmp_path / "ranks.txt"
    task = executable_task([SH, "-c", "echo $SLURM_PROCID"], name="mpi", mpi=True, ranks=2, stdout=str(out))
    record = srun_pilot.submit(task).result(timeout=60)
    assert record.state is TaskState.DONE and record.cores == 2
    assert sorted(out.read_text().split()) == ["0", "1"]


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


def test_unpicklable_arguments_fail_at_launch(srun_pilot):
    future = srun_pilot.submit(function_task(probes.add, lambda: 1, 2, name="unpicklable"))
    with pytest.raises(TaskFailed) as info:
        future.result(timeout=60)
    assert "cannot be pickled" in info.value.record.error


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
    done = subprocess.run(["salloc", "-n", "2", sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "inner DONE" in done.stdout
