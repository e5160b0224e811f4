"""The local backend: exact core accounting, failures with reasons, exact retries, timeouts, cancel."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys

import pytest

from impeccable.runtime import TaskFailed, probes
from impeccable.runtime.bench import null_function
from impeccable.runtime.errors import TaskError
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.records import TaskState
from impeccable.runtime.resources import Allocation
from impeccable.runtime.task import executable_task, function_task

SLEEP = shutil.which("sleep")
SH = shutil.which("sh")


def wait_all(futures, timeout=60):
    done, not_done = concurrent.futures.wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} tasks still running after {timeout} s"


def test_failing_executable_with_a_stderr_file_names_its_last_line(local_pilot, tmp_path):
    """Stage tasks write stderr to a file; its last line (the stage's own error message) goes into the error."""
    log = tmp_path / "stderr.log"
    task = executable_task(
        ["sh", "-c", "echo warming up >&2; echo 'error: box is 61.0 angstrom away' >&2; exit 2"], stderr=str(log)
    )
    future = local_pilot.submit(task)
    with pytest.raises(TaskFailed):
        future.result(timeout=30)
    assert future.record.error == "exit code 2; stderr: error: box is 61.0 angstrom away"
    assert "warming up" in log.read_text()


def test_executable_killed_by_signal(local_pilot):
    future = local_pilot.submit(executable_task([SH, "-c", "kill -KILL $$"], name="killed"))
    with pytest.raises(TaskFailed, match="killed by signal SIGKILL"):
        future.result(timeout=30)
    assert future.record.exit_code == -9


LISTENERS = r"""
import os, sys
if len(sys.argv) > 1:
    from mpi4py import MPI  # a real MPI start: the netmod opens its own sockets
    MPI.COMM_WORLD.Barrier()
links = []
for fd in os.listdir("/proc/self/fd"):
    try:
        links.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # the descriptor listdir itself used
        pass
mine = {link[8:-1] for link in links if link.startswith("socket:[")}
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).readlines()[1:]:
        fields = line.split()
        address, state, inode = fields[1].split(":")[0], fields[3], fields[9]
        loopback = address in ("0100007F", "00000000000000000000000001000000")
        if state == "0A" and inode in mine and not loopback:
            print(f"rank {os.environ.get('PMI_RANK')} listens on {table} {fields[1]}")
            sys.exit(1)
"""


@pytest.mark.parametrize("mpi_init", [False, True], ids=["launcher", "mpi4py"])
def test_mpi_task_listens_on_no_network_interface(tmp_path, mpi_init):
    """A single-node MPI task must not open a TCP port on every interface (hydra's control port did)."""
    script = tmp_path / "listeners.py"
    script.write_text(LISTENERS)
    if mpi_init:
        pytest.importorskip("mpi4py")
    task = executable_task([sys.executable, str(script), *(["init"] if mpi_init else [])], mpi=True, ranks=2)
    with Pilot(2) as pilot:
        future = pilot.submit(task)
        concurrent.futures.wait([future], timeout=120)
    assert future.record.state is TaskState.DONE, future.record.error


def test_many_null_functions_all_finish():
    with Pilot(2) as pilot:
        futures = pilot.submit_many([function_task(null_function) for _ in range(5000)])
        wait_all(futures)
    assert all(r.state is TaskState.DONE for r in pilot.records)


def test_large_arguments_and_results_do_not_deadlock_the_pipe():
    # several MB each way fill the worker's pipe in both directions at once; the dispatcher must
    # buffer its writes instead of blocking while the worker blocks sending a result
    payload = os.urandom(3 << 20)
    with Pilot(1, options={"local": {"pipeline_s": 10.0, "max_pipeline": 8}}) as pilot:
        futures = pilot.submit_many([function_task(probes.echo, payload) for _ in range(12)])
        wait_all(futures)
    assert all(f.result() == payload for f in futures)


def test_calls_are_pipelined_in_order_and_each_result_reaches_its_own_task():
    with Pilot(2) as pilot:
        futures = pilot.submit_many([function_task(probes.echo, i) for i in range(3000)])
        wait_all(futures)
    assert [f.result() for f in futures] == list(range(3000))


def test_workers_that_cannot_start_fail_the_pilot_start_with_the_reason(tmp_path):
    # a script piped on stdin cannot be re-imported by multiprocessing's workers: they die at birth
    script = (
        "from impeccable.runtime.pilot import Pilot\n"
        "from impeccable.runtime.task import function_task\n"
        "with Pilot(1) as pilot:\n"
        "    print(pilot.submit(function_task('impeccable.runtime.probes:pid')).result())\n"
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-"], input=script, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode != 0
    assert "exited before it was ready" in result.stderr
    assert "piped on stdin" in result.stderr


def test_unpicklable_arguments_fail_at_once_without_retrying():
    # retrying cannot make a lambda picklable: the task must end FAILED, not wait forever as PENDING,
    # and the core it held must serve the next task (which was queued while the bad one held it)
    with Pilot(1) as pilot:
        bad = pilot.submit(function_task(probes.echo, lambda: 1, retries=2, name="unpicklable"))
        good = pilot.submit(function_task(probes.echo, 7))
        wait_all([bad, good])
    assert good.result() == 7
    assert bad.record.state is TaskState.FAILED and bad.record.attempts == 1
    assert "arguments cannot be sent to a worker" in bad.record.error


def test_shutdown_with_cancel_while_calls_are_pipelined_in_workers(monkeypatch):
    # results of calls queued in a worker can arrive after shutdown canceled them and before the kill lands
    import threading

    crashes = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))
    for _ in range(5):
        pilot = Pilot(2).start()
        futures = pilot.submit_many([function_task(null_function) for _ in range(5000)])
        pilot.shutdown(cancel_pending=True)
        assert all(f.done() for f in futures)
        states = {r.state for r in pilot.records}
        assert states <= {TaskState.DONE, TaskState.CANCELED}, [r.error for r in pilot.records if r.error][:3]
    assert not crashes, f"the dispatcher thread crashed: {crashes[0]!r}"


def test_bench_medians_skip_figures_a_run_does_not_have():
    """A figure that is None in every repeat (GPU utilisation without GPUs) stayed in the medians and made
    `bench --repeat 3` fail with a TypeError; one missing in some runs is the median of the others."""
    from impeccable.runtime.bench import RunResult, _medians

    runs = [
        RunResult({"throughput_tasks_per_s": t, "gpu_utilization": None, "x": x}, 0.0, {}, [])
        for t, x in ((1.0, None), (3.0, 2.0), (2.0, 4.0))
    ]
    med = _medians(runs)
    assert med["throughput_tasks_per_s"] == 2.0 and med["gpu_utilization"] is None and med["x"] == 3.0


def test_a_preload_module_that_cannot_be_imported_is_passed_over():
    """The task that needs a missing module says so; the workers start and run the others."""
    routes = {"executable": "local", "function": "local"}
    pilot = Pilot(Allocation(cores=2), routes=routes, options={"local": {"preload": ["impeccable_no_such_module"]}})
    pilot.start()
    try:
        assert pilot.submit(function_task("builtins:len", "abc")).result(timeout=60) == 3
        with pytest.raises(TaskError, match="impeccable_no_such_module"):  # refused when submitted, named
            pilot.submit(function_task("impeccable_no_such_module:f"))
    finally:
        pilot.shutdown()
