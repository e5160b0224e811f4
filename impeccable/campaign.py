"""The IMPECCABLE.v2 pipeline as a stream of tasks on one pilot.

Round r:  (r=0: dock a seed sample) -> train surrogate r -> infer over the library
in batches -> re-dock each batch's nominees -> MD/MM-GBSA on each re-dock shard's
nominees. Round r+1 retrains as soon as round r's re-docking is complete, while
round r's MD still runs.

Streaming selection. Exact top-K needs every inference batch first, which would
put a barrier between stages. Instead batch i (of B) nominates the best
``floor((i+1)K/B) - floor(iK/B)`` of its compounds not yet docked, so
re-docking starts with the first batch. Quotas depend only on batch indices,
never on completion order, so a run and its resumption (or a run on another
backend) re-dock the same compounds; batches are stratified samples of the
library, so the nominees approximate the global top-K. MD starts for a re-docked
compound as soon as it ranks in the top-M of everything docked so far, and at
the end of the round every compound of the final top-M has MD: streaming costs
at most a few speculative MD runs, never a missed hit.

Durability. Every result is committed with the mark that its unit of work is
done (see ``store``); a resumed run recomputes nothing that was committed. A
docking task's compounds are kept one by one, however the task ends (its ranks
write a line per compound), and a resumed run first stores what a killed
session's tasks left on disk (:func:`store_left_on_disk`).

Cost per task. What the runner asks of the store on every task is kept in
memory, read once per session: the docked compounds, the best-M docked
(:class:`TopDocked`), the MD compounds and each round's speculative MD; the
store is written, never re-read, on the hot path, so the manager's cost per
task does not grow with the campaign (``impeccable bench --workload campaign``).

Who does what: this module decides what runs when; :mod:`.stagetasks` has one
object per stage that builds its tasks and reads their outcomes; :mod:`.tasks` runs the handlers;
:mod:`.inputs` checks everything before the first task.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from . import leftout
from .campaign_md import MDRescoring
from .config import Campaign
from .events import InterruptGuard
from .gpuplan import use_gpus
from .inputs import CampaignInputError, check_same_campaign, make_pilot, size_warnings, validate_inputs
from .library_stage import CampaignLibrary
from .lock import RunDirLock
from .node_events import log_pilot_events
from .progress import CampaignProgress
from .runtime import Pilot, TaskFuture, TaskState
from .stages.library import LibraryRecord
from .stages.surrogate import nominate_batch
from .stagetasks import DockBatch, PoseChecking, StageTasks
from .store import Store, store_errors
from .tasks import TaskLoop

__all__ = ["CampaignInputError", "CampaignInterrupted", "CampaignRunner", "quota"]


class CampaignInterrupted(Exception):
    """Ctrl-C or SIGTERM: everything committed so far is kept; run the same command to resume."""


def quota(index: int, total: int, count: int) -> int:
    """Share of ``count`` for stratum ``index`` of ``total``; the shares sum to ``count`` exactly."""
    return (index + 1) * count // total - index * count // total


@dataclasses.dataclass
class RoundState:
    """Where the round whose inference runs stands; made afresh when a round's inference starts."""

    round: int
    batches_left: set[int]  # inference batches not scored yet
    redock_left: set[int]  # batches whose nominees are not docked yet
    batches: Iterator[tuple[int, list[LibraryRecord]]]  # the library, batch by batch, still to submit
    infer_inflight: int = 0
    md_checked: bool = False  # the final top-M has been sent to MD
    trained_next: bool = False  # round r+1's training has started


class CampaignRunner(MDRescoring):
    """Runs one campaign into one run directory; ``run()`` resumes whatever is already there."""

    def __init__(
        self,
        campaign: Campaign,
        run_dir: Path,
        *,
        progress: Any = None,
        pilot: Pilot | None = None,
        stages: StageTasks | None = None,
    ) -> None:
        self.c = campaign
        self.run_dir = Path(run_dir).resolve()  # tasks run in their own folders: no relative paths
        self.store = Store(self.run_dir / "campaign.db")
        self.progress = CampaignProgress(progress)
        self.stages = stages or StageTasks(campaign, self.run_dir)
        self.library = CampaignLibrary(campaign, self.store, self.stages, self.progress)
        self._pilot = pilot
        self.state: RoundState | None = None
        self.tasks: TaskLoop | None = None
        self.seed_shards_left = 0
        self.md_inflight: set[str] = set()
        # the store's answers the runner needs per task, read once (see the module docstring)
        self.docked: set[str] = set()
        self.top = TopDocked(campaign.md.top_m)
        self.md_done: set[str] = set()
        self.speculative: dict[int, set[str]] = {}
        self.last_docked_round = -1  # rounds after it have no docking yet: round r's top-M is the in-memory one

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Run (or resume) to the end; returns a summary.

        Raises CampaignInputError (nothing started) for unusable inputs, RunDirBusy when another run
        holds the directory, CampaignInterrupted on Ctrl-C/SIGTERM.
        """
        with RunDirLock(self.run_dir), store_errors(self.store.path):
            self.library.rows = validate_inputs(self.c, self.store).count
            for text in size_warnings(self.c, self.library.rows):
                leftout.warn(text)
            check_same_campaign(self.c, self.store, self.run_dir)
            self.docked = self.store.docked_ids()
            self.top.reset(self.store.best_docked_scored(self.c.md.top_m))
            self.last_docked_round = self.store.last_docked_round()
            self.md_done = self.store.md_ids()
            self.pilot = self._pilot or make_pilot(self.c)
            a = use_gpus(self.c, self.pilot.allocation, self.stages, self.store)  # each stage's GPUs in it
            routes = {k.value: v for k, v in self.pilot.routes.items()}
            session = self.store.begin_session(a.cores, routes, a.gpus, a.gpu_shares, nodes=a.nodes)
            log_pilot_events(self.pilot, self.run_dir, session)  # stalls and lost nodes, as they happen
            self._run_session(session)
        return self.summary()

    def _run_session(self, session: int) -> None:
        guard = InterruptGuard()
        self.tasks = TaskLoop(self.pilot, self.store, session, guard)
        status = "failed"
        with guard:
            try:
                self.pilot.start()
                self.library.prepare(self.tasks, self.pilot.allocation.cores, then=self._plan)
                self.tasks.run()
                if check_top_poses(self.c, self.store, self.stages.pose_checking, self.tasks, self.progress):
                    self.tasks.run()  # the run's last step: the report and the export only read the verdicts
                status = "done-with-failures" if self.tasks.failed else "done"
            except KeyboardInterrupt:
                status = "interrupted"
                with guard.deferred(raise_after=False):
                    self.tasks.drain()
                raise CampaignInterrupted(
                    f"interrupted; results so far are kept in {self.run_dir}: run the same command to resume"
                ) from None
            finally:
                with guard.deferred(raise_after=False):
                    self.pilot.shutdown(cancel_pending=status not in ("done", "done-with-failures"))
                    unrecorded = [r for r in self.pilot.records if r.uid not in self.tasks.recorded]
                    self.store.add_task_records(session, unrecorded)
                    self.store.end_session(session, status)
                    self.tasks.close()

    def summary(self) -> dict[str, Any]:
        failed = list(self.tasks.failed) if self.tasks else []
        return {"run_dir": str(self.run_dir), "stages": self.progress.as_dict(), "failed_tasks": failed}

    # ------------------------------------------------------------------ planning
    def _plan(self) -> None:
        """Once the library is prepared: store what a killed session left on disk, then start the first round
        that is not complete (round 0 on a new run)."""
        store_left_on_disk(self.stages, self.store, self.tasks.guard, self._note_docked)
        self.n_batches = max(1, -(-self.library.size // self.c.infer.batch_size))
        r = next((r for r in range(self.c.campaign.rounds) if not self._round_complete(r)), None)
        if r == 0:
            self._seed_docking()
        elif r is not None:
            self._train(r)

    def _round_complete(self, r: int) -> bool:
        if self.store.model(r) is None or len(self.store.done_batches(r)) < self.n_batches:
            return False
        return self.store.selected(r, "redock") <= self.docked and self._top_ids(r) <= self.md_done

    # ------------------------------------------------------------------ 1. seed docking
    def _seed_docking(self) -> None:
        stored = self.store.selected_compounds(0, "seed")
        sample = self.library.seed_sample(stored)
        if not stored:
            leftout.check_seed_sample(self.c, self.store, len(sample), self.library.size)
        self.store.select_compounds(0, "seed", sample)
        todo = [rec for rec in sample if rec.id not in self.docked]
        self.progress.tick("seed dock", total=len(sample), done=len(sample) - len(todo))
        shards = _chunks(todo, self.c.dock.ligands_per_task)
        self.seed_shards_left = len(shards)
        for shard, chunk in enumerate(shards):
            self._dock(chunk, shard, 0, "seed")
        if not todo:
            self._train(0)

    # ------------------------------------------------------------------ docking (seed and re-dock)
    def _dock(self, records: list[LibraryRecord], index: int, r: int, origin: str) -> None:
        batch = self.stages.docking.batch(records, self.tasks.session, index, r, origin)
        self.tasks.submit(self.stages.docking.task(batch), partial(self._docked, batch))

    def _docked(self, batch: DockBatch, future: TaskFuture) -> None:
        """Keep every compound the task finished, however it ended: a rank writes each compound's line as
        it finishes, so a task canceled or failed halfway still has results (the rest is docked again)."""
        complete = not self.tasks.failed_task(future, batch.stage)
        rows = self.stages.docking.rows(batch, complete=complete)
        self.store.add_docking(rows, batch.key)
        self.stages.docking.mark_stored(batch)
        self._note_docked(rows)
        ok = sum(row.score is not None for row in rows)
        self.progress.tick(batch.stage, done=ok, failed=len(batch.records) - ok)
        if batch.origin == "seed":
            self.seed_shards_left -= 1
            if self.seed_shards_left == 0:
                self._train(0)
            return
        self.state.redock_left.discard(batch.index)  # type: ignore[union-attr]
        if future.record.state is TaskState.DONE:
            self._md_for_shard(batch.round, batch.index)
        self._maybe_round_end()

    # ------------------------------------------------------------------ 2. training
    def _train(self, r: int) -> None:
        if self.tasks.draining:
            return  # interrupted: the next stage starts when the run is resumed
        existing = self.store.model(r)
        if existing is not None and Path(existing[0]).is_file():
            self.progress.tick(f"train r{r}", total=1, done=1)
            self._start_inference(r)
            return
        scores = [(smiles, score) for _, smiles, score in self.store.dock_scores()]
        if len(scores) < leftout.MIN_TRAINING_SCORES:
            raise leftout.too_few_to_train(self.c, self.store, len(scores), self.library.size, self.run_dir)
        self.progress.tick(f"train r{r}", total=1)
        self.tasks.submit(self.stages.training.task(r, scores), partial(self._trained, r, len(scores)))

    def _trained(self, r: int, n_scores: int, future: TaskFuture) -> None:
        if self.tasks.failed_task(future, "train"):
            if future.record.state is TaskState.FAILED:
                raise RuntimeError(f"surrogate training failed: {future.record.error}")
            return  # canceled (Ctrl-C): trained again on resume
        report = {**self.stages.training.report(future), "n_scores": n_scores}
        self.store.add_model(r, str(self.stages.training.model_path(r)), report)
        self.progress.tick(f"train r{r}", done=1)
        self._start_inference(r)

    # ------------------------------------------------------------------ 3. inference
    def _start_inference(self, r: int) -> None:
        done = self.store.done_batches(r)
        left = set(range(self.n_batches)) - done
        self.state = RoundState(
            round=r,
            batches_left=left,
            batches=self.library.batches(left),
            redock_left={i for i in range(self.n_batches) if quota(i, self.n_batches, self.c.redock.top_k)},
        )
        n, scored, filtered, failed = self.store.inference_counts(r)
        self.progress.tick(f"infer r{r}", total=self.library.size, done=scored + filtered, failed=failed)
        for batch in sorted(done):  # nominees of batches scored in an earlier session, not docked yet
            self._redock_batch(r, batch)
        self._feed_inference()
        self._maybe_round_end()

    def _feed_inference(self) -> None:
        """Keep a bounded number of batches in flight (a library of any size streams); ids wait here."""
        state = self.state
        assert state is not None
        if self.tasks.draining:
            return  # stopping: nothing new is submitted, so no batch is read
        limit = 4 * max(1, self.pilot.allocation.cores)
        model_path, _ = self.store.model(state.round)  # type: ignore[misc]
        while state.infer_inflight < limit and (item := next(state.batches, None)) is not None:
            batch, chunk = item
            ids, smiles = [rec.id for rec in chunk], [rec.smiles for rec in chunk]
            task = self.stages.inference.task(state.round, batch, model_path, ids, smiles)
            self.tasks.submit(task, partial(self._inferred, state.round, batch, ids, smiles))
            state.infer_inflight += 1

    def _inferred(self, r: int, batch: int, ids: list[str], smiles: list[str], future: TaskFuture) -> None:
        state = self.state
        assert state is not None
        state.infer_inflight -= 1
        state.batches_left.discard(batch)
        if self.tasks.failed_task(future, "infer"):
            self.progress.tick(f"infer r{r}", failed=len(ids))
            state.redock_left.discard(batch)
        else:
            result = self.stages.inference.outcome(future, ids)
            picked = nominate_batch(ids, result.scores, self.docked, quota(batch, self.n_batches, self.c.redock.top_k))
            nominees = [(ids[i], smiles[i], float(result.scores[i])) for i in picked]
            filtered = result.filtered if r == 0 else ()  # the same filters every round
            self.store.add_predictions(r, batch, ids, result.scores, result.counts, result.failures, nominees, filtered)
            self.progress.tick(f"infer r{r}", done=result.accounted, failed=len(result.failures))
            self._redock_batch(r, batch)
        self._feed_inference()
        self._maybe_round_end()

    # ------------------------------------------------------------------ 4. re-docking
    def _redock_batch(self, r: int, batch: int) -> None:
        if not quota(batch, self.n_batches, self.c.redock.top_k):
            return
        stored = self.store.selected_compounds(r, "redock", batch)
        best_first = sorted(stored, key=lambda s: (s[2], s[0]))
        todo = [LibraryRecord(cid, smi) for cid, smi, _ in best_first if cid not in self.docked]
        self.progress.tick(f"redock r{r}", total=len(stored), done=len(stored) - len(todo))
        if todo:
            self._dock(todo, batch, r, "redock")
        else:
            self.state.redock_left.discard(batch)  # type: ignore[union-attr]
            self._md_for_shard(r, batch)

    # ------------------------------------------------------------------ round end
    def _maybe_round_end(self) -> None:
        state = self.state
        if state is None or state.batches_left or state.redock_left:
            return
        if not state.md_checked:
            # every compound of the final top-M gets MD (those nominated while streaming already have it)
            state.md_checked = True
            if not self.tasks.draining:
                leftout.check_nominees(self.c, self.store, state.round)
            top = self._top_docked(state.round)
            self._run_md(state.round, [cid for cid in top if cid not in self.md_done and cid not in self.md_inflight])
        if not state.trained_next and state.round + 1 < self.c.campaign.rounds:
            state.trained_next = True  # round r+1 trains on every docking score; round r's MD keeps running
            self._train(state.round + 1)


def store_left_on_disk(
    stages: StageTasks, store: Store, guard: InterruptGuard, on_rows: Callable[[list[Any]], None]
) -> None:
    """A session killed with its docking tasks (kill -9, a lost node) left their finished compounds on disk
    only: a resumed run stores them (and hands them to ``on_rows``) before it decides what to dock, so none
    is docked twice."""
    for batch in stages.docking.unstored():
        with guard.deferred():  # a folder is stored and marked, or neither
            rows = stages.docking.rows(batch, complete=False)
            store.add_docking(rows, batch.key)
            stages.docking.mark_stored(batch)
        on_rows(rows)


def check_top_poses(c: Campaign, store: Store, stage: PoseChecking, tasks: TaskLoop, progress: CampaignProgress) -> int:
    """Submit PoseBusters' checks of the best ``[hits] check_poses`` poses that have no verdict yet (the
    ranking is final once every other task is done), split over about as many tasks as the pilot has cores;
    returns how many tasks. A resumed run checks only what it has not."""
    if not c.hits.check_poses:
        return 0
    from .results import ranked_hits

    checked = store.pose_checks()
    todo = [(h.id, store.pose(h.id) or "") for h in ranked_hits(store)[: c.hits.check_poses] if h.id not in checked]
    if not todo:
        return 0
    progress.tick("pose check", total=len(todo))
    parts = _chunks(todo, -(-len(todo) // max(1, tasks.pilot.allocation.cores)))

    def checked_part(size: int, future: TaskFuture) -> None:
        if tasks.failed_task(future, "pose check"):  # checked again on resume
            progress.tick("pose check", failed=size)
            return
        verdicts = stage.outcome(future)
        store.add_pose_checks(verdicts)
        progress.tick("pose check", done=len(verdicts))

    for i, part in enumerate(parts):
        tasks.submit(stage.task(i, part), partial(checked_part, len(part)))
    return len(parts)


class TopDocked:
    """The ``m`` best docking scores so far (lowest first, ties broken by id, as ``Store.best_docked``)."""

    def __init__(self, m: int) -> None:
        self.m = m
        self._best: list[tuple[float, str]] = []
        self.ids: set[str] = set()

    def reset(self, scored: list[tuple[float, str]]) -> None:
        self._best = sorted(scored)[: self.m]
        self.ids = {cid for _, cid in self._best}

    def add(self, score: float, cid: str) -> None:
        if self.m == 0 or (len(self._best) == self.m and (score, cid) >= self._best[-1]):
            return
        bisect.insort(self._best, (score, cid))
        self.ids.add(cid)
        if len(self._best) > self.m:
            self.ids.discard(self._best.pop()[1])

    def ranked(self) -> list[str]:
        return [cid for _, cid in self._best]


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
