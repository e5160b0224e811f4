"""The runtime's pure logic, without processes: shares, slots, routes, a Flux job's outcome."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from impeccable.runtime import BackendUnavailable, Pilot, executable_task
from impeccable.runtime.backends.flux.reactor import PartitionConfig, job_outcome
from impeccable.runtime.pilot import resolve_routes
from impeccable.runtime.resources import Allocation, SlotPool, Slots, machine_cores, split_allocation
from impeccable.runtime.task import TaskKind


def test_split_allocation_is_proportional_disjoint_and_gives_everyone_a_core():
    shares = split_allocation(Allocation(cores=16, gpus=4), {"flux": 3, "dragon": 1})
    assert [s.n_cores for s in shares.values()] == [12, 4] and [s.n_gpus for s in shares.values()] == [3, 1]
    assert set(shares["flux"].cores).isdisjoint(shares["dragon"].cores)
    tiny = split_allocation(Allocation(cores=2), {"a": 100, "b": 1})
    assert [s.n_cores for s in tiny.values()] == [1, 1]
    with pytest.raises(ValueError, match="3 backends need at least 3 cores"):
        split_allocation(Allocation(cores=2), {"a": 1, "b": 1, "c": 1})


def test_slot_pool_reuses_low_slots_first_and_catches_double_returns():
    pool = SlotPool((0, 1, 2, 3))
    a = pool.take(2)
    assert a == (0, 1) and pool.take(3) is None and pool.free == 2
    pool.give_back(a)
    assert pool.take(1) == (0,)
    pool.give_back((0,))
    with pytest.raises(RuntimeError, match="returned twice"):
        pool.give_back((0,))


def test_slots_take_cores_and_gpus_together_or_not_at_all():
    slots = Slots((0, 1), (0,))
    assert slots.take(1, 2) is None and slots.free_cores == 2  # not enough GPUs: no core taken either
    cores, gpus = slots.take(2, 1)
    assert (cores, gpus) == ((0, 1), (0,)) and slots.take(1) is None
    slots.give_back(cores, gpus)
    assert slots.free_cores == 2


def test_routes_resolve_auto_and_name_bad_kinds():
    routes = resolve_routes({"executable": "local", "function": "auto"})
    assert routes[TaskKind.EXECUTABLE] == "local" and routes[TaskKind.FUNCTION] in ("dragon", "local")
    with pytest.raises(ValueError, match="unknown task kind 'gpu'"):
        resolve_routes({"gpu": "local"})


def test_a_backend_that_cannot_run_here_is_backend_unavailable(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("IMPECCABLE_FLUX", raising=False)
    with pytest.raises(BackendUnavailable, match="backend 'flux' is not available here"):
        Pilot(2, routes={"executable": "flux"})


def test_machine_cores_reads_a_slurm_job_over_all_its_nodes(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_CPUS_PER_NODE", "36(x2),4")
    assert machine_cores() == 76
    monkeypatch.setenv("SLURM_JOB_CPUS_PER_NODE", "garbage")
    assert machine_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    "exception, status, cancel, began, expected",
    [
        (None, 0, None, True, ("done", "", 0)),
        (None, 3 << 8, None, True, ("failed", "exit code 3", 3)),
        (None, signal.SIGKILL, None, True, ("failed", "killed by signal SIGKILL", -9)),
        (
            ("timeout", "resource allocation expired"),
            signal.SIGKILL,
            None,
            True,
            ("failed", "timed out after 2 s (flux: resource allocation expired)", -9),
        ),
        (("cancel", ""), None, "canceled", True, ("canceled", "canceled while running (flux job canceled)", None)),
        (("cancel", "by admin"), None, None, False, ("canceled", "canceled in flux: by admin", None)),
        (("exec", "cannot execute"), None, None, True, ("failed", "flux exec exception: cannot execute", None)),
    ],
)
def test_flux_job_outcome(exception, status, cancel, began, expected):
    outcome = job_outcome(exception, status, cancel, began, timeout_s=2)
    assert (outcome.state, outcome.reason, outcome.exit_code) == expected


def _held_jobs(limit: int = 2, brokers: int = 1):
    import collections
    from types import SimpleNamespace

    from impeccable.runtime.backends.flux.ahead import HeldJobs

    submitted, discarded = [], []

    def submit(sub):
        submitted.append(sub.task.uid)
        return SimpleNamespace(sub=sub)

    held = HeldJobs(limit, brokers, submit, discarded.append)
    tasks = [executable_task(["true"], name=f"t{i}") for i in range(4)] + [executable_task(["true"], gpus_per_rank=1)]
    waiting = collections.deque(SimpleNamespace(task=t) for t in tasks)
    return held, waiting, submitted, discarded


def test_held_jobs_are_kept_for_the_first_waiting_tasks_up_to_the_limit():
    held, waiting, submitted, _ = _held_jobs(limit=2)
    held.top_up(waiting)
    held.top_up(waiting)
    assert submitted == [waiting[0].task.uid, waiting[1].task.uid]  # once each, in queue order
    placed = waiting.popleft()  # admitted: out of the queue, its held job let go
    assert held.take(placed) is not None and held.take(placed) is None
    held.top_up(waiting)
    assert submitted[-1] == waiting[1].task.uid  # the next one in line
    assert _held_jobs(brokers=2)[0].limit == 0  # several brokers: the rank constraint depends on placement


def test_a_held_job_flux_refused_is_not_held_again():
    held, waiting, submitted, _ = _held_jobs(limit=1)
    held.top_up(waiting)
    held.forget(held.held[waiting[0].task.uid])  # rejected, or canceled in Flux by someone else
    held.top_up(waiting)
    assert submitted == [waiting[0].task.uid, waiting[1].task.uid]  # the next task, never the refused one again
    assert not held.qualifies(waiting[4])  # a GPU task's devices come from its placement


def test_a_task_canceled_while_held_has_its_job_discarded():
    held, waiting, _, discarded = _held_jobs(limit=1)
    held.top_up(waiting)
    job = held.held[waiting[0].task.uid]
    held.discard(waiting[0].task.uid)
    assert discarded == [job] and not held.held


def test_flux_partition_fits_per_broker():
    config = PartitionConfig(name="0", nodes=(0, 1), cores=tuple(range(8)))
    assert config.fits(executable_task(["true"], cores_per_rank=4))
    assert not config.fits(executable_task(["true"], cores_per_rank=5))  # one process cannot span brokers
    assert config.fits(executable_task(["true"], mpi=True, ranks=2, cores_per_rank=4))


def test_a_misspelt_backend_option_is_refused_with_the_key_and_what_the_backend_reads():
    with pytest.raises(ValueError, match=r"backend 'local': unknown option 'pipline_s' \(it reads: .*pipeline_s"):
        Pilot(2, options={"local": {"pipline_s": 0.01}})
    with pytest.raises(ValueError, match="options for unknown backend 'lcoal'"):
        Pilot(2, options={"lcoal": {}})
    # checked whether or not the backend is routed: a Flux option typed on a machine without Flux
    with pytest.raises(ValueError, match="backend 'flux': option 'ahead': Input should be a valid integer"):
        Pilot(2, options={"flux": {"ahead": True}})
    with pytest.raises(ValueError, match="test_size is gone"):
        Pilot(2, options={"flux": {"test_size": 4}})
    with Pilot(2, options={"local": {"pipeline_s": 0.01, "preload": ["json"]}, "srun": {"max_running": 4}}) as pilot:
        assert pilot.backends["local"].opts.preload == ("json",)


def test_a_campaign_file_names_the_bad_backend_option(tmp_path):
    from impeccable.config import load_campaign
    from impeccable.errors import UserError

    text = (Path(__file__).parent.parent / "campaigns" / "demo.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[pilot.routes]", "[pilot.options.dragon]\nworkers = 0\n[pilot.routes]"))
    with pytest.raises((UserError, ValueError), match=r"pilot.options: backend 'dragon': option 'workers'"):
        load_campaign(bad)
