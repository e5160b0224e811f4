"""The contract every backend keeps, run against each one available here (as CPython's
test_concurrent_futures runs one suite against every executor).

Each scenario runs on every backend that serves its task kind; a backend that
is not installed here skips with the reason. Flux and srun start real
instances and a real single-node Slurm, so they are slow tests.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
import time

import pytest

from impeccable.runtime import (
    Allocation,
    Pilot,
    TaskFailed,
    TaskKind,
    TaskState,
    executable_task,
    function_task,
    probes,
)
from impeccable.runtime.backends import backend_class
from impeccable.runtime.metrics import concurrency_series, slot_overlaps

SH = shutil.which("sh")
SLEEP = shutil.which("sleep")
CORES = 4
ROUTES = {
    "local": {"executable": "local", "function": "local"},
    "dragon": {"function": "dragon"},
    "flux": {"executable": "flux"},
    "srun": {"executable": "srun", "function": "srun"},
}
BACKENDS = [
    "local",
    pytest.param("dragon", marks=pytest.mark.dragon),
    pytest.param("flux", marks=[pytest.mark.flux, pytest.mark.slow]),
    pytest.param("srun", marks=[pytest.mark.slurm, pytest.mark.slow]),
]


@pytest.fixture(scope="module", params=BACKENDS)
def pilot(request):
    """A started pilot of CORES cores on one backend, shared by the scenarios of this module."""
    name = request.param
    ok, why = backend_class(name).available()
    cluster = None
    if name == "srun" and not ok:
        from impeccable.runtime.backends.slurm.local import start

        cluster = start()
        ok, why = cluster.ok, cluster.reason
    if not ok:
        pytest.skip(f"{name} backend unavailable: {why}")
    options = {"flux": {"use_existing": False}}  # a fresh instance even when the tests run inside Flux
    p = Pilot(Allocation(cores=CORES), routes=ROUTES[name], options=options).start()
    try:
        yield p
    finally:
        p.shutdown(cancel_pending=True)
        if cluster is not None:
            cluster.stop()


def serves(pilot: Pilot, kind: TaskKind) -> None:
    if kind not in pilot.routes:
        pytest.skip(f"{next(iter(pilot.backends))} does not run {kind.value} tasks")


def wait_all(futures, timeout=600):
    """A safety net, not a timing: on a loaded 2-core machine 24 srun steps (12 of them `python -m` function
    starts with their imports) took over 120 s."""
    done, not_done = concurrent.futures.wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} tasks not final after {timeout} s"


def wait_placed(future, timeout=60):
    deadline = time.time() + timeout
    while future.record.scheduled is None:
        assert time.time() < deadline, "the task was never given slots"
        time.sleep(0.02)


# ------------------------------------------------------------------ executables
def test_executable_runs_with_its_environment_cwd_and_output(pilot, tmp_path):
    serves(pilot, TaskKind.EXECUTABLE)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    task = executable_task(
        [SH, "-c", 'echo "$GREETING $OMP_NUM_THREADS $(pwd)"; echo oops >&2'],
        name="env",
        env={"GREETING": "hello"},
        cwd=str(tmp_path),
        cores_per_rank=2,
        stdout=str(out),
        stderr=str(err),
    )
    record = pilot.submit(task).result(timeout=120)
    assert record.state is TaskState.DONE and record.exit_code == 0 and len(record.slots) == 2
    assert record.submitted <= record.scheduled <= record.started <= record.finished
    assert out.read_text().split() == ["hello", "2", str(tmp_path)]
    assert err.read_text().strip() == "oops"


def test_failing_executable_keeps_exit_code_and_stderr(pilot):
    serves(pilot, TaskKind.EXECUTABLE)
    bad = pilot.submit(executable_task([SH, "-c", "echo bad thing >&2; exit 3"], name="bad"))
    good = pilot.submit(executable_task([SH, "-c", "exit 0"], name="good"))
    with pytest.raises(TaskFailed, match=r"'bad' failed: exit code 3; stderr: "):
        bad.result(timeout=120)
    assert bad.record.state is TaskState.FAILED and bad.record.exit_code == 3
    assert "bad thing" in bad.record.traceback  # the stderr tail (srun may add its own last line)
    assert good.result(timeout=120).state is TaskState.DONE


@pytest.mark.parametrize("retries", [0, 2])
def test_executable_retries_exactly_as_configured(pilot, tmp_path, retries):
    serves(pilot, TaskKind.EXECUTABLE)
    counter = tmp_path / "attempts"
    future = pilot.submit(executable_task([SH, "-c", f"echo x >> {counter}; exit 1"], name="flaky", retries=retries))
    with pytest.raises(TaskFailed):
        future.result(timeout=120)
    assert len(counter.read_text().splitlines()) == retries + 1 == future.record.attempts


def test_executable_timeout(pilot):
    serves(pilot, TaskKind.EXECUTABLE)
    future = pilot.submit(executable_task([SLEEP, "60"], name="slow", timeout_s=1))
    with pytest.raises(TaskFailed, match="timed out after 1 s"):
        future.result(timeout=120)
    assert future.record.finished - future.record.started < 20


def test_mpi_task_runs_its_ranks(pilot, tmp_path):
    serves(pilot, TaskKind.EXECUTABLE)
    code = (
        "import os, sys; rank = next(os.environ[v] for v in ('PMI_RANK', 'SLURM_PROCID', 'FLUX_TASK_RANK',"
        " 'OMPI_COMM_WORLD_RANK') if v in os.environ); open(os.path.join(sys.argv[1], rank), 'w').close()"
    )
    task = executable_task([sys.executable, "-c", code, str(tmp_path)], name="mpi", mpi=True, ranks=2)
    record = pilot.submit(task).result(timeout=120)
    assert record.state is TaskState.DONE and record.cores == 2 and len(record.slots) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]  # each rank knows its rank


# ------------------------------------------------------------------ functions
def test_functions_return_values_in_persistent_or_fresh_processes(pilot):
    serves(pilot, TaskKind.FUNCTION)
    n = 10 if "srun" in pilot.backends else 300
    futures = pilot.submit_many([function_task(probes.add, i, 1, name=f"add{i}") for i in range(n)])
    assert [f.result(timeout=120) for f in futures] == [i + 1 for i in range(n)]
    for f in futures:
        r = f.record
        assert r.state is TaskState.DONE and r.attempts == 1 and len(r.slots) == 1
        assert r.submitted <= r.scheduled and r.started <= r.finished


def test_raising_function_keeps_its_exception_and_traceback(pilot):
    serves(pilot, TaskKind.FUNCTION)
    bad = pilot.submit(function_task(probes.fail, "bad input 42", name="raiser"))
    other = pilot.submit(function_task(probes.add, 2, 2))
    with pytest.raises(TaskFailed, match="ValueError: bad input 42") as info:
        bad.result(timeout=120)
    assert isinstance(info.value.__cause__, ValueError)
    assert bad.record.error == "ValueError: bad input 42"
    assert "probes.py" in bad.record.traceback and "raise ValueError" in bad.record.traceback
    assert other.result(timeout=120) == 4


def test_function_retry_then_success_and_exhausted(pilot, tmp_path):
    serves(pilot, TaskKind.FUNCTION)
    ok = pilot.submit(function_task(probes.fail_until, str(tmp_path / "a"), 2, name="flaky", retries=2))
    assert ok.result(timeout=120) == 3 and ok.record.attempts == 3
    never = pilot.submit(function_task(probes.fail_until, str(tmp_path / "b"), 99, name="never", retries=1))
    with pytest.raises(TaskFailed, match="attempt 2 fails on purpose"):
        never.result(timeout=120)
    assert never.record.attempts == 2


def test_function_timeout_then_the_next_calls_run(pilot):
    serves(pilot, TaskKind.FUNCTION)
    slow = pilot.submit(function_task(probes.sleep, 60, name="slow", timeout_s=1))
    with pytest.raises(TaskFailed, match="timed out after 1 s"):
        slow.result(timeout=120)
    after = pilot.submit_many([function_task(probes.add, 1, i) for i in range(8)])
    assert [f.result(timeout=120) for f in after] == [1 + i for i in range(8)]


def test_a_dying_process_fails_only_its_task(pilot):
    serves(pilot, TaskKind.FUNCTION)
    n = 4 if "srun" in pilot.backends else 50
    futures = pilot.submit_many([function_task(probes.add, i, 0) for i in range(n)])
    dying = pilot.submit(function_task(probes.hard_exit, 7, name="crash"))
    futures += pilot.submit_many([function_task(probes.add, i, 0) for i in range(n)])
    with pytest.raises(TaskFailed, match=r"'crash' failed: .*(worker process died|exit code 7)"):
        dying.result(timeout=120)
    assert dying.record.attempts == 1
    assert [f.result(timeout=120) for f in futures] == list(range(n)) * 2


def test_unpicklable_arguments_fail_without_retry(pilot):
    serves(pilot, TaskKind.FUNCTION)
    bad = pilot.submit(function_task(probes.add, lambda: 1, 2, name="unpicklable", retries=2))
    good = pilot.submit(function_task(probes.add, 2, 3))
    with pytest.raises(TaskFailed, match="cannot be (sent to a worker|pickled)"):
        bad.result(timeout=120)
    assert bad.record.attempts == 1 and good.result(timeout=120) == 5


# ------------------------------------------------------------------ both kinds
def kinds_of(pilot: Pilot) -> list[TaskKind]:
    return [kind for kind in (TaskKind.EXECUTABLE, TaskKind.FUNCTION) if kind in pilot.routes]


def long_task(kind: TaskKind, name: str, cores: int = 1):
    if kind is TaskKind.EXECUTABLE:
        return executable_task([SLEEP, "60"], name=name, cores_per_rank=cores)
    return function_task(probes.sleep, 60, name=name, cores_per_rank=cores)


def test_cancel_running_and_queued(pilot):
    for kind in kinds_of(pilot):
        running = pilot.submit(long_task(kind, "running", cores=CORES))  # holds every core
        queued = pilot.submit(long_task(kind, "queued", cores=CORES))
        wait_placed(running)
        pilot.cancel(queued)
        pilot.cancel(running)
        wait_all([running, queued])  # a future canceled before it started counts as done for wait()
        for future in (running, queued):
            assert future.record.state is TaskState.CANCELED
            with pytest.raises(concurrent.futures.CancelledError):
                future.result()
        assert "while running" in running.record.error


def test_core_accounting_never_exceeds_the_allocation(pilot):
    tasks = []
    for kind in kinds_of(pilot):
        for i in range(12):
            cores = (1, 2, 4)[i % 3]
            tasks.append(
                executable_task([SLEEP, "0.2"], name=f"t{i}", cores_per_rank=cores)
                if kind is TaskKind.EXECUTABLE
                else function_task(probes.sleep, 0.1, name=f"f{i}", cores_per_rank=cores)
            )
    futures = pilot.submit_many(tasks)
    wait_all(futures)
    records = [f.record for f in futures]
    assert all(r.state is TaskState.DONE for r in records), [r.error for r in records if r.error]
    assert slot_overlaps(records) == []  # no core slot ever held by two tasks at once
    assert all(len(r.slots) == r.cores and all(0 <= s < CORES for s in r.slots) for r in records)
    assert 1 <= max(busy for _, busy in concurrency_series(records)) <= CORES


def test_shutdown_with_cancel_ends_every_task():
    pilot = Pilot(1).start()
    futures = pilot.submit_many(
        [executable_task([SLEEP, "30"]) for _ in range(3)] + [function_task(probes.sleep, 30) for _ in range(2)]
    )
    pilot.shutdown(cancel_pending=True)
    assert all(f.done() for f in futures)
    assert {f.record.state for f in futures} == {TaskState.CANCELED}
