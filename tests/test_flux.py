"""The Flux backend on real Flux instances started by the tests (flux-core must be installed).

Run with the flux command on PATH (or IMPECCABLE_FLUX=/opt/flux/bin), e.g.
``PATH=/opt/flux/bin:$PATH python -m pytest tests/test_flux.py -rs``.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import time

import pytest

from impeccable.runtime import TaskError
from impeccable.runtime.backends.flux.backend import NOT_FOUND, FluxBackend, flux_command
from impeccable.runtime.metrics import slot_overlaps
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.records import TaskState
from impeccable.runtime.resources import Allocation
from impeccable.runtime.task import executable_task

_ok, _why = FluxBackend.available()
if not _ok:
    pytest.skip(f"flux backend unavailable: {_why}", allow_module_level=True)
pytestmark = [pytest.mark.flux, pytest.mark.slow]

TRUE = shutil.which("true")
SLEEP = shutil.which("sleep")
SH = shutil.which("sh")


def flux_pilot(cores: int, gpus: int = 0, nodes: int = 1, **options) -> Pilot:
    """A pilot whose allocation has ``nodes`` emulated nodes (one Flux broker each)."""
    if "partitions" not in options and "use_existing" not in options:
        options["use_existing"] = False  # always a fresh instance, even when the tests run inside Flux
    return Pilot(
        Allocation.emulated(cores, nodes=nodes, gpus=gpus), routes={"executable": "flux"}, options={"flux": options}
    )


def wait_all(futures, timeout=120):
    done, not_done = concurrent.futures.wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} tasks still not final after {timeout} s"


def wait_for(predicate, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.05)


def brokers_of(pilot: Pilot) -> list[int]:
    """Pids of the flux processes in the sessions of the instances this pilot's backend started."""
    sessions = {p.process.pid for p in pilot.backends["flux"]._partitions if p.process is not None}
    return [pid for pid, sid in _sessions().items() if sid in sessions]


def _sessions() -> dict[int, int]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                found[int(entry)] = int(fields[3])  # session id
            except (OSError, IndexError):
                pass
    return found


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}") and "Z" not in _state(pid)]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_null_executables_done_with_records():
    with flux_pilot(4) as pilot:
        futures = pilot.submit_many([executable_task([TRUE], name=f"null{i}") for i in range(40)])
        wait_all(futures)
    records = [f.result() for f in futures]
    assert all(r.state is TaskState.DONE and r.exit_code == 0 for r in records)
    assert all(r.backend == "flux" and r.partition == "0" and r.attempts == 1 for r in records)
    assert all(len(r.slots) == 1 and 0 <= r.slots[0] < 4 for r in records)
    assert all(r.submitted <= r.scheduled <= r.started <= r.finished for r in records)


def in_instance(pilot: Pilot) -> dict[str, str]:
    """The environment of a flux command aimed at the pilot's (only) Flux instance."""
    return {**os.environ, "FLUX_URI": pilot.backends["flux"]._partitions[0].uri}


def flux_jobs(pilot: Pilot) -> list[dict[str, str]]:
    """Every job of the pilot's (only) Flux instance, as ``flux jobs -a`` lists it."""
    fields = ("id", "name", "urgency", "state", "result")
    out = subprocess.run(
        [flux_command(), "jobs", "-a", "-n", "-o", "|".join(f"{{{f}}}" for f in fields)],
        env=in_instance(pilot),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [dict(zip(fields, (v.strip() for v in line.split("|")))) for line in out.splitlines()]


def held(pilot: Pilot) -> list[dict[str, str]]:
    return [job for job in flux_jobs(pilot) if job["urgency"] == "0" and job["state"] == "SCHED"]


def test_held_jobs_run_each_task_once_and_none_is_left_held():
    with flux_pilot(2) as pilot:
        futures = pilot.submit_many([executable_task([SLEEP, "0.05"], name=f"s{i}") for i in range(30)])
        wait_all(futures)
        jobs = flux_jobs(pilot)
    assert all(f.record.state is TaskState.DONE and f.record.attempts == 1 for f in futures)
    assert len(jobs) == 30 and all(job["result"] == "COMPLETED" for job in jobs)
    assert all(job["urgency"] == "16" for job in jobs)  # every one was let go (or submitted as usual)


def test_a_task_canceled_while_its_job_is_held_ends_canceled_and_its_job_never_runs():
    with flux_pilot(1, ahead=4) as pilot:
        blocker = pilot.submit(executable_task([SLEEP, "1"], name="blocker"))
        behind = pilot.submit_many([executable_task([TRUE], name=f"behind{i}") for i in range(3)])
        wait_for(lambda: len(held(pilot)) == 3)  # the blocker has the core
        pilot.cancel(behind[1])
        wait_all([blocker, *behind])
        jobs = {job["name"]: job["result"] for job in flux_jobs(pilot)}
    assert blocker.record.state is TaskState.DONE
    assert [f.record.state for f in behind] == [TaskState.DONE, TaskState.CANCELED, TaskState.DONE]
    assert jobs["behind1"] == "CANCELED" and jobs["behind0"] == jobs["behind2"] == "COMPLETED"


def test_a_held_job_canceled_in_flux_by_someone_else_is_submitted_again():
    with flux_pilot(1) as pilot:
        blocker = pilot.submit(executable_task([SLEEP, "1"], name="blocker"))
        behind = pilot.submit(executable_task([TRUE], name="behind"))
        wait_for(lambda: len(held(pilot)) == 1)
        subprocess.run([flux_command(), "cancel", held(pilot)[0]["id"]], check=True, env=in_instance(pilot))
        wait_all([blocker, behind])
        results = sorted(job["result"] for job in flux_jobs(pilot) if job["name"] == "behind")
    assert behind.record.state is TaskState.DONE and behind.record.attempts == 1
    assert results == ["CANCELED", "COMPLETED"]  # the held job, then the one submitted when placed


def test_without_held_jobs_tasks_are_submitted_when_placed():
    with flux_pilot(1, ahead=0) as pilot:
        blocker = pilot.submit(executable_task([SLEEP, "0.5"], name="blocker"))
        behind = pilot.submit(executable_task([TRUE], name="behind"))
        wait_for(lambda: blocker.record.state is TaskState.RUNNING)
        assert [job["name"] for job in flux_jobs(pilot)] == ["blocker"]  # the waiting task is not in Flux yet
        wait_all([blocker, behind])
    assert behind.record.state is TaskState.DONE
    with pytest.raises(ValueError, match="option .ahead.: Input should be greater than or equal to 0"):
        flux_pilot(1, ahead=-1)


def test_two_partitions_have_disjoint_slots_and_share_the_work():
    with flux_pilot(8, nodes=2, partitions=2) as pilot:
        assert pilot.backends["flux"].partitions == ["0", "1"]
        futures = pilot.submit_many([executable_task([SLEEP, "0.2"], name=f"s{i}") for i in range(32)])
        pinned = pilot.submit(executable_task([TRUE], name="pinned", partition="1"))
        wait_all([*futures, pinned])
    records = [f.record for f in futures]
    assert all(r.state is TaskState.DONE for r in records)
    by_partition = {name: [r for r in records if r.partition == name] for name in ("0", "1")}
    assert all(len(rs) >= 8 for rs in by_partition.values())  # least-loaded spreading uses both
    assert {s for r in by_partition["0"] for s in r.slots} <= set(range(0, 4))
    assert {s for r in by_partition["1"] for s in r.slots} <= set(range(4, 8))
    assert pinned.record.partition == "1" and set(pinned.record.slots) <= set(range(4, 8))
    assert slot_overlaps(records) == []


def test_an_mpi_task_wider_than_a_node_gets_whole_nodes_one_broker_each(tmp_path):
    out = tmp_path / "ranks.txt"
    task = executable_task(
        [SH, "-c", 'echo "$FLUX_TASK_RANK $(flux getattr rank)"'],
        name="span",
        mpi=True,
        ranks=2,
        cores_per_rank=2,
        stdout=str(out),
        env={"PATH": os.path.dirname(flux_command()) + os.pathsep + os.environ["PATH"]},
    )
    with flux_pilot(4, nodes=2) as pilot:
        with pytest.raises(TaskError, match="one process needs 3 cores"):  # a process cannot span nodes
            pilot.submit(executable_task([TRUE], cores_per_rank=3, mpi=True))
        with pytest.raises(TaskError, match="not MPI"):
            pilot.submit(executable_task([TRUE], ranks=2, cores_per_rank=2))
        record = pilot.submit(task).result(timeout=60)
        # pinned: a one-node task runs on the broker of the node the pilot chose
        pinned = pilot.submit(
            executable_task(
                [SH, "-c", "flux getattr rank"], cores_per_rank=2, stdout=str(tmp_path / "pinned.txt"), env=task.env
            )
        ).result(timeout=60)
    assert record.state is TaskState.DONE and record.slots == (0, 1, 2, 3)
    lines = sorted(tuple(line.split()) for line in out.read_text().splitlines())
    assert lines == [("0", "0"), ("1", "1")]  # task rank 0 on broker 0, task rank 1 on broker 1
    assert (tmp_path / "pinned.txt").read_text().strip() == str(pinned.slots[0] // 2)


def test_each_task_sees_only_its_own_gpus(tmp_path):
    tasks = [
        executable_task(
            [SH, "-c", 'echo "${CUDA_VISIBLE_DEVICES:-none}"; sleep 0.3'],
            name=f"g{i}",
            gpus_per_rank=1,
            stdout=str(tmp_path / f"g{i}.txt"),
        )
        for i in range(8)
    ]
    tasks.append(
        executable_task(
            [SH, "-c", 'echo "${CUDA_VISIBLE_DEVICES:-none}"'], name="nogpu", stdout=str(tmp_path / "nogpu.txt")
        )
    )
    with flux_pilot(4, gpus=4, nodes=2, partitions=2) as pilot:
        futures = pilot.submit_many(tasks)
        wait_all(futures)
    for future in futures[:-1]:
        record = future.record
        assert record.state is TaskState.DONE and len(record.gpu_slots) == 1
        seen = (tmp_path / f"{record.name}.txt").read_text().strip()
        assert seen == str(record.gpu_slots[0] % 2)  # the GPU's index on its node (2 GPUs per node)
        assert record.gpu_slots[0] in ((0, 1) if record.partition == "0" else (2, 3))
    assert (tmp_path / "nogpu.txt").read_text().strip() == "-1"  # Flux hides every GPU from a task with none
    assert slot_overlaps([f.record for f in futures]) == []


def test_shutdown_and_ctrl_c_leave_no_broker():
    pilot = flux_pilot(2, nodes=2, partitions=2)
    with pytest.raises(KeyboardInterrupt):
        with pilot:
            running = pilot.submit(executable_task([SLEEP, "60"], name="interrupted"))
            wait_for(lambda: running.record.state is TaskState.RUNNING)
            flux_pids = brokers_of(pilot)
            assert len(flux_pids) >= 2
            raise KeyboardInterrupt
    assert running.record.state is TaskState.CANCELED
    assert alive(flux_pids) == []


def test_unavailable_without_flux(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("IMPECCABLE_FLUX", raising=False)
    assert FluxBackend.available() == (False, NOT_FOUND)


def test_tasks_that_cannot_fit_are_rejected_at_submit():
    with flux_pilot(4, nodes=2, partitions=2) as pilot:
        with pytest.raises(TaskError, match="largest flux partition has 2 cores"):
            pilot.submit(executable_task([TRUE], ranks=3, mpi=True))
        with pytest.raises(TaskError, match="no flux partition 'x'"):
            pilot.submit(executable_task([TRUE], partition="x"))


def test_gpu_shares_reach_a_flux_job_as_its_device_ids(tmp_path):
    """Two emulated GPUs (IDs 3 and 5) of two slots each: a job holding a share or a whole GPU sees its device."""
    seen = 'echo "${CUDA_VISIBLE_DEVICES:-unset} ${IMPECCABLE_GPUS:-unset}"; sleep 0.3'
    tasks = [
        executable_task([SH, "-c", seen], name=f"g{i}", gpus_per_rank=n, stdout=str(tmp_path / f"g{i}.txt"))
        for i, n in enumerate((2, 1, 1, 0))
    ]
    allocation = Allocation(cores=4, gpus=4, gpu_shares=2, gpu_devices=("3", "5"))
    with Pilot(allocation, routes={"executable": "flux"}, options={"flux": {"use_existing": False}}) as pilot:
        records = pilot.run(tasks, timeout=120)
    table = ("3", "3", "5", "5")
    for i, record in enumerate(records):
        assert record.state is TaskState.DONE
        expected = ",".join(dict.fromkeys(table[g] for g in record.gpu_slots)) or "-1"
        assert (tmp_path / f"g{i}.txt").read_text().split() == [expected, "ids"]
