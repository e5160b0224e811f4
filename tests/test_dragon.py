"""The Dragon backend: results, failures with tracebacks, worker deaths, timeouts, retries, cancel,
a private authenticated channel, and nothing left behind after shutdown (Ctrl-C and a killed pilot included)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("dragon", reason="dragonhpc not installed (pip install 'impeccable[dragon]')")

from impeccable.runtime import (
    TaskError,
    TaskFailed,  # noqa: E402
    probes,  # noqa: E402
)
from impeccable.runtime.backends.dragon import backend as dragon_backend  # noqa: E402
from impeccable.runtime.backends.dragon.backend import DragonBackend, group_members  # noqa: E402
from impeccable.runtime.pilot import Pilot  # noqa: E402
from impeccable.runtime.records import TaskState  # noqa: E402
from impeccable.runtime.resources import Allocation, ResourceShare  # noqa: E402
from impeccable.runtime.task import executable_task, function_task  # noqa: E402

ok, why = DragonBackend.available()
pytestmark = [pytest.mark.dragon, pytest.mark.skipif(not ok, reason=why or "dragon backend unavailable")]


def wait_all(futures, timeout=60):
    done, not_done = concurrent.futures.wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} tasks still running after {timeout} s"


def runtime_leftovers(pgid: int, prefixes: set[str]) -> tuple[list[int], list[str]]:
    shm = [n for n in os.listdir("/dev/shm") if any(n.startswith(p) for p in prefixes)]
    return group_members(pgid), shm


@pytest.fixture(scope="module")
def pilot():
    """One Dragon runtime for the behaviour tests (start-up is ~2-6 s); 2 workers, asked to preload a module
    that does not exist: a worker passes over it (as the local workers do) instead of dying before it is up."""
    missing = {"dragon": {"preload": ["impeccable_no_such_module"]}}
    p = Pilot(Allocation(cores=2), routes={"function": "dragon"}, options=missing)
    p.start()
    try:
        yield p
    finally:
        p.shutdown(cancel_pending=True)


# ------------------------------------------------------------------ no runtime needed
def test_unavailable_without_the_launcher(monkeypatch):
    monkeypatch.setattr(dragon_backend, "find_launcher", lambda: None)
    assert DragonBackend.available() == (False, "dragonhpc not installed (pip install 'impeccable[dragon]')")


def test_executables_are_rejected_with_a_reason():
    backend = DragonBackend(ResourceShare(cores=(0, 1)))
    with pytest.raises(TaskError, match="runs Python function tasks only"):
        backend.check(executable_task(["true"], name="exe"))


def test_queues_fit_dragons_default_memory_pool_at_node_scale():
    """The queues reserve capacity x block size in Dragon's 4 GiB pool: the old sizing asked for 13 GB
    at 128 workers and the runtime did not start. 1,024 workers (more cores than any one node has) must fit."""
    from impeccable.runtime.backends.dragon.server import pool_bytes

    inbox = dragon_backend.inbox_messages(512, 1)  # the backend's defaults
    for workers in (2, 16, 64, 128, 256, 512, 1024, 3600):
        assert pool_bytes(workers, inbox) < 0.4 * 2**32, workers  # room left for the calls' own data


@pytest.mark.parametrize("max_pipeline,queue_ahead", [(512, 1), (4, 40), (1, 0)])
def test_an_inbox_holds_every_call_the_pool_may_have_in_flight_to_its_worker(max_pipeline, queue_ahead):
    """The server's reader must never block on an inbox (that is what rules out a deadlock with a bounded
    outbox): the inbox holds at least as many messages as the pipeline's deepest depth, in calls."""
    from impeccable.runtime.backends.pool import Pipelining

    pipeline = Pipelining(0.02, max_pipeline, queue_ahead)
    deepest = pipeline.depth
    for runtime_s in (1e-7, 1e-3, 1.0, 100.0):  # from null calls to long ones
        pipeline.finished(0.0, runtime_s)
        deepest = max(deepest, pipeline.depth)
    assert dragon_backend.inbox_messages(max_pipeline, queue_ahead) >= deepest + 8


def test_results_keep_draining_after_the_pilot_is_gone():
    """With the pilot gone, the forwarder drops results but keeps emptying the outbox: otherwise workers and
    the stop sign block on a full outbox and the runtime never exits."""
    import queue
    import threading

    from impeccable.runtime.backends.dragon.server import _Server

    class GoneConnection:
        def send_bytes(self, data):
            raise BrokenPipeError("the pilot has gone")

    server = object.__new__(_Server)
    server.outbox, server.conn = queue.Queue(maxsize=4), GoneConnection()
    forwarder = threading.Thread(target=server._forward, daemon=True)
    forwarder.start()
    for i in range(100):  # 25 times the outbox's capacity; a result is its 8-byte token, then its payload
        server.outbox.put(b"\x00" * 8 + bytes([i % 256]), timeout=5)
    server.outbox.put(b"", timeout=5)
    forwarder.join(timeout=5)
    assert not forwarder.is_alive()


def test_a_worker_that_dies_before_it_is_up_is_not_taken_for_one_that_is():
    """Its death notice came where the server waited for "up" notices and was read as one: the pilot got a dead
    worker in its ready list (calls sent to it were dropped) and its replacement besides."""
    import pickle
    import queue

    from impeccable.runtime.backends.dragon.server import CONTROL, _Server

    server = object.__new__(_Server)
    server.outbox, server.worker_hosts = queue.Queue(), {}
    server._start_worker = lambda: None  # the workers' notices are already in the outbox
    for notice in (("up", 0, 100, "n0"), ("died", 1, 1, -1), ("up", 2, 102, "n0")):
        server.outbox.put(CONTROL + pickle.dumps(notice))
    assert server._start_workers(2) == {0: 100, 2: 102}


@pytest.mark.slow
def test_runtime_starts_on_many_advertised_cores():
    """64 workers (a node's worth) on this machine's few cores: it starts, and every worker serves calls.
    With the old queue sizing (4.4 GB at 64 workers) the runtime failed to start."""
    with Pilot(Allocation(cores=64), routes={"function": "dragon"}) as p:
        futures = p.submit_many([function_task(probes.add, i, 1) for i in range(640)])
        assert [f.result(timeout=120) for f in futures] == [i + 1 for i in range(640)]
        # every worker serves: 64 sleeping calls at once need 64 different workers
        pids = [f.result(timeout=120) for f in p.submit_many([function_task(probes.sleep_pid, 2.0) for _ in range(64)])]
        assert len(set(pids)) == 64


class _Marker:
    def __reduce__(self):
        return (open, (MARKER_PATH, "w"))


MARKER_PATH = ""


# ------------------------------------------------------------------ one shared runtime
def test_null_functions_done_with_results_and_worker_times(pilot):
    futures = pilot.submit_many([function_task(probes.add, i, 1, name=f"add{i}") for i in range(500)])
    assert [f.result(timeout=60) for f in futures] == [i + 1 for i in range(500)]
    for f in futures:
        r = f.record
        assert r.state is TaskState.DONE and r.backend == "dragon" and r.attempts == 1
        assert r.slots in ((0,), (1,))
        assert r.submitted <= r.scheduled and r.started <= r.finished
    pids = {f.result(timeout=30) for f in pilot.submit_many([function_task(probes.pid) for _ in range(50)])}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # persistent workers, not a process per task


def test_worker_death_fails_only_its_task(pilot):
    futures = pilot.submit_many([function_task(probes.add, i, 0) for i in range(100)])
    dying = pilot.submit(function_task(probes.hard_exit, 7, name="crash"))
    futures += pilot.submit_many([function_task(probes.add, i, 0) for i in range(100)])
    with pytest.raises(TaskFailed, match="worker process died"):
        dying.result(timeout=60)
    assert dying.record.state is TaskState.FAILED and dying.record.attempts == 1
    assert [f.result(timeout=60) for f in futures] == list(range(100)) * 2
    # the replacement worker serves the next tasks
    after = pilot.submit_many([function_task(probes.add, 1, i) for i in range(20)])
    assert [f.result(timeout=60) for f in after] == [1 + i for i in range(20)]


# ------------------------------------------------------------------ nothing left behind
@pytest.mark.slow  # a Dragon runtime of its own: 4-5 s
def test_shutdown_leaves_no_processes_or_shared_memory():
    with Pilot(Allocation(cores=2), routes={"function": "dragon"}) as p:
        runtime = p.backends["dragon"]._runtime
        pgid, prefixes, directory = runtime.popen.pid, set(runtime.shm_prefixes), runtime.channel.directory
        assert len(group_members(pgid)) >= 3  # launcher, server, workers
        wait_all(p.submit_many([function_task(probes.add, i, i) for i in range(100)]))
    assert runtime_leftovers(pgid, prefixes) == ([], [])
    assert not os.path.exists(directory)
    found = subprocess.run(["pgrep", "-f", directory], capture_output=True, text=True)
    assert found.stdout.strip() == ""


PILOT_SCRIPT = """
import sys, time
from impeccable.runtime import probes
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.resources import Allocation
from impeccable.runtime.task import function_task

with Pilot(Allocation(cores=2), routes={"function": "dragon"}) as p:
    runtime = p.backends["dragon"]._runtime
    p.submit_many([function_task(probes.sleep, 60) for _ in range(4)])
    print(runtime.popen.pid, runtime.channel.directory, " ".join(sorted(runtime.shm_prefixes)), flush=True)
    time.sleep(120)
"""


@pytest.mark.slow  # a Dragon runtime of its own each: 4-5 s
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "pilot-killed"])
def test_runtime_goes_away_with_the_pilot(tmp_path, sig):
    script = tmp_path / "pilot.py"
    script.write_text(textwrap.dedent(PILOT_SCRIPT))
    # SIGINT back to its default in the child: a test runner started in the background of a non-interactive
    # shell ignores SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = proc.stdout.readline().split()
        assert line, "the pilot did not start"
        pgid, directory, prefixes = int(line[0]), line[1], set(line[2:])
        time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        # Ctrl-C: the pilot stops the runtime itself; killed: the server sees the socket close
        deadline = time.time() + 60
        while group_members(pgid) and time.time() < deadline:
            time.sleep(0.2)
        assert runtime_leftovers(pgid, prefixes) == ([], [])
        assert not os.path.exists(directory)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow  # a Dragon runtime of its own and 20 worker starts: about 20 s
def test_workers_killed_while_streaming_results_never_wedge_the_shared_outbox():
    """A worker killed inside a queue operation left the outbox's lock held, and every other worker and
    the forwarder spun on it for ever (a canceled function task stalled a Flux + Dragon pilot in CI).
    Workers streaming null results are killed the way the server kills, 20 times; the outbox keeps moving.
    A worker waiting for work leaves on the KILL in its inbox."""
    from impeccable.runtime.backends.dragon.backend import find_launcher, launcher_argv, launcher_env

    launcher = find_launcher()
    script = os.path.join(os.path.dirname(__file__), "dragon_kill_storm.py")
    env = launcher_env(launcher)
    result = subprocess.run(
        launcher_argv(launcher, [], sys.executable, script, "20"), capture_output=True, text=True, env=env, timeout=240
    )
    assert "ok: 20 kills" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert "idle worker exited 137, token -1" in result.stdout  # it left on the KILL in its inbox


def gpus_of_this_call() -> dict[str, str]:
    from impeccable.runtime import gpus

    return {"devices": ",".join(gpus.bind(prepare=False).devices), "mode": os.environ.get(gpus.GPUS_ENV, "unset")}


@pytest.mark.slow  # a Dragon runtime of its own: 4-5 s
def test_dragon_calls_reach_the_device_of_their_gpu_slot():
    """Two emulated GPUs (IDs 3 and 5) of two slots each: every Dragon worker knows each slot's device."""
    allocation = Allocation(cores=2, gpus=4, gpu_shares=2, gpu_devices=("3", "5"))
    with Pilot(allocation, routes={"function": "dragon"}) as pilot:
        futures = pilot.submit_many([function_task(gpus_of_this_call, name=f"f{i}", gpus_per_rank=1) for i in range(4)])
        wait_all(futures)
    table = ("3", "3", "5", "5")
    for future in futures:
        (slot,) = future.record.gpu_slots
        assert future.result() == {"devices": table[slot], "mode": "slots:3,3,5,5"}


def test_a_start_the_launcher_reports_as_failed_ends_without_waiting_for_its_cleanup(tmp_path):
    """On the 4-node cluster a failed Dragon start ("Expected TAUp ... Abnormal Exit detected") was followed by the
    launcher's cleanup over ssh, which hung for minutes (no sshd on the nodes); the pilot waited out its start
    timeout. It stops waiting at the launcher's own verdict."""
    from impeccable.runtime.backends.dragon.backend import DragonRuntime

    class Running:
        def poll(self):
            return None

    log = tmp_path / "dragon.log"
    log.write_text("srun: cluster configuration lacks support for cpu binding\n")
    runtime = DragonRuntime(None, Running(), str(log))  # type: ignore[arg-type]
    assert runtime.starting() and runtime.starting()
    with log.open("a") as handle:
        handle.write("RuntimeError: Expected TAUp during startup\nAbnormal Exit detected. Attempting to clean up\n")
    assert not runtime.starting()
