"""The campaign's MD rescoring, as a mixin of :class:`~.campaign.CampaignRunner` (whose state it uses: the
store, the task loop, the in-memory top-M and MD sets): which compounds get MD while a round streams and at its
end, and one compound's ensemble as three steps (prepare, its replicas side by side, combine)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .runtime import Task, TaskFuture, TaskState
from .stagetasks import MDJob


class MDRescoring:
    """MD for the top-M docked compounds (see :meth:`_md_for_shard`); the runner provides the attributes."""

    c: Any
    store: Any
    stages: Any
    tasks: Any
    progress: Any
    top: Any
    docked: set[str]
    md_done: set[str]
    md_inflight: set[str]
    speculative: dict[int, set[str]]
    last_docked_round: int
    _maybe_round_end: Callable[[], None]

    # ------------------------------------------------------------------ 5. MD rescoring
    def _md_for_shard(self, r: int, batch: int) -> None:
        """Start MD at once for this shard's compounds that rank in the current top-M of all docked compounds.

        Speculative: a later shard may push one out of the top-M, and early in a round it often does (the
        full 1.6 M screen started 12 MD runs for a top-M of 3 before this budget). So a round starts at most
        ``md.top_m`` speculative runs; the round end makes sure the final top-M all have MD. Streaming thus
        costs at most top-M extra MD runs per round and never misses a hit.
        """
        top = self._top_ids(r)
        if r not in self.speculative:  # survives a resume: the budget is not spent twice
            self.speculative[r] = self.store.speculative_md(r)
        started = self.speculative[r]
        mine = sorted(cid for cid in self.store.selected(r, "redock", batch) if cid in top)
        budget = max(self.c.md.top_m - len(started), 0)
        fresh = [cid for cid in mine if cid not in started][:budget]
        self._run_md(r, [cid for cid in mine if cid in started or cid in fresh], batch)

    def _top_docked(self, r: int) -> list[str]:
        """Round ``r``'s top-M: of compounds docked by round ``r`` (a resumed run may have docked later rounds'
        compounds before round r's MD; then the store answers, otherwise the in-memory best-M)."""
        if self.last_docked_round <= r:
            return self.top.ranked()
        return self.store.best_docked(self.c.md.top_m, max_round=r)

    def _top_ids(self, r: int) -> set[str]:
        """:meth:`_top_docked` as a set: the in-memory one where it answers from memory (O(1), not O(top-M))."""
        return self.top.ids if self.last_docked_round <= r else set(self._top_docked(r))

    def _note_docked(self, rows: list[Any]) -> None:
        for row in rows:
            self.last_docked_round = max(self.last_docked_round, row.round)
            if row.id not in self.docked:  # the store keeps the first result of a compound, so does this
                self.docked.add(row.id)
                if row.score is not None:
                    self.top.add(row.score, row.id)

    def _run_md(self, r: int, ids: list[str], batch: int = -1) -> None:
        if self.tasks.draining:
            return  # stopping: the resumed run decides (and records) which compounds get MD
        self.store.select(r, "md", ids, batch)
        if batch >= 0:
            self.speculative.setdefault(r, set()).update(ids)
        done = self.md_done
        self.progress.tick(f"md r{r}", total=len(ids), done=sum(cid in done for cid in ids))
        for cid in ids:
            if cid in done or cid in self.md_inflight:
                continue
            self.md_inflight.add(cid)
            self._md_prepare(self.stages.md.job(r, cid, self.store.pose(cid) or ""))

    # One compound's ensemble is three steps (see stages.md_tasks): prepare, its replicas side by side, combine.
    # A step whose output is on disk from the same inputs (an interrupted run) is not run again.
    def _md_prepare(self, job: MDJob) -> None:
        if self.stages.md.prepared(job):
            self._md_replicas(job)
        else:
            self._md_submit(job, self.stages.md.prepare_task(job), lambda _: self._md_replicas(job))

    def _md_replicas(self, job: MDJob) -> None:
        job.replicas_left = {i for i in range(job.replicas) if not self.stages.md.replica_done(job, i)}
        if not job.replicas_left:
            self._md_combine(job)
        for i in sorted(job.replicas_left):
            self._md_submit(job, self.stages.md.replica_task(job, i), partial(self._md_replica_done, job, i))

    def _md_replica_done(self, job: MDJob, index: int, _: TaskFuture) -> None:
        job.replicas_left.discard(index)
        if not job.replicas_left:
            self._md_combine(job)

    def _md_combine(self, job: MDJob) -> None:
        self._md_submit(job, self.stages.md.combine_task(job), partial(self._md_combined, job))

    def _md_combined(self, job: MDJob, future: TaskFuture) -> None:
        result = self.stages.md.outcome(future, job)
        self.store.add_md(
            job.cid, job.round, result["binding_energy_kcal_mol"], result.get("stderr_kcal_mol"), result, None
        )
        self.md_done.add(job.cid)
        self.progress.tick(f"md r{job.round}", done=1)
        self.md_inflight.discard(job.cid)

    def _md_submit(self, job: MDJob, task: Task, then: Callable[[TaskFuture], None]) -> None:
        self.tasks.submit(task, partial(self._md_step_done, job, then))

    def _md_step_done(self, job: MDJob, then: Callable[[TaskFuture], None], future: TaskFuture) -> None:
        """Go on when a step is DONE. The compound's first failed step is its failure (stored; a resumed run
        does not retry it) and its other steps' outcomes are ignored; a canceled step is redone on resume."""
        state = future.record.state
        if job.error is None and state is TaskState.DONE:
            then(future)
        elif job.error is None and state is TaskState.FAILED:
            self.tasks.failed_task(future, "md")
            job.error = future.record.error or "failed"
            self.store.add_md(job.cid, job.round, None, None, None, job.error)
            self.md_done.add(job.cid)
            self.progress.tick(f"md r{job.round}", failed=1)
            self.md_inflight.discard(job.cid)
        self._maybe_round_end()
