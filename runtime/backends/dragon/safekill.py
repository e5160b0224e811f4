"""Killing a Dragon worker without wedging the queues it shares.

A process killed while inside a ``dragon.native.Queue`` operation leaves the queue's shared-memory
lock held: every other process and thread using that queue then spins in ``put`` or ``get`` for
ever. Measured with dragonhpc 0.15 (two processes putting into one queue, one killed every 50 ms
and restarted, a thread reading): the queue stopped moving for good by the third kill. In the
pilot this was a whole allocation idle: a function task canceled (or timed out) while its worker's
result flusher was sending left every worker spinning on the shared outbox, the server's forwarder
spinning on the other end, and the executable tasks waiting for the cores those workers held.

So a worker holds an ``flock`` on its progress file across each of its queue operations
(:class:`CommsGuard`, both of its threads), and the server kills a worker only once it holds that
lock itself (:func:`kill_outside_comms`): the kill lands in a call or between operations, never in
one. A worker idle in ``inbox.get`` holds the lock while it waits, so the server first puts
:data:`KILL` in its inbox: the worker sends what results it has and exits by itself. The lock
needs no cleanup: the kernel drops a dead process's ``flock``.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from types import TracebackType

KILL = "kill"  # in a worker's inbox: send your results and exit (a kill was asked for)
KILLED_EXIT = 137  # how a worker that exits on KILL ends (as if killed by SIGKILL)


class CommsGuard:
    """Held by a worker across every queue operation: while any thread of the worker holds it, the
    worker keeps an exclusive ``flock`` on ``fd`` (the server waits for that lock before a kill)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self._holders = 0

    def __enter__(self) -> None:
        with self._lock:
            if not self._holders:
                fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks while the server is killing this worker
            self._holders += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with self._lock:
            self._holders -= 1
            if not self._holders:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


def kill_outside_comms(progress_path: str, kill: Callable[[], None], gone: threading.Event) -> None:
    """Kill a worker once it is inside no queue operation: wait for its lock, kill, hold the lock until
    ``gone`` (the worker's exit has been seen), so that it cannot begin an operation before the signal
    lands. Blocks: run it on its own thread. A worker already gone is left alone."""
    try:
        fd = os.open(progress_path, os.O_RDWR)
    except FileNotFoundError:  # its exit has been handled (the file goes with it)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not gone.is_set():
            kill()
            gone.wait()
    finally:
        os.close(fd)  # drops the lock
