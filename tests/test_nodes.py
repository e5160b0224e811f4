"""Multi-node pieces that need no cluster: node discovery, records carrying the node, steps pinned to the
pilot's node, a lost node taken out of the pool, per-node utilisation and the timeline grouped by node."""

from __future__ import annotations

import os
import socket
import stat
import sys

import pytest

from impeccable.runtime import executable_task
from impeccable.runtime.backends.dragon.backend import worker_hosts
from impeccable.runtime.backends.slurm.srun import SrunLauncher
from impeccable.runtime.metrics import per_node_utilization
from impeccable.runtime.node_watch import NodeWatch, is_lost
from impeccable.runtime.nodes import cpus_per_node, discover, expand_hostlist, from_slurm, nodes_from_r
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.records import TaskRecord, TaskState
from impeccable.runtime.resources import Allocation
from impeccable.runtime.slots import SlotBroker


def test_hostlists_expand_as_slurm_writes_them():
    assert expand_hostlist("node[0-3]") == ["node0", "node1", "node2", "node3"]
    assert expand_hostlist("n[08-10],login") == ["n08", "n09", "n10", "login"]
    assert expand_hostlist("r[1-2]n[1,3]") == ["r1n1", "r1n3", "r2n1", "r2n3"]
    assert expand_hostlist("a1,b[2,4-5]") == ["a1", "b2", "b4", "b5"]
    with pytest.raises(ValueError, match="not a number"):
        expand_hostlist("node[a-b]")


def test_cpus_per_node_reads_slurms_repeat_form():
    assert cpus_per_node("36(x2),4") == [36, 36, 4]
    assert cpus_per_node("") == []
    with pytest.raises(ValueError, match="SLURM_JOB_CPUS_PER_NODE"):
        cpus_per_node("4(xx)")


def test_a_slurm_job_is_found_in_its_environment(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the module's own expansion
    env = {"SLURM_JOB_NODELIST": "cn[1-3]", "SLURM_JOB_CPUS_PER_NODE": "8(x2),4"}
    found = discover(env)
    assert found is not None and found.names == ("cn1", "cn2", "cn3") and found.manager == "slurm"
    assert found.cores_per_node == 4  # the smallest node: slots spread evenly
    assert discover({}) is None
    with pytest.raises(ValueError, match="describes 2 nodes"):
        from_slurm({"SLURM_JOB_NODELIST": "cn[1-3]", "SLURM_JOB_CPUS_PER_NODE": "8(x2)"})


def test_scontrol_expands_when_there_is_one(tmp_path, monkeypatch):
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] && printf 'x-a\\nx-b\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert from_slurm({"SLURM_JOB_NODELIST": "x-[a,b]"}).names == ("x-a", "x-b")


def test_a_flux_resource_set_gives_nodes_and_cores_per_rank():
    r = {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": "0-1", "children": {"core": "0-3"}}, {"rank": "2", "children": {"core": "0-1"}}],
            "nodelist": ["node[0-2]"],
        },
    }
    found = nodes_from_r(r)
    assert found.names == ("node0", "node1", "node2") and found.cores_per_node == 2 and found.manager == "flux"


def test_an_allocation_on_found_nodes_checks_what_it_asks_for():
    found = from_slurm({"SLURM_JOB_NODELIST": "a,b,c", "SLURM_JOB_CPUS_PER_NODE": "4(x3)"})
    allocation = Allocation.on_nodes(found, 2)
    assert allocation.nodes == ("a", "b") and allocation.cores == 8 and allocation.real_nodes
    assert allocation.hosts((0, 5, 6)) == "a,b"
    with pytest.raises(ValueError, match="has 3"):
        Allocation.on_nodes(found, 4)
    with pytest.raises(ValueError, match="gives 4 per node"):
        Allocation.on_nodes(found, 2, cores=12)
    assert not Allocation.emulated(8, nodes=2).real_nodes


def test_records_carry_the_node_their_task_ran_on(tmp_path):
    """Emulated nodes on this machine: the record names the node the pilot placed the task on."""
    with Pilot(Allocation.emulated(4, nodes=2), routes={"executable": "local"}) as pilot:
        records = pilot.run(
            [executable_task([sys.executable, "-c", "pass"], cores_per_rank=2, name=f"t{i}") for i in range(2)],
            timeout=60,
        )
    assert sorted(r.node for r in records) == ["node0", "node1"]
    assert all(r.node == ("node0" if r.slots[0] < 2 else "node1") for r in records)


def test_a_local_backend_gets_only_this_hosts_node_of_a_real_allocation():
    here = socket.gethostname()
    allocation = Allocation(cores=8, nodes=(here, "elsewhere"), manager="slurm")
    pilot = Pilot(allocation, routes={"executable": "local"})
    assert pilot.slots["local"].nodes == (0,) and pilot.slots["local"].n_cores == 4
    away = Allocation(cores=8, nodes=("n1", "n2"), manager="slurm")
    with pytest.raises(Exception, match="not one of the allocation's nodes"):
        Pilot(away, routes={"executable": "local"})


def test_srun_steps_go_where_the_pilot_placed_them():
    launcher = SrunLauncher("7", "/tmp", "pmi2", [], hosts=("n0", "n1", "n2"), cores_per_node=4)
    one = launcher.command(executable_task(["true"], cores_per_rank=2), (4, 5), ())
    assert one[one.index("-N") + 1] == "1" and one[one.index("-w") + 1] == "n1"
    wide = launcher.command(executable_task(["true"], ranks=2, cores_per_rank=4, mpi=True), tuple(range(4, 12)), ())
    assert wide[wide.index("-w") + 1] == "n1,n2" and "--mpi=pmi2" in wide
    free = SrunLauncher("7", "/tmp", "", []).command(executable_task(["true"]), (0,), ())
    assert "-w" not in free  # one node or emulated nodes: Slurm picks


def test_after_a_node_loss_srun_steps_overlap():
    """Slurm 22.05 keeps the cores of steps that end after a job lost a node (job resizing): an exact step
    waited forever for them (seen in the node-loss test). After a loss, steps overlap; the pilot keeps them apart."""
    launcher = SrunLauncher("7", "/tmp", "", [], hosts=("n0", "n1"), cores_per_node=4)
    assert "--overlap" not in launcher.command(executable_task(["true"]), (0,), ())
    launcher.node_lost(1)
    launcher.node_lost(1)
    argv = launcher.command(executable_task(["true"]), (0,), ())
    assert argv.count("--overlap") == 1 and argv.index("--overlap") == argv.index("--exact") + 1


def test_a_step_whose_node_failed_is_known_although_srun_exited_0():
    """srun exits 0 when its step's node fails (seen in the node-loss test: 'srun: error: Node failure on node3' in
    the task's stderr file, the docking never finished); the launcher names the node so the task runs again."""
    launcher = SrunLauncher("7", "/tmp", "", [], hosts=("n0", "n1"), cores_per_node=4)
    assert launcher.node_failure("srun: error: Node failure on n1\n") == "n1"
    assert launcher.node_failure("some other warning") is None


def test_a_node_failure_srun_reports_takes_the_node_out_once_and_the_task_runs_again_elsewhere(tmp_path, monkeypatch):
    """srun reported the node failure before the node watch saw it (the node-loss test). The retry must not go back
    to that node (it did: exit 1); the node leaves the pool once and the run's node events say so once; and the
    retry, whose stderr file still holds the first attempt's 'Node failure' line, is done (it was requeued as lost
    again and again, the campaign never ended)."""
    from impeccable.runtime.backends.launchers import LocalLauncher

    monkeypatch.setattr(LocalLauncher, "node_failure", SrunLauncher.node_failure)
    monkeypatch.setattr(LocalLauncher, "reports_node_failures", True)
    first = tmp_path / "first-attempt"
    fails_once = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(first)!r})\n"
        "if not p.exists():\n"
        "    p.touch(); print('srun: error: Node failure on node1', file=sys.stderr)\n"
    )
    tasks = [
        executable_task([sys.executable, "-c", "pass"], cores_per_rank=2, name="t0"),
        executable_task(
            [sys.executable, "-c", fails_once], cores_per_rank=2, name="t1", stderr=str(tmp_path / "t1.err")
        ),
    ]
    with Pilot(Allocation.emulated(4, nodes=2), routes={"executable": "local"}) as pilot:
        records = pilot.run(tasks, timeout=60)
        pilot._node_lost("node1", "down*")  # the node watch, later: nothing more happens
    assert [(e.node, e.state) for e in pilot.node_events] == [("node1", "failed (srun: node failure)")]
    by_name = {r.name: r for r in records}
    assert all(r.state is TaskState.DONE for r in records) and by_name["t1"].node == "node0"
    assert by_name["t1"].error.startswith("node node1 lost") and first.exists()
    assert pilot.slots["local"].broker.capacity_cores == 2


def test_a_launcher_that_cannot_report_node_failures_is_not_asked(tmp_path, monkeypatch):
    """Only srun exits 0 over a failed node: a local task that succeeds costs no read of its stderr file."""
    from impeccable.runtime.backends.launchers import LocalLauncher

    def asked(self, stderr):
        raise AssertionError("node_failure asked of a launcher whose processes cannot outlive their node")

    monkeypatch.setattr(LocalLauncher, "node_failure", asked)
    with Pilot(Allocation.emulated(2), routes={"executable": "local"}) as pilot:
        (record,) = pilot.run(
            [executable_task([sys.executable, "-c", "pass"], stderr=str(tmp_path / "e.log"))], timeout=60
        )
    assert record.state is TaskState.DONE


def test_dragon_workers_spread_over_the_nodes_as_the_transport_counts_them():
    assert worker_hosts(("a", "b"), 4) == ["a", "a", "b", "b"]
    assert worker_hosts(("a", "b", "c"), 3) == ["a", "b", "c"]


def test_a_lost_node_leaves_the_pool_and_its_busy_slots_do_not_come_back():
    broker = SlotBroker(Allocation.emulated(8, nodes=2))
    view = broker.view("srun")
    held = view.take(2, 0, nodes=[1])
    assert held is not None and broker.node_of_core(held[0][0]) == 1
    broker.mark_down(1)
    assert broker.capacity_cores == 4 and broker.free_cores == 4
    view.give_back(*held)  # the task on the lost node ended
    assert broker.free_cores == 4
    assert view.take(2, 0, nodes=[1]) is None  # nothing is placed there again
    assert view.take(4) is not None


def test_the_node_watch_reports_each_lost_node_once():
    states = {"n0": "mixed", "n1": "idle*", "n2": "down*"}
    lost: list[tuple[str, str]] = []
    watch = NodeWatch(("n0", "n1", "n2"), lambda node, state: lost.append((node, state)), states=lambda nodes: states)
    watch.check()
    watch.check()
    assert lost == [("n2", "down*")]  # not responding for a moment (idle*) is not lost yet
    assert is_lost("fail") and is_lost("down~") and not is_lost("drained") and not is_lost("allocated")


def test_per_node_utilization_counts_the_slots_each_task_held():
    def record(slots, start, end):
        return TaskRecord(
            uid=str(start),
            name="t",
            kind="executable",
            cores=len(slots),
            gpus=0,
            state=TaskState.DONE,
            submitted=0.0,
            scheduled=start,
            started=start,
            finished=end,
            slots=tuple(slots),
        )

    records = [record((0, 1), 0.0, 10.0), record((2,), 0.0, 5.0)]
    assert per_node_utilization(records, ("a", "b"), 4) == {"a": 1.0, "b": 0.25}


def test_the_timeline_groups_slots_by_node():
    from impeccable import plots

    rows = [
        {
            "name": "dock x",
            "stage": "dock",
            "submitted": 0.0,
            "started": 0.0,
            "finished": 1.0,
            "slots": [0, 5],
            "cores": 2,
        }
    ]
    png = plots.timeline(rows, 8, "t", nodes=("node0", "node1"))
    assert png[:4] == b"\x89PNG"


def test_a_store_keeps_each_tasks_node_and_each_sessions_nodes(tmp_path):
    from impeccable.store import Store

    store = Store(tmp_path / "campaign.db")
    session = store.begin_session(8, {"executable": "srun"}, nodes=("node0", "node1"))
    rec = TaskRecord(uid="u", name="t", kind="executable", cores=1, gpus=0, state=TaskState.DONE, node="node1")
    store.add_task_records(session, [rec])
    assert store.task_rows(session)[0]["node"] == "node1"
    assert store.sessions()[-1]["nodes"] == '["node0", "node1"]'
    assert os.path.exists(tmp_path / "campaign.db")


def test_the_model_and_the_emulation_are_scored_against_the_real_multi_node_run(tmp_path):
    from impeccable.model import against_real_runs
    from impeccable.store import Store

    store = Store(tmp_path / "real" / "campaign.db")
    session = store.begin_session(8, {"executable": "srun", "function": "srun"}, nodes=("n0", "n1"))
    store.add_task_records(
        session,
        [
            TaskRecord(
                uid="u",
                name="dock x",
                kind="executable",
                cores=1,
                gpus=0,
                state=TaskState.DONE,
                submitted=0.0,
                scheduled=0.0,
                started=0.0,
                finished=100.0,
                slots=(0,),
                node="n0",
            )
        ],
    )
    store.close()
    row = {"pilot": {"measured_makespan_s": 110.0, "predicted_makespan_s": 90.0}}
    against_real_runs(row, [tmp_path / "real"])
    real = row["pilot"]["real_run"]
    assert real["makespan_s"] == 100.0 and real["nodes"] == ["n0", "n1"]
    assert real["emulation_error"] == pytest.approx(0.10) and real["model_error"] == pytest.approx(-0.10)
