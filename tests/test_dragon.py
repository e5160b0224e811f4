"""The Dragon backend: results, failures with tracebacks, worker deaths, timeouts, retries, cancel,
a private authenticated channel, and nothing left behind after shutdown (Ctrl-C and a killed pilot included)."""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing import AuthenticationError

import pytest

pytest.importorskip("dragon", reason="dragonhpc not installed (pip install 'impeccable[dragon]')")

from impeccable.runtime import probes  # noqa: E402
from impeccable.runtime.backends import dragon as dragon_backend  # noqa: E402
from impeccable.runtime.backends.base import TaskFailed  # noqa: E402
from impeccable.runtime.backends.dragon import DragonBackend, group_members  # noqa: E402
from impeccable.runtime.backends.dragon_channel import Channel, connect  # noqa: E402
from impeccable.runtime.pilot import Pilot  # noqa: E402
from impeccable.runtime.records import TaskState  # noqa: E402
from impeccable.runtime.resources import Allocation, ResourceShare  # noqa: E402
from impeccable.runtime.task import TaskError, executable_task, function_task  # noqa: E402

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
    """One Dragon runtime for the behaviour tests (start-up is ~2-6 s); 2 workers."""
    p = Pilot(Allocation(cores=2), routes={"function": "dragon"})
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


def test_channel_is_private_and_refuses_a_wrong_key():
    channel = Channel()
    try:
        assert stat.S_IMODE(os.stat(channel.directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(channel.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(channel.keyfile).st_mode) == 0o600
        outcome: dict[str, object] = {}

        def intruder_then_server():
            try:
                connect(channel.path, os.urandom(32))
            except AuthenticationError as exc:
                outcome["intruder"] = exc
            outcome["server"] = connect(channel.path, channel.key)

        thread = threading.Thread(target=intruder_then_server)
        thread.start()
        conn = channel.accept(timeout_s=10)
        thread.join(10)
        assert isinstance(outcome.get("intruder"), AuthenticationError)  # refused
        conn.send_bytes(b"hello")
        assert outcome["server"].recv_bytes() == b"hello"  # the right key got in
        assert not os.path.exists(channel.path)  # and nobody else can connect any more
        conn.close()
        outcome["server"].close()
    finally:
        channel.remove()
    assert not os.path.exists(channel.directory)


class _Marker:
    def __reduce__(self):
        return (open, (MARKER_PATH, "w"))


MARKER_PATH = ""


def test_payload_from_an_unauthenticated_peer_is_never_unpickled(tmp_path):
    global MARKER_PATH
    MARKER_PATH = str(tmp_path / "unpickled")
    payload = pickle.dumps(_Marker())
    channel = Channel()
    try:
        def raw_peer():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(channel.path)
                for _ in range(3):  # a length-prefixed pickle where the handshake expects a digest
                    sock.sendall(len(payload).to_bytes(4, "big") + payload)
                time.sleep(0.5)

        thread = threading.Thread(target=raw_peer)
        thread.start()
        with pytest.raises(TimeoutError):
            channel.accept(timeout_s=2)
        thread.join(10)
    finally:
        channel.remove()
    assert not os.path.exists(MARKER_PATH)


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


def test_raising_function_fails_with_its_traceback(pilot):
    bad = pilot.submit(function_task(probes.fail, "bad input 42", name="raiser"))
    other = pilot.submit(function_task(probes.add, 2, 2))
    with pytest.raises(TaskFailed, match="bad input 42") as info:
        bad.result(timeout=30)
    assert isinstance(info.value.__cause__, ValueError)
    record = bad.record
    assert record.state is TaskState.FAILED and record.error == "ValueError: bad input 42"
    assert "probes.py" in record.traceback and "raise ValueError" in record.traceback
    assert other.result(timeout=30) == 4


def test_unpicklable_arguments_fail_without_retry_and_free_the_worker(pilot):
    # one bad call per worker, then a good one that can only run once the bad ones have given their cores back
    bad = [function_task(probes.add, lambda: 1, 2, name=f"unpicklable-{i}", retries=2) for i in range(2)]
    futures = pilot.submit_many([*bad, function_task(probes.add, 2, 3)])
    assert futures[2].result(timeout=30) == 5
    for future in futures[:2]:
        with pytest.raises(TaskFailed, match="arguments cannot be sent to a worker"):
            future.result(timeout=30)
        assert future.record.attempts == 1


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


def test_timeout_kills_and_replaces_the_worker(pilot):
    slow = pilot.submit(function_task(probes.sleep, 30, name="slow", timeout_s=0.5))
    with pytest.raises(TaskFailed, match="timed out after 0.5 s"):
        slow.result(timeout=60)
    assert slow.record.state is TaskState.FAILED
    after = pilot.submit_many([function_task(probes.add, 1, i) for i in range(20)])
    assert [f.result(timeout=60) for f in after] == [1 + i for i in range(20)]


def test_retry_then_success(pilot, tmp_path):
    future = pilot.submit(function_task(probes.fail_until, str(tmp_path / "m"), 2, name="flaky", retries=2))
    assert future.result(timeout=60) == 3
    assert future.record.attempts == 3 and future.record.state is TaskState.DONE


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_exactly_as_configured(pilot, tmp_path, retries):
    marker = tmp_path / f"m{retries}"
    future = pilot.submit(function_task(probes.fail_until, str(marker), 99, name="never", retries=retries))
    with pytest.raises(TaskFailed):
        future.result(timeout=60)
    assert future.record.attempts == retries + 1
    assert len(os.listdir(marker)) == retries + 1


def test_cancel_pending_and_running(pilot):
    # two-core tasks take both workers' cores: one runs, the others wait in the pilot
    running = pilot.submit(function_task(probes.sleep, 1.0, name="holder", cores_per_rank=2))
    queued = [pilot.submit(function_task(probes.add, i, 0, name=f"q{i}", cores_per_rank=2)) for i in range(3)]
    time.sleep(0.2)
    pilot.cancel(queued[1])
    assert queued[0].result(timeout=60) == 0 and queued[2].result(timeout=60) == 2
    assert running.result(timeout=60) == 1.0
    with pytest.raises(concurrent.futures.CancelledError):
        queued[1].result(timeout=5)
    assert queued[1].record.state is TaskState.CANCELED

    victim = pilot.submit(function_task(probes.sleep, 30, name="victim"))
    time.sleep(1.0)
    pilot.cancel(victim)
    with pytest.raises(concurrent.futures.CancelledError):
        victim.result(timeout=60)
    assert victim.record.state is TaskState.CANCELED
    assert pilot.submit(function_task(probes.add, 5, 5)).result(timeout=60) == 10


# ------------------------------------------------------------------ nothing left behind
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "pilot-killed"])
def test_runtime_goes_away_with_the_pilot(tmp_path, sig):
    script = tmp_path / "pilot.py"
    script.write_text(textwrap.dedent(PILOT_SCRIPT))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
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
