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

from importlib import import_module
from typing import Any

# name -> module: imported on first use, so that a worker process or ``python -m
# impeccable.runtime.run_function`` (the srun baseline's per-task process) does not pay
# for the pilot, pydantic and the backends it never uses
_EXPORTS = {
    "BACKEND_NAMES": ".backends",
    "backend_class": ".backends",
    "is_available": ".backends",
    "TaskFuture": ".backends.base",
    "summarize": ".metrics",
    "Pilot": ".pilot",
    "Allocation": ".resources",
    "TaskRecord": ".records",
    "TaskState": ".records",
    "BackendBroken": ".errors",
    "BackendUnavailable": ".errors",
    "TaskError": ".errors",
    "TaskFailed": ".errors",
    "Task": ".task",
    "TaskKind": ".task",
    "executable_task": ".task",
    "function_task": ".task",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
