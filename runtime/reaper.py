"""Task processes die with the pilot, even when the pilot is killed with SIGKILL.

Every executable task runs in its own process group (so that a timeout or a
cancel reaches its children: ``mpiexec``, its proxies and ranks). A killed pilot
cannot clean up after itself, so a small watchdog process does it: the pilot
tells it, over a pipe, each process group it starts and each that ends, and
the paths to remove if the pilot dies (multiprocessing's ``pymp-*`` folder),
and its persistent function workers, which a long call would otherwise keep
alive.
When the pipe reaches end-of-file (the pilot exited, however it exited) the
watchdog sends SIGTERM to every group still registered, SIGKILL a second later
to any that remain, removes the paths and exits. It runs in its own session,
so the Ctrl-C that stops the pilot's terminal group does not stop it first.

The pipe carries a few bytes per task (``+PGID``, ``-PGID``), no file I/O.
A group is registered right after its process is started, and a pilot can die
between the two: from the fork to the exec (the child is a copy of the pilot
until then: a millisecond or more under load) and until the registration.
So every task process also holds a *marker* from the instant it is forked: one
end of a pipe that only task processes inherit (:func:`task_marker`, passed with
``pass_fds``; every other descriptor of the pilot is close-on-exec). When the
pilot dies, the watchdog finds each process that holds the marker (its
``/proc/PID/fd``), registered or not, and kills it with its process group, and
looks again until none is left. The child needs no help of its own (no
``preexec_fn``, which would cost a full fork of the pilot: 5-13 ms a task, against
0.2-0.6 ms with the ``vfork`` that Python uses without one), and a process the task
started in a group of its own still holds the marker.
The Flux and Dragon runtimes are not registered: each watches its own link to
the pilot (Flux's initial program reads the pilot's pipe, Dragon's server its
socket) and shuts down in order when it closes, freeing its shared memory,
which a SIGTERM from here would cut short.
Run as ``python -m impeccable.runtime.reaper`` by :func:`watch` (started once per
process, on first use).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

KILL_GRACE_S = 1.0

_lock = threading.Lock()
_process: subprocess.Popen | None = None
_marker = -1  # the read end of a pipe with no writer: only task processes hold a copy


def task_marker() -> int:
    """The descriptor every task process must inherit (``pass_fds``), from its fork on; starts the watchdog.

    The watchdog knows it by its pipe's inode, so it finds a task process that was never registered
    (its pilot died between the fork and :func:`watch`) and any process the task started.
    """
    global _marker
    with _lock:
        made = _marker < 0
        if made:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            os.close(write_end)
            _marker = read_end
    if made:  # the watchdog knows the marker before the first fork that passes it
        _send(f"mark {_marker_name()}\n")
    return _marker


def watch(pgid: int) -> None:
    """Kill process group ``pgid`` if this process dies before :func:`forget` is called for it."""
    _send(f"+{pgid}\n")


def forget(pgid: int) -> None:
    """The group ended (or was reaped): never signal that number again, it may be reused."""
    _send(f"-{pgid}\n")


def watch_process(pid: int) -> None:
    """Kill process ``pid`` alone (a persistent worker, busy in a call that would outlive us)."""
    _send(f"p+{pid}\n")


def forget_process(pid: int) -> None:
    _send(f"p-{pid}\n")


def remove_on_death(path: str) -> None:
    """Remove ``path`` (a file or a folder) if this process dies without removing it itself."""
    _send(f"rm {path}\n")


def _send(line: str) -> None:
    global _process
    with _lock:
        if _process is None or _process.poll() is not None:
            _process = subprocess.Popen(
                [sys.executable, "-m", "impeccable.runtime.reaper"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            if _marker >= 0:  # a new watchdog (the last one died): it needs the marker too
                line = f"mark {_marker_name()}\n{line}"
        try:
            os.write(_process.stdin.fileno(), line.encode())  # type: ignore[union-attr]
        except BrokenPipeError:
            _process = None


def _marker_name() -> str:
    return os.readlink(f"/proc/self/fd/{_marker}")  # "pipe:[INODE]", as /proc/PID/fd shows it in every holder


# --------------------------------------------------------------------------- the watchdog process


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pilot = os.getppid()  # it holds the marker too, and may still be finishing its exit when we read EOF
    groups: set[int] = set()
    processes: dict[int, str | None] = {}  # pid -> its start time: a pid used again is not the same process
    paths: list[str] = []
    marker = ""
    for line in sys.stdin.buffer:
        text = line.decode(errors="replace").rstrip("\n")
        if text.startswith("mark "):
            marker = text[5:]
        elif text.startswith("+"):
            groups.add(int(text[1:]))
        elif text.startswith("-"):
            groups.discard(int(text[1:]))
        elif text.startswith("p+"):
            processes[int(text[2:])] = _start_time(int(text[2:]))
        elif text.startswith("p-"):
            processes.pop(int(text[2:]), None)
        elif text.startswith("rm "):
            paths.append(text[3:])
    for pid, started in processes.items():
        if started is not None and _start_time(pid) == started:
            _kill(pid)
    _kill_tasks(groups, marker, spare=pilot)
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)
    return 0


def _kill_tasks(groups: set[int], marker: str, spare: int) -> None:
    """SIGTERM, then SIGKILL a second later, to the registered groups and to the group of every marked
    process that leads one; SIGKILL at once to a marked process still in the pilot's group (forked, not
    yet in a session of its own). Then look again for marked processes until none is left."""
    holders = marked(marker, spare) if marker else set()
    leaders = {pid for pid in holders if _leads_group(pid)}
    for pid in holders - leaders:
        _kill(pid)
    _kill_all(groups | leaders)
    for _ in range(5):  # forked meanwhile, or moved out of its group
        left = marked(marker, spare) if marker else set()
        if not left:
            return
        for pid in left:
            if _leads_group(pid):
                _signal(pid, signal.SIGKILL)
            _kill(pid)
        time.sleep(0.05)


def _kill_all(groups: set[int]) -> None:
    alive = {g for g in groups if _signal(g, signal.SIGTERM)}
    deadline = time.monotonic() + KILL_GRACE_S
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting on processes that are not our children: nothing to block on
        alive = _live_groups(alive)
    for g in alive:
        _signal(g, signal.SIGKILL)


def _live_groups(groups: set[int]) -> set[int]:
    """Those of ``groups`` with a member that is not a zombie. A dead task of a dead pilot stays a zombie
    where nothing reaps orphans (a container whose first process does not), and signal 0 still reaches
    a zombie: that would hold every kill here for the whole grace period."""
    live = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) in groups:
                live.add(int(fields[2]))
    return live


def marked(marker: str, spare: int) -> set[int]:
    """The processes with a descriptor on ``marker`` (``pipe:[INODE]``), other than this one and ``spare``."""
    found = set()
    skip = {str(os.getpid()), str(spare)}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry in skip:
            continue
        folder = f"/proc/{entry}/fd"
        try:
            for fd in os.listdir(folder):
                if os.readlink(f"{folder}/{fd}") == marker:
                    found.add(int(entry))
                    break
        except OSError:  # gone, or not ours to look at
            continue
    return found


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


if __name__ == "__main__":
    raise SystemExit(main())
