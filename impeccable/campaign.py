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
done (see ``store``); a resumed run recomputes nothing that was committed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import Campaign
from .runtime.backends.base import TaskFailed, TaskFuture
from .runtime.pilot import Pilot
from .runtime.records import TaskState
from .runtime.resources import Allocation
from .runtime.task import Task, executable_task, function_task
from .stages.library import LibraryRecord, read_library, sample_records
from .store import DockRow, Store


class CampaignInterrupted(Exception):
    """Ctrl-C or SIGTERM: everything committed so far is kept; run the same command to resume."""


@dataclasses.dataclass
class StageProgress:
    total: int = 0
    done: int = 0
    failed: int = 0


Handler = Callable[[TaskFuture], None]


def quota(index: int, total: int, count: int) -> int:
    """Share of ``count`` for stratum ``index`` of ``total``; the shares sum to ``count`` exactly."""
    return (index + 1) * count // total - index * count // total


class CampaignRunner:
    """Runs one campaign into one run directory; ``run()`` resumes whatever is already there."""

    def __init__(self, campaign: Campaign, run_dir: Path, *, progress: Any = None,
                 pilot: Pilot | None = None) -> None:
        self.c = campaign
        self.run_dir = Path(run_dir).resolve()  # tasks run in their own folders: no relative paths
        self.work = self.run_dir / "work"
        self.store = Store(self.run_dir / "campaign.db")
        self.progress = progress  # an object with update(stage, StageProgress), or None
        self._pilot = pilot
        self.events: queue.SimpleQueue[tuple[TaskFuture, Handler]] = queue.SimpleQueue()
        self.outstanding = 0
        self.stage: dict[str, StageProgress] = {}
        self.failed_tasks: list[str] = []
        self.md_inflight: set[str] = set()
        self.draining = False
        self._check_same_campaign()

    # ------------------------------------------------------------------ setup
    def _check_same_campaign(self) -> None:
        """A run directory belongs to one campaign; settings that change results must not change on resume."""
        fingerprint = json.dumps(
            {k: v for k, v in self.c.model_dump(mode="json").items() if k not in ("pilot", "source")}, sort_keys=True)
        previous = self.store.get_meta("campaign")
        if previous is None:
            self.store.set_meta("campaign", fingerprint)
            self.store.set_meta("name", self.c.name)
        elif previous != fingerprint:
            old, new = json.loads(previous), json.loads(fingerprint)
            changed = sorted(f"{s}.{k}" for s in new for k in set(old.get(s, {})) | set(new[s])
                             if old.get(s, {}).get(k) != new[s].get(k))
            raise ValueError(
                f"{self.run_dir}: this run directory holds campaign results made with other settings "
                f"({', '.join(changed) or 'changed sections'}); use a new --run-dir or restore the settings")

    def _make_pilot(self) -> Pilot:
        cores = self.c.pilot.cores or Allocation.detect().cores
        return Pilot(Allocation(cores=cores, gpus=self.c.pilot.gpus), routes=dict(self.c.pilot.routes),
                     shares=self.c.pilot.shares or None, options=self.c.pilot.options or None)

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Run (or resume) to the end; returns a summary. Raises CampaignInterrupted on Ctrl-C/SIGTERM."""
        self.pilot = self._pilot or self._make_pilot()
        self.session = self.store.begin_session(self.pilot.allocation.cores,
                                                {k.value: v for k, v in self.pilot.routes.items()})
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
        status = "failed"
        try:
            self.pilot.start()
            self._plan()
            self._loop()
            status = "done" if not self.failed_tasks else "done-with-failures"
        except KeyboardInterrupt:
            status = "interrupted"
            self._drain()
            raise CampaignInterrupted(
                f"interrupted; results so far are kept in {self.run_dir}: run the same command to resume") from None
        finally:
            self.pilot.shutdown(cancel_pending=status not in ("done", "done-with-failures"))
            self.store.add_task_records(self.session, self.pilot.records)
            self.store.end_session(self.session, status)
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)
        return self.summary()

    def _loop(self) -> None:
        while self.outstanding:
            future, handler = self.events.get()
            self.outstanding -= 1
            try:
                handler(future)
            finally:
                self.store.add_task_records(self.session, [future.record])

    def _drain(self) -> None:
        """After Ctrl-C: stop the pilot, then keep the results of tasks that finished meanwhile."""
        self.draining = True
        self.pilot.shutdown(cancel_pending=True)
        while True:
            try:
                future, handler = self.events.get_nowait()
            except queue.Empty:
                return
            if future.record.state is TaskState.DONE:
                try:
                    handler(future)
                except Exception as exc:  # noqa: BLE001 - keep draining the others
                    print(f"warning: could not keep the result of {future.record.name}: {exc}", file=sys.stderr)

    def _submit(self, task: Task, handler: Handler) -> None:
        if self.draining:
            return
        future = self.pilot.submit(task)
        self.outstanding += 1
        future.add_done_callback(lambda f: self.events.put((f, handler)))

    def _tick(self, stage: str, done: int = 0, failed: int = 0, total: int = 0) -> None:
        p = self.stage.setdefault(stage, StageProgress())
        p.total += total
        p.done += done
        p.failed += failed
        if self.progress is not None:
            self.progress.update(stage, p)

    def _task_failed(self, future: TaskFuture, stage: str) -> bool:
        """True (and noted) if the task did not finish DONE; canceled tasks are simply redone on resume."""
        record = future.record
        if record.state is TaskState.DONE:
            return False
        if record.state is TaskState.FAILED:
            self.failed_tasks.append(f"{stage} {record.name}: {record.error}")
            print(f"warning: {stage} task {record.name} failed: {record.error}", file=sys.stderr)
        return True

    # ------------------------------------------------------------------ planning
    def _plan(self) -> None:
        """Decide what is left to do in round 0 (or in the round a resumed run stopped in) and submit it."""
        self.library_size = self._count_library()
        self.n_batches = max(1, -(-self.library_size // self.c.infer.batch_size))
        done_rounds = 0
        for r in range(self.c.campaign.rounds):
            if self._round_complete(r):
                done_rounds = r + 1
        if done_rounds == self.c.campaign.rounds:
            return
        self._start_round(done_rounds)

    def _count_library(self) -> int:
        n = 0
        for n, _ in enumerate(self._library(), start=1):
            pass
        return n

    def _library(self) -> Iterator[LibraryRecord]:
        lib = self.c.library
        records = read_library(lib.path, id_column=lib.id_column, smiles_column=lib.smiles_column)
        for i, record in enumerate(records):
            if lib.limit is not None and i >= lib.limit:
                return
            yield record

    def _round_complete(self, r: int) -> bool:
        if self.store.model(r) is None or len(self.store.done_batches(r)) < self.n_batches:
            return False
        docked, md = self.store.docked_ids(), self.store.md_ids()
        return self.store.selected(r, "redock") <= docked and set(self._top_docked()) <= md

    def _start_round(self, r: int) -> None:
        self.round = r
        self.redock_pending: dict[int, int] = {}  # batch -> outstanding re-dock tasks
        self.batches_left = set(range(self.n_batches)) - self.store.done_batches(r)
        if r == 0:
            self._seed_docking()
        else:
            self._train(r)

    # ------------------------------------------------------------------ 1. seed docking
    def _seed_docking(self) -> None:
        sample = self._seed_sample()
        self.store.select(0, "seed", (rec.id for rec in sample))
        todo = [rec for rec in sample if rec.id not in self.store.docked_ids()]
        self._tick("seed dock", total=len(sample), done=len(sample) - len(todo))
        self.seed_shards_left = 0
        for shard, chunk in enumerate(_chunks(todo, self.c.dock.ligands_per_task)):
            self.seed_shards_left += 1
            self._submit_dock(chunk, f"s{self.session}-r0-seed-{shard:04d}", 0, "seed", self._seed_dock_done)
        if not todo:
            self._train(0)

    def _seed_sample(self) -> list[LibraryRecord]:
        """A seeded sample of compounds that pass the filters (same sample on every resume)."""
        from .stages.filters import FilterRules, check

        chosen = self.store.selected(0, "seed")
        if chosen:
            return [rec for rec in self._library() if rec.id in chosen]
        rules = FilterRules(**self.c.library.filters.model_dump())
        need = self.c.dock.seed_sample
        picked = sample_records(self._library(), need * 3 if rules.active else need, seed=self.c.campaign.seed)
        passing = [rec for rec in picked if check(rec.smiles, rules) is None] if rules.active else picked
        return passing[:need]

    def _seed_dock_done(self, future: TaskFuture, meta: dict[str, Any]) -> None:
        self._dock_done(future, meta, "seed dock")
        self.seed_shards_left -= 1
        if self.seed_shards_left == 0:
            self._train(0)

    # ------------------------------------------------------------------ docking tasks (seed and re-dock)
    def _submit_dock(self, records: list[LibraryRecord], key: str, r: int, origin: str,
                     handler: Callable[[TaskFuture, dict[str, Any]], None]) -> None:
        folder = self.work / "dock" / key
        out = folder / "out"
        shutil.rmtree(out, ignore_errors=True)  # a killed run may have left a partial rank file
        out.mkdir(parents=True)
        ligands = folder / "ligands.csv"
        _write_csv(ligands, records)
        d = self.c.dock
        argv = [sys.executable, "-m", "impeccable.stages.dock", "--receptor", str(self.c.receptor.path),
                "--ligands", str(ligands), "--out-dir", str(out), "--exhaustiveness", str(d.exhaustiveness),
                "--seed", str(d.seed), "--cpu", "1", *self.c.ligands.dock_args()]
        if self.c.receptor.site is not None:
            argv += ["--site", str(self.c.receptor.site)]
        task = executable_task(argv, name=f"dock {key}", ranks=d.ranks, mpi=d.ranks > 1, cwd=str(folder),
                               tags={"stage": f"{origin} dock", "round": str(r), "campaign": self.c.name},
                               stderr=str(folder / "stderr.log"))
        meta = {"records": records, "out": out, "key": key, "round": r, "origin": origin}
        self._submit(task, lambda f: handler(f, meta))

    def _dock_done(self, future: TaskFuture, meta: dict[str, Any], stage: str) -> list[DockRow]:
        from .stages.dock import read_dock_results

        if self._task_failed(future, stage):
            self._tick(stage, failed=len(meta["records"]))
            return []
        by_id = {rec.id: rec for rec in meta["records"]}
        rows = []
        for item in read_dock_results(meta["out"]):
            cid = item["id"]
            if cid not in by_id:
                continue
            rows.append(DockRow(cid, by_id[cid].smiles, meta["round"], meta["origin"], item.get("score_kcal_mol"),
                                item.get("pose_sdf"), item.get("error"), item.get("state_smiles")))
        missing = set(by_id) - {row.id for row in rows}
        rows += [DockRow(cid, by_id[cid].smiles, meta["round"], meta["origin"], None, None,
                         "no result written by the docking task") for cid in sorted(missing)]
        self.store.add_docking(rows, meta["key"])
        self._tick(stage, done=sum(r.score is not None for r in rows), failed=sum(r.score is None for r in rows))
        return rows

    # ------------------------------------------------------------------ 2. training
    def _train(self, r: int) -> None:
        existing = self.store.model(r)
        if existing is not None and Path(existing[0]).is_file():
            self._tick(f"train r{r}", total=1, done=1)
            self._start_inference(r)
            return
        scores = [(smiles, score) for _, smiles, score in self.store.dock_scores()]
        if len(scores) < 8:
            raise RuntimeError(f"only {len(scores)} compounds docked successfully: too few to train the surrogate")
        model_path = self.run_dir / "models" / f"surrogate.r{r}.pt"
        model_path.parent.mkdir(parents=True, exist_ok=True)
        s = self.c.surrogate
        task = function_task("impeccable.work:train_surrogate", scores, str(model_path), s.epochs,
                             self.c.campaign.seed + r, s.val_fraction, s.cores, name=f"train r{r}",
                             cores_per_rank=s.cores, tags={"stage": "train", "round": str(r), "campaign": self.c.name})
        self._tick(f"train r{r}", total=1)

        def done(future: TaskFuture) -> None:
            if self._task_failed(future, "train"):
                raise RuntimeError(f"surrogate training failed: {future.record.error}")
            report = future.result()
            report["n_scores"] = len(scores)
            self.store.add_model(r, str(model_path), report)
            self._tick(f"train r{r}", done=1)
            self._start_inference(r)

        self._submit(task, done)

    # ------------------------------------------------------------------ 3. inference
    def _start_inference(self, r: int) -> None:
        self.round = r
        self.md_checked = False  # round-end checks, once per round
        self.trained_next = False
        self.batches_left = set(range(self.n_batches)) - self.store.done_batches(r)
        self._tick(f"infer r{r}", total=self.library_size)
        done_counts = self.store.inference_counts(r)
        self._tick(f"infer r{r}", done=done_counts[1] + done_counts[2], failed=done_counts[3])
        self.redock_left = {i for i in range(self.n_batches) if quota(i, self.n_batches, self.c.redock.top_k)}
        # re-dock nominees of batches finished in an earlier session but not docked yet
        docked = self.store.docked_ids()
        for batch in sorted(set(range(self.n_batches)) - self.batches_left):
            self._redock_batch(r, batch, done_already=docked)
        self._batch_iter = self._batches(r)
        self.infer_inflight = 0
        self._feed_inference()
        self._maybe_round_end()

    def _batches(self, r: int) -> Iterator[tuple[int, list[LibraryRecord]]]:
        for batch, chunk in enumerate(_chunks_iter(self._library(), self.c.infer.batch_size)):
            if batch in self.batches_left:
                yield batch, chunk

    def _feed_inference(self) -> None:
        """Keep a bounded number of batches in flight, so a library of any size streams through memory."""
        limit = 4 * max(1, self.pilot.allocation.cores)
        model_path, _ = self.store.model(self.round)  # type: ignore[misc]
        filters = self.c.library.filters.model_dump()
        while self.infer_inflight < limit:
            item = next(self._batch_iter, None)
            if item is None:
                return
            batch, chunk = item
            task = function_task("impeccable.work:infer_batch", model_path, [tuple(rec) for rec in chunk], filters,
                                 name=f"infer r{self.round} b{batch:05d}",
                                 tags={"stage": "infer", "round": str(self.round), "campaign": self.c.name})
            r = self.round
            self._submit(task, lambda f, b=batch, n=len(chunk), r=r: self._infer_done(f, r, b, n))
            self.infer_inflight += 1

    def _infer_done(self, future: TaskFuture, r: int, batch: int, n: int) -> None:
        self.infer_inflight -= 1
        stage = f"infer r{r}"
        if self._task_failed(future, "infer"):
            self._tick(stage, failed=n)
            self.batches_left.discard(batch)
            self.redock_left.discard(batch)
        else:
            out = future.result()
            from .stages.surrogate import nominate

            scored = out["scored"]
            k = quota(batch, self.n_batches, self.c.redock.top_k)
            docked = self.store.docked_ids()
            nominees = nominate(((cid, score) for cid, _, score in scored), docked, k)
            counts = (n, len(scored), len(out["filtered"]), len(out["failed"]))
            self.store.add_predictions(r, batch, scored, counts, out["failed"], nominees)
            self.batches_left.discard(batch)
            self._tick(stage, done=len(scored) + len(out["filtered"]), failed=len(out["failed"]))
            self._redock_batch(r, batch, done_already=docked)
        self._feed_inference()
        self._maybe_round_end()

    # ------------------------------------------------------------------ 4. re-docking
    def _redock_batch(self, r: int, batch: int, done_already: set[str]) -> None:
        k = quota(batch, self.n_batches, self.c.redock.top_k)
        if not k:
            return
        stored = self.store.batch_predictions(r, sorted(self.store.selected(r, "redock", batch)))
        todo = [LibraryRecord(cid, smi) for cid, smi, _ in sorted(stored, key=lambda s: (s[2], s[0]))
                if cid not in done_already]
        self._tick(f"redock r{r}", total=len(stored), done=len(stored) - len(todo))
        if not todo:
            self.redock_left.discard(batch)
            self._md_for_shard(r, batch)
            return
        self._submit_dock(todo, f"s{self.session}-r{r}-redock-{batch:05d}", r, "redock",
                          lambda f, meta, b=batch: self._redock_done(f, meta, r, b))

    def _redock_done(self, future: TaskFuture, meta: dict[str, Any], r: int, batch: int) -> None:
        self._dock_done(future, meta, f"redock r{r}")
        self.redock_left.discard(batch)
        if future.record.state is TaskState.DONE:
            self._md_for_shard(r, batch)
        self._maybe_round_end()

    # ------------------------------------------------------------------ 5. MD rescoring
    def _md_for_shard(self, r: int, batch: int) -> None:
        """Start MD at once for this shard's compounds that rank in the current top-M of all docked compounds.

        Speculative: a later shard may push one out of the top-M; the round end makes sure the final
        top-M all have MD, so the cost of streaming is at most a few extra MD runs, never a missed hit.
        """
        top = set(self._top_docked())
        picks = sorted(cid for cid in self.store.selected(r, "redock", batch) if cid in top)
        self._run_md(r, picks, batch)

    def _top_docked(self) -> list[str]:
        """The best ``md.top_m`` docked compounds of the campaign so far (ties broken by id)."""
        ranked = sorted((score, cid) for cid, score in self.store.dock_score_map().items())
        return [cid for _, cid in ranked[: self.c.md.top_m]]

    def _run_md(self, r: int, ids: list[str], batch: int = -1) -> None:
        self.store.select(r, "md", ids, batch)
        done = self.store.md_ids()
        md = self.c.md
        pdb = self.c.receptor.path / "receptor.pdb"
        self._tick(f"md r{r}", total=len(ids), done=sum(cid in done for cid in ids))
        for cid in ids:
            if cid in done or cid in self.md_inflight:
                continue
            folder = self.work / "md" / _safe(cid)
            folder.mkdir(parents=True, exist_ok=True)
            pose = folder / "pose.sdf"
            pose.write_text(self.store.pose(cid) or "")
            out = folder / "result.json"
            out.unlink(missing_ok=True)
            argv = [sys.executable, "-m", "impeccable.stages.md", "--receptor", str(pdb), "--ligand", str(pose),
                    "--out", str(out), "--replicas", str(md.replicas), "--length-ps", str(md.length_ps),
                    "--equilibration-ps", str(md.equilibration_ps), "--frame-interval-ps", str(md.frame_interval_ps),
                    "--seed", str(self.c.campaign.seed), "--threads", str(md.cores)]
            task = executable_task(argv, name=f"md {cid}", cores_per_rank=md.cores, cwd=str(folder),
                                   stdout=str(folder / "stdout.log"), stderr=str(folder / "stderr.log"),
                                   tags={"stage": "md", "round": str(r), "campaign": self.c.name})
            self.md_inflight.add(cid)
            self._submit(task, lambda f, cid=cid, out=out, r=r: self._md_done(f, r, cid, out))

    def _md_done(self, future: TaskFuture, r: int, cid: str, out: Path) -> None:
        self.md_inflight.discard(cid)
        record = future.record
        if record.state is TaskState.DONE:
            result = json.loads(out.read_text())
            self.store.add_md(cid, r, result["binding_energy_kcal_mol"], result.get("stderr_kcal_mol"), result, None)
            self._tick(f"md r{r}", done=1)
        elif record.state is TaskState.FAILED:
            self._task_failed(future, "md")
            self.store.add_md(cid, r, None, None, None, record.error or "failed")
            self._tick(f"md r{r}", failed=1)
        self._maybe_round_end()

    # ------------------------------------------------------------------ round end
    def _maybe_round_end(self) -> None:
        r = self.round
        if self.batches_left or self.redock_left:
            return
        if not self.md_checked:
            # every compound of the final top-M gets MD (those nominated while streaming already have it)
            self.md_checked = True
            done = self.store.md_ids()
            self._run_md(r, [cid for cid in self._top_docked() if cid not in done and cid not in self.md_inflight])
        if not self.trained_next and r + 1 < self.c.campaign.rounds:
            self.trained_next = True  # round r+1 trains on every docking score; round r's MD keeps running
            self._train(r + 1)

    # ------------------------------------------------------------------ results
    def summary(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "stages": {k: dataclasses.asdict(v) for k, v in self.stage.items()},
            "failed_tasks": self.failed_tasks,
        }


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _chunks_iter(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_csv(path: Path, records: list[LibraryRecord]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write("id,smiles\n")
        for rec in records:
            fh.write(f"{rec.id},{rec.smiles}\n")
    os.replace(tmp, path)


def _safe(cid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cid)
