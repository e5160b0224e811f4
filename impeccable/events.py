"""How finished tasks reach the campaign manager, and how Ctrl-C reaches it without losing one.

Backend threads resolve futures; their done-callbacks put ``(future, handler)``
on an :class:`EventQueue`. The manager's main thread waits in ``select()`` on
the queue's wake-up pipe: Linux never restarts ``select`` after a signal, so
Ctrl-C interrupts the wait at once even when a C library (RDKit does this on
every call that checks for Ctrl-C) has re-installed Python's SIGINT handler
with ``SA_RESTART``, which would leave a blocking ``SimpleQueue.get()``
deaf until the next task finished. An event is taken off the queue only after
the wait returns, so an interrupt can never fall between taking an event and
handling it.

:class:`InterruptGuard` turns SIGINT and SIGTERM into ``KeyboardInterrupt``
everywhere except inside ``guard.deferred()``: a handler that is committing a
task's results runs to the end, and the interrupt is raised right after it.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class EventQueue:
    """A thread-safe FIFO whose consumer can wait for items in an interruptible system call."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def put(self, item: Any) -> None:
        """Called from any thread."""
        self._items.append(item)
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already: the consumer will wake

    def __len__(self) -> int:
        return len(self._items)

    def pop(self) -> Any | None:
        """The oldest item, or None when there is none (never blocks)."""
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def wait(self) -> None:
        """Block until an item may be there; a signal handler that raises interrupts the wait."""
        if self._items:
            return
        select.select([self._read_fd], [], [])
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            os.close(fd)


class InterruptGuard:
    """SIGINT/SIGTERM raise KeyboardInterrupt, except inside :meth:`deferred`, where they wait for its end.

    Installs its handlers on entry (main thread only; elsewhere it does nothing) and restores the
    previous ones on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._deferring = 0  # depth: a deferred block may run inside another (a handler submits a task)
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def interrupted(self) -> bool:
        return self._pending is not None

    @contextmanager
    def deferred(self, raise_after: bool = True) -> Iterator[None]:
        """Run the block to its end whatever signal arrives; then raise KeyboardInterrupt if one did
        (unless ``raise_after`` is False: e.g. while keeping results after the first Ctrl-C). Nested
        blocks raise when the outermost one ends."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if raise_after and self._pending is not None and not self._deferring:
            raise KeyboardInterrupt(_name(self._pending))

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._pending is None:
            self._pending = signum
        if not self._deferring:
            raise KeyboardInterrupt(_name(signum))


def _name(signum: int) -> str:
    return signal.Signals(signum).name
