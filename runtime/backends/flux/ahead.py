"""Flux jobs submitted ahead of their slots, held at urgency 0, let go when the pilot places them.

A Flux job's ingest (signing, the KVS commit that job-ingest batches over a 10 ms window, the
job-manager's announcement) costs tens of milliseconds on a busy node. Done when the pilot lends the
slots, it leaves them idle between one task's end and the next one's ``alloc``. So a partition keeps up
to ``limit`` of its waiting tasks already submitted with urgency 0 (held: Flux never allocates them, and
they take no resources), and when the pilot places one, a single ``job-manager.urgency`` RPC lets it
go: what is left on the critical path is the priority update and the scheduler's ``alloc``.

Only a task whose jobspec cannot depend on where the pilot puts it qualifies: one in a partition of a
single broker (the rank constraint is always that broker) that asks for no GPU (the devices a task
sees come from its placement). Others are submitted when placed, as before.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ..base import Submission

RELEASED_URGENCY = 16  # FLUX_JOB_URGENCY_DEFAULT: what a job submitted the ordinary way gets
SCAN_LIMIT = 256  # waiting tasks looked at per top-up (the queue may hold many that do not qualify)


class _HasSub(Protocol):
    sub: Submission


Job = TypeVar("Job", bound=_HasSub)


class HeldJobs(Generic[Job]):
    """A partition's held jobs, by task uid. ``submit`` submits a task's job held (None if it could not),
    ``discard`` cancels one in Flux; the reactor lets a taken one go (its ``_release``)."""

    def __init__(
        self, limit: int, brokers: int, submit: Callable[[Submission], Job | None], discard: Callable[[Job], None]
    ) -> None:
        self.limit = limit if brokers == 1 else 0
        self._submit = submit
        self._discard = discard
        self.held: dict[str, Job] = {}
        self.refused: set[str] = set()  # tasks whose held job Flux refused or lost: submitted when placed

    def qualifies(self, sub: Submission) -> bool:
        return self.limit > 0 and sub.task.gpus == 0 and sub.task.uid not in self.refused

    def top_up(self, waiting: collections.deque[Submission]) -> None:
        """Submit held jobs for the first waiting tasks that qualify and have none, up to the limit."""
        if len(self.held) >= self.limit:
            return
        for looked, sub in enumerate(waiting):
            if looked >= SCAN_LIMIT or len(self.held) >= self.limit:
                return
            if sub.task.uid not in self.held and self.qualifies(sub):
                job = self._submit(sub)
                if job is None:  # its jobspec cannot be built: it fails as a task once placed
                    self.refused.add(sub.task.uid)
                else:
                    self.held[sub.task.uid] = job

    def take(self, sub: Submission) -> Job | None:
        """The held job of ``sub``, no longer held: the pilot has placed the task."""
        self.refused.discard(sub.task.uid)
        return self.held.pop(sub.task.uid, None)

    def is_held(self, job: Job) -> bool:
        return self.held.get(job.sub.task.uid) is job

    def discard(self, uid: str) -> None:
        """The task will not run here (canceled while it waited): cancel its held job in Flux."""
        self.refused.discard(uid)
        job = self.held.pop(uid, None)
        if job is not None:
            self._discard(job)

    def forget(self, job: Job) -> None:
        """The held job is gone from Flux (rejected, or canceled by someone else): its task is submitted
        the ordinary way when placed, not held again (a refusal that persists must not loop)."""
        if self.is_held(job):
            del self.held[job.sub.task.uid]
            self.refused.add(job.sub.task.uid)

    def discard_all(self) -> None:
        """Cancel every held job (the partition is failing): none stays behind in an instance it does not own."""
        held, self.held = list(self.held.values()), {}
        for job in held:
            try:
                self._discard(job)
            except Exception:  # noqa: BLE001 - the instance may be gone
                pass
