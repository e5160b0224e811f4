"""Task records: the one source every metric is computed from.

Each task gets one record when it is submitted. Backends fill in the
timestamps (wall-clock seconds, ``time.time()``, so that records from
processes and nodes can be put on one timeline), the slots it ran on and how
it ended. Three final states only: DONE, FAILED, CANCELED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TaskState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def final(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELED)


@dataclass(slots=True)
class TaskRecord:
    """What happened to one task.

    ``scheduled`` is when resources were assigned (slots taken), ``started``
    when the process or function began, ``finished`` when it ended. Queue wait
    is ``scheduled - submitted``; launch overhead is ``started - scheduled``.
    """

    uid: str
    name: str
    kind: str
    cores: int
    gpus: int
    tags: dict[str, str] = field(default_factory=dict)
    state: TaskState = TaskState.PENDING
    submitted: float | None = None
    scheduled: float | None = None
    started: float | None = None
    finished: float | None = None
    backend: str = ""
    partition: str = ""
    node: str = ""  # the node(s) it ran on, comma-separated (an MPI task may span several)
    slots: tuple[int, ...] = ()
    gpu_slots: tuple[int, ...] = ()
    attempts: int = 0
    exit_code: int | None = None
    error: str | None = None
    traceback: str | None = None
