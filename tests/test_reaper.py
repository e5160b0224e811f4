"""A pilot killed with SIGKILL leaves no task process and no temporary folder behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PILOT = r"""
import sys, time
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.task import executable_task, function_task
from impeccable.runtime.records import TaskState
pilot = Pilot(5).start()
futures = [
    pilot.submit(executable_task(["sleep", "300"])),
    pilot.submit(executable_task(["sh", "-c", "sleep 300 & sleep 300"])),  # a grandchild in the task's group
    pilot.submit(executable_task([sys.executable, "-c", "import time; time.sleep(300)"], mpi=True, ranks=2)),
    pilot.submit(function_task("time:sleep", 300)),
]
while any(f.record.state is not TaskState.RUNNING for f in futures[:3]) or futures[3].record.scheduled is None:
    time.sleep(0.05)
time.sleep(0.5)  # the ranks start after their launcher
print("ready", flush=True)
time.sleep(600)
"""


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_of_the_pilot_leaves_no_child_alive(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # where multiprocessing makes its pymp-* folder
    proc = subprocess.Popen([sys.executable, "-c", PILOT], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    tree = descendants(proc.pid)
    assert len(tree) >= 12, tree  # 4 tasks (with a grandchild, mpiexec and 2 ranks), forkserver, workers, reaper
    reaper = [p for p in tree if "impeccable.runtime.reaper" in Path(f"/proc/{p}/cmdline").read_text()]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    tree -= set(reaper)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {p: Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ") for p in tree if alive(p)}
    assert not left, f"still running 5 s after the pilot was killed: {left}"
    deadline = time.monotonic() + 5
    while list(tmp_path.glob("pymp-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(tmp_path.glob("pymp-*"))


BURST = r"""
import sys, time
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.resources import Allocation
from impeccable.runtime.task import executable_task
pilot = Pilot(Allocation.emulated(256), routes={"executable": "local"}).start()
print("up", flush=True)
futures = [pilot.submit(executable_task(["sleep", sys.argv[1]])) for _ in range(4000)]
time.sleep(600)
"""


def tagged(tag: str) -> list[int]:
    """Live processes whose command line holds ``tag``."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and alive(int(e)) and _has_arg(int(e), tag)]


def _has_arg(pid: int, tag: str) -> bool:
    try:
        return tag.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def kill_during_a_launch_burst(trials: int, seed: int) -> list[tuple[int, int]]:
    """SIGKILL a pilot at a random instant while it launches task after task (its dispatcher is between a
    fork and the reaper's registration most of the time); (launched, alive 2 s later) per trial."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(trials):
        tag = f"{300 + rng.random():.9f}"  # `sleep 300.xxx`: this trial's task processes
        proc = subprocess.Popen([sys.executable, "-c", BURST, tag], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "up"
        time.sleep(rng.uniform(0.05, 0.6))
        launched = len(tagged(tag))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(2.0)
        left = tagged(tag)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        out.append((launched, len(left)))
    return out


@pytest.mark.slow  # 7 s: twenty kills at chosen instants
def test_sigkill_at_any_instant_of_a_launch_burst_leaves_no_task_process():
    """The window between a task's fork and its registration with the reaper: before the task marker, each
    of 20 kills left exactly one `sleep` alive (20/20); now none (0/20). Three kills here."""
    results = kill_during_a_launch_burst(3, seed=7)
    assert all(left == 0 for _, left in results), results


if __name__ == "__main__":  # the measurement: python tests/test_reaper.py [TRIALS]
    runs = kill_during_a_launch_burst(int(sys.argv[1]) if len(sys.argv) > 1 else 20, seed=7)
    print(
        f"{sum(left > 0 for _, left in runs)}/{len(runs)} kills left task processes alive 2 s later "
        f"({sum(left for _, left in runs)} processes; {sorted(n for n, _ in runs)} launched at the kill)"
    )
