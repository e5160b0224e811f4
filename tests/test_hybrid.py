"""One pool of cores for Flux and Dragon: no core is ever held twice, per node, whichever runtime holds it.

Runs on an emulated multi-node allocation: a Flux instance with one broker per node, Dragon workers
spread over the nodes. Needs flux-core and dragonhpc; skips with the reason where either is missing.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import shutil

import pytest

from impeccable.runtime import (
    Allocation,
    Pilot,
    TaskError,
    TaskState,
    backend_class,
    executable_task,
    function_task,
    probes,
)
from impeccable.runtime.backends.dragon.backend import group_members
from impeccable.runtime.metrics import slot_overlaps

pytestmark = [pytest.mark.slow, pytest.mark.flux, pytest.mark.dragon]
for _name in ("flux", "dragon"):
    _ok, _why = backend_class(_name).available()
    if not _ok:
        pytest.skip(f"{_name} backend unavailable: {_why}", allow_module_level=True)

SLEEP = shutil.which("sleep")
NODES, CORES = 4, 16  # 4 cores per node


@pytest.fixture(scope="module")
def pilot():
    p = Pilot(
        Allocation.emulated(CORES, nodes=NODES),
        routes={"executable": "flux", "function": "dragon"},
        options={"flux": {"use_existing": False, "partitions": 2}},
    )
    p.start()
    try:
        yield p
    finally:
        p.shutdown(cancel_pending=True)


def busy_per_node(records) -> int:
    """The most slots any node had busy at once."""
    peak = 0
    for node in range(NODES):
        events = []
        for r in records:
            held = [s for s in r.slots if s // (CORES // NODES) == node]
            if held:
                events += [(r.started, len(held)), (r.finished, -len(held))]
        busy = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            busy += delta
            peak = max(peak, busy)
    return peak


def test_mixed_random_workload_never_oversubscribes_a_node(pilot):
    rng = random.Random(7)
    tasks = []
    for i in range(60):
        cores = rng.choice((1, 1, 2, 4))
        if rng.random() < 0.5:
            tasks.append(executable_task([SLEEP, f"{rng.uniform(0.05, 0.4):.2f}"], name=f"x{i}", cores_per_rank=cores))
        else:
            tasks.append(function_task(probes.sleep, rng.uniform(0.05, 0.4), name=f"f{i}", cores_per_rank=cores))
    futures = pilot.submit_many(tasks)
    concurrent.futures.wait(futures, timeout=300)
    records = [f.record for f in futures]
    assert all(r.state is TaskState.DONE for r in records), [
        (r.name, r.backend, r.state.value, r.error) for r in records if r.state is not TaskState.DONE
    ]
    assert {r.backend for r in records} == {"flux", "dragon"}
    assert slot_overlaps(records) == []  # no core slot held by two tasks at once, across runtimes
    assert busy_per_node(records) <= CORES // NODES
    for r in records:  # one process's cores on one node
        assert len({s // (CORES // NODES) for s in r.slots}) == 1, r


def test_an_mpi_task_wider_than_a_node_has_its_nodes_to_itself(pilot):
    wide = pilot.submit(executable_task([SLEEP, "0.5"], name="wide", mpi=True, ranks=6))  # 6 cores: 2 nodes
    small = pilot.submit_many([function_task(probes.sleep, 0.3, name=f"s{i}") for i in range(12)])
    concurrent.futures.wait([wide, *small], timeout=120)
    w = wide.record
    assert w.state is TaskState.DONE and len(w.slots) == 8  # two whole nodes
    nodes = {s // 4 for s in w.slots}
    for f in small:
        r = f.record
        overlap_in_time = r.started < w.finished and w.started < r.finished
        assert not (overlap_in_time and {s // 4 for s in r.slots} & nodes), f"{r.name} ran on the wide task's node"


def test_a_task_larger_than_the_allocation_is_refused(pilot):
    with pytest.raises(TaskError, match="asks for 32 cores .* has 16"):
        pilot.submit(executable_task([SLEEP, "1"], mpi=True, ranks=32))


def test_shutdown_leaves_no_broker_dragon_process_or_shared_memory():
    p = Pilot(
        Allocation.emulated(4, nodes=2),
        routes={"executable": "flux", "function": "dragon"},
        options={"flux": {"use_existing": False}},
    )
    with p:
        runtime = p.backends["dragon"]._runtime
        group, prefixes = runtime.popen.pid, set(runtime.shm_prefixes)
        brokers = [part.process.pid for part in p.backends["flux"]._partitions]
        futures = p.submit_many([executable_task([SLEEP, "0.1"]), function_task(probes.add, 1, 2)])
        concurrent.futures.wait(futures, timeout=60)
    assert group_members(group) == []
    assert [n for n in os.listdir("/dev/shm") if any(n.startswith(x) for x in prefixes)] == []
    assert not [pid for pid in brokers if os.path.exists(f"/proc/{pid}")]
