"""Every error the runtime raises, in one place, so that callers can catch them by kind.

- :class:`TaskError`: a task description that can never run (bad fields, too many cores for the
  allocation, a function that cannot be imported); raised at submit, before anything is queued.
- :class:`TaskFailed`: ``future.result()`` of a task that ended FAILED; ``.record`` has the exit code,
  the reason and the traceback. A task canceled raises ``concurrent.futures.CancelledError``.
- :class:`BackendUnavailable`: a backend that cannot run here or could not start (not installed, no
  Slurm allocation granted, a runtime that did not come up); the message says why and what to do.
- :class:`BackendBroken`: a backend that stopped working while tasks were in it (its runtime went away,
  its dispatcher crashed), as ``concurrent.futures`` has ``BrokenExecutor``; the tasks it held fail with
  it as their cause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import TaskRecord


class TaskError(ValueError):
    """A task description that cannot run; the message names the task and the reason."""


class TaskFailed(Exception):
    """Raised by ``future.result()`` for a task that ended FAILED; ``.record`` has the details."""

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        reason = record.error or "failed"
        super().__init__(f"task {record.name or record.uid!r} failed: {reason}")


class BackendUnavailable(RuntimeError):
    """A backend that cannot run here or could not start; the message says why."""


class BackendBroken(RuntimeError):
    """A backend that stopped working with tasks in it; those tasks fail with this as their cause."""
