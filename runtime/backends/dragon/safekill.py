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
:data:`KILL` in its inbox: the worker sends what results it has and exits by itself (a busy
worker may meet it too, after its queued batches). The lock needs no cleanup: the kernel drops a
dead process's ``flock``.

A kill is delayed, never lost: should the lock not come within :data:`KILL_GRACE_S` (a worker
stuck in an operation, or a KILL that did not fit in a full inbox), the worker is killed all the
same, with a warning on the server's stderr (the Dragon log), as it was before this module. Where
the file system refuses ``flock`` (some NFS and Lustre mounts), both sides go without the lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from collections.abc import Callable
from types import TracebackType

KILL = "kill"  # in a worker's inbox: send your results and exit (a kill was asked for)
KILLED_EXIT = 137  # how a worker that exits on KILL ends (as if killed by SIGKILL)
KILL_GRACE_S = 10.0  # how long a kill waits for the worker's lock, then for its exit, before going on


class CommsGuard:
    """Held by a worker across every queue operation: while any thread of the worker holds it, the
    worker keeps an exclusive ``flock`` on ``fd`` (the server waits for that lock before a kill)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        self._lock = threading.Lock()
        self._holders = 0

    def __enter__(self) -> None:
        with self._lock:
            if not self._holders and self.fd is not None:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks while the server is killing this worker
                except OSError:  # a file system without flock: go without (the server's kill does too)
                    self.fd = None
            self._holders += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with self._lock:
            self._holders -= 1
            if not self._holders and self.fd is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


def kill_outside_comms(
    progress_path: str, kill: Callable[[], None], gone: threading.Event, grace_s: float = KILL_GRACE_S
) -> None:
    """Kill a worker once it is inside no queue operation: wait for its lock, kill, hold the lock until
    ``gone`` (the worker's exit has been seen), so that it cannot begin an operation before the signal
    lands. Blocks: run it on its own thread. A worker already gone is left alone; one whose lock does not
    come within ``grace_s`` is killed without it (see the module docstring)."""
    try:
        fd = os.open(progress_path, os.O_RDWR)
    except FileNotFoundError:  # its exit has been handled (the file goes with it)
        return
    overdue = threading.Timer(grace_s, _kill_overdue, args=(progress_path, kill, gone, grace_s))
    overdue.daemon = True
    overdue.start()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: the worker goes without it too
            pass
        overdue.cancel()
        for _ in range(3):  # a kill that failed (Dragon's services busy) is asked again
            if gone.is_set():
                return
            kill()
            gone.wait(grace_s)
    finally:
        os.close(fd)  # drops the lock


def _kill_overdue(progress_path: str, kill: Callable[[], None], gone: threading.Event, grace_s: float) -> None:
    if gone.is_set():
        return
    print(
        f"impeccable dragon server: worker {os.path.basename(progress_path)} did not leave its queue operation "
        f"within {grace_s:g} s; killed all the same (its queues may stop)",
        file=sys.stderr,
        flush=True,
    )
    kill()
