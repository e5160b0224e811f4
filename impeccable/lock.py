"""One live ``impeccable run`` per run directory.

Two runs in one directory would both do all the work and race on the same
task folders. The lock is an advisory ``flock`` on ``RUN_DIR/run.lock``, held
for the whole run: the kernel drops it when the process ends, however it ends,
so a lock left by a killed run is simply taken over, and a reader can tell a
live run from a dead one by trying the lock. The file names its holder (pid,
host, start time) for the error message. ``flock`` is node-local on some
network file systems: the lock protects against a second run on the same
node, which is where a user starts one by mistake.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = "run.lock"


class RunDirBusy(Exception):
    """Another live process holds the run directory; the message names it."""


class RunDirLock:
    """Hold the run directory for this process (a context manager)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd = -1

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunDirBusy(
                f"{self.path.parent}: another `impeccable run` is using this run directory "
                f"({describe(holder)}); wait for it to end or stop it, or use another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode(), 0
        )
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops the lock
            self._fd = -1

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def live_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """Who holds the run directory now (pid, host, started), or None if no live process does.

    Opens the lock file read-only, so it works on a read-only copy of a run.
    """
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {}
        return None
    finally:
        os.close(fd)


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {since}"


def _read(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
