"""The pilot: acquire an allocation once, partition it among backends, run many tasks.

Routing is configuration: a mapping from task kind to backend name. Callers
submit tasks and get futures back; they never learn which backend ran what.

    with Pilot(Allocation(cores=16), routes={"executable": "flux", "function": "dragon"}) as pilot:
        futures = pilot.submit_many(tasks)
        ...
    metrics = summarize(pilot.records, cores=16)
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import BackendUnavailable
from .backends import backend_class, is_available
from .backends.base import Backend, Submission, TaskFuture
from .records import TaskRecord
from .resources import Allocation, ResourceShare, split_allocation
from .errors import TaskError
from .task import Task, TaskKind

DEFAULT_ROUTES: dict[str, str] = {"executable": "local", "function": "local"}
AUTO_CHOICES: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.EXECUTABLE: ("flux", "local"),
    TaskKind.FUNCTION: ("dragon", "local"),
}


def resolve_routes(routes: Mapping[str, str] | None) -> dict[TaskKind, str]:
    """Kind -> backend name; ``auto`` picks the first available of Flux/Dragon, else local."""
    resolved: dict[TaskKind, str] = {}
    for kind_name, backend_name in (routes or DEFAULT_ROUTES).items():
        try:
            kind = TaskKind(kind_name)
        except ValueError:
            raise ValueError(f"unknown task kind {kind_name!r} in routes: use 'executable' or 'function'") from None
        if backend_name == "auto":
            backend_name = next(n for n in AUTO_CHOICES[kind] if is_available(n)[0])
        resolved[kind] = backend_name
    return resolved


class Pilot:
    """Holds one allocation and routes each task to the backend configured for its kind.

    ``shares`` weights how the cores are split when several backends are used
    (backend name -> weight, equal by default); ``options`` passes settings to
    each backend by name, e.g. ``{"local": {"function_workers": 4}}``.
    """

    def __init__(
        self,
        allocation: Allocation | int,
        routes: Mapping[str, str] | None = None,
        shares: Mapping[str, int] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.allocation = allocation if isinstance(allocation, Allocation) else Allocation(cores=allocation)
        self.routes = resolve_routes(routes)
        names = list(dict.fromkeys(self.routes.values()))
        weights = {name: int((shares or {}).get(name, 1)) for name in names}
        unknown = set(shares or {}) - set(names)
        if unknown:
            raise ValueError(f"shares name backends the routes do not use: {', '.join(sorted(unknown))}")
        self.shares: dict[str, ResourceShare] = split_allocation(self.allocation, weights)
        self.backends: dict[str, Backend] = {}
        for name in names:
            cls = backend_class(name)
            ok, why = cls.available()
            if not ok:
                raise BackendUnavailable(f"backend {name!r} is not available here: {why}")
            backend = cls(self.shares[name], **dict((options or {}).get(name, {})))
            backend.serves = frozenset(kind for kind, routed in self.routes.items() if routed == name)
            self.backends[name] = backend
        self.records: list[TaskRecord] = []
        self._started = False
        self._closed = False

    # lifecycle ---------------------------------------------------------------
    def start(self) -> "Pilot":
        if not self._started:
            started: list[Backend] = []
            try:
                for backend in self.backends.values():
                    backend.start()
                    started.append(backend)
            except BaseException:
                for backend in started:
                    backend.shutdown(cancel_pending=True)
                raise
            self._started = True
        return self

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Wait for (or cancel) every task, then stop every backend. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for backend in self.backends.values():
            try:
                backend.shutdown(cancel_pending=cancel_pending or not wait)
            except BaseException as exc:  # stop the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> "Pilot":
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # on an exception (Ctrl-C included) do not wait for queued work: cancel it
        self.shutdown(cancel_pending=exc_type is not None)

    # submission --------------------------------------------------------------
    def backend_for(self, task: Task) -> Backend:
        try:
            return self.backends[self.routes[task.kind]]
        except KeyError:
            raise TaskError(f"task {task.label}: this pilot has no backend for {task.kind.value} tasks") from None

    def submit(self, task: Task) -> TaskFuture:
        """Validate and queue one task; returns at once."""
        return self.submit_many([task])[0]

    def submit_many(self, tasks: Iterable[Task]) -> list[TaskFuture]:
        """Validate all, then queue all (one hand-off per backend); returns at once.

        A task that can never run raises TaskError before anything is queued.
        """
        if not self._started:
            self.start()
        if self._closed:
            raise RuntimeError("the pilot is shut down")
        now = time.time()
        batches: dict[str, list[Submission]] = {}
        futures: list[TaskFuture] = []
        planned: list[tuple[Backend, Submission]] = []
        for task in tasks:
            backend = self.backend_for(task)
            backend.check(task)
            record = TaskRecord(
                uid=task.uid, name=task.name, kind=task.kind.value, cores=task.cores, gpus=task.gpus,
                tags=dict(task.tags), submitted=now, backend=backend.name,
            )
            future = TaskFuture(task, record)
            planned.append((backend, Submission(task, record, future)))
            futures.append(future)
        for backend, submission in planned:
            batches.setdefault(backend.name, []).append(submission)
            self.records.append(submission.record)
        for name, submissions in batches.items():
            self.backends[name].submit(submissions)
        return futures

    def cancel(self, future: TaskFuture) -> None:
        """Cancel a queued or running task (running executables are killed)."""
        self.backends[future.record.backend].cancel(Submission(future.task, future.record, future))

    # convenience -------------------------------------------------------------
    def run(self, tasks: Sequence[Task], timeout: float | None = None) -> list[TaskRecord]:
        """Submit all, wait for all; returns their records (in the tasks' order)."""
        futures = self.submit_many(tasks)
        concurrent.futures.wait(futures, timeout=timeout)
        return [f.record for f in futures]
