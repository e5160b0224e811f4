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
A group is registered right after its process is started: a pilot killed in
the few microseconds between the two leaves that one process behind.
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
                [sys.executable, "-m", "impeccable.runtime.reaper"], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            os.write(_process.stdin.fileno(), line.encode())  # type: ignore[union-attr]
        except BrokenPipeError:
            _process = None


# --------------------------------------------------------------------------- the watchdog process


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    processes: set[int] = set()
    paths: list[str] = []
    for line in sys.stdin.buffer:
        text = line.decode(errors="replace").rstrip("\n")
        if text.startswith("+"):
            groups.add(int(text[1:]))
        elif text.startswith("-"):
            groups.discard(int(text[1:]))
        elif text.startswith("p+"):
            processes.add(int(text[2:]))
        elif text.startswith("p-"):
            processes.discard(int(text[2:]))
        elif text.startswith("rm "):
            paths.append(text[3:])
    for pid in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _kill_all(groups)
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)
    return 0


def _kill_all(groups: set[int]) -> None:
    alive = {g for g in groups if _signal(g, signal.SIGTERM)}
    deadline = time.monotonic() + KILL_GRACE_S
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting on processes that are not our children: nothing to block on
        alive = {g for g in alive if _signal(g, 0)}
    for g in alive:
        _signal(g, signal.SIGKILL)


def _signal(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


if __name__ == "__main__":
    raise SystemExit(main())
