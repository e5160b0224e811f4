"""impeccable's pilot runtime: one allocation, many tasks, several runtimes (local, Flux, Dragon, srun).

The front door; everything a caller needs is importable from here::

    from impeccable.runtime import Allocation, Pilot, executable_task, function_task, summarize

    with Pilot(Allocation(cores=16), routes={"executable": "flux", "function": "dragon"}) as pilot:
        futures = pilot.submit_many([executable_task(["vina", ...], cores_per_rank=4) for ...])
    print(summarize(pilot.records, cores=16))

Tasks are data (:mod:`.task`), futures are ``concurrent.futures.Future`` objects carrying their
live record (:mod:`.records`), errors live in :mod:`.errors`, and backends are plug-ins chosen by
name (:mod:`.backends`). Knows nothing about chemistry.
"""

from .backends import BACKEND_NAMES, backend_class, is_available
from .backends.base import TaskFuture
from .errors import BackendBroken, BackendUnavailable, TaskError, TaskFailed
from .metrics import summarize
from .pilot import Pilot
from .records import TaskRecord, TaskState
from .resources import Allocation
from .task import Task, TaskKind, executable_task, function_task

__all__ = [
    "Allocation", "BACKEND_NAMES", "BackendBroken", "BackendUnavailable", "Pilot", "Task", "TaskError",
    "TaskFailed", "TaskFuture", "TaskKind", "TaskRecord", "TaskState", "backend_class", "executable_task",
    "function_task", "is_available", "summarize",
]
