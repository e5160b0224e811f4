"""Each campaign stage as a task the pilot runs, and its outcome as rows for the store.

The campaign runner decides *what* to run and *when*; this module says *how*:
the command line or function of each stage's task (built by the stage's own
module, beside its ``main()``), where its files go, and how its results are
read back. An emulation swaps this class for one whose tasks only take the
recorded time (see ``impeccable emulate``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Campaign
from .runtime import Task, TaskFuture, executable_task, function_task
from .stages.library import LibraryRecord, write_library
from .store import DockRow


@dataclass(frozen=True)
class DockBatch:
    """Compounds docked by one task: the seed sample's shards, or one inference batch's nominees."""

    records: tuple[LibraryRecord, ...]
    key: str  # unique per session: the task's folder under work/dock/
    index: int  # the seed shard, or the inference batch whose nominees these are
    round: int
    origin: str  # "seed" or "redock"
    folder: Path

    @property
    def stage(self) -> str:
        """Its progress bar: "seed dock", "redock r0" ..."""
        return "seed dock" if self.origin == "seed" else f"redock r{self.round}"

    @property
    def task_stage(self) -> str:
        """Its task records' stage: "seed dock" or "redock" (the round is a field of its own)."""
        return "seed dock" if self.origin == "seed" else "redock"


@dataclass(frozen=True)
class InferOutcome:
    """One inference batch's results, lined up with the batch's ids."""

    scores: np.ndarray  # float32, NaN where not scored
    counts: tuple[int, int, int, int]  # compounds, scored, filtered, failed
    failures: list[tuple[str, str]]  # (id, reason)

    @property
    def accounted(self) -> int:
        """Scored or filtered: finished with, either way."""
        return self.counts[1] + self.counts[2]


class StageTasks:
    """The real stages: Vina docking, torch training and inference, OpenMM MD."""

    def __init__(self, campaign: Campaign, run_dir: Path) -> None:
        self.c = campaign
        self.run_dir = run_dir
        self.work = run_dir / "work"

    def _tags(self, stage: str, r: int) -> dict[str, str]:
        return {"stage": stage, "round": str(r), "campaign": self.c.name}

    # ------------------------------------------------------------------ docking
    def dock_batch(self, records: list[LibraryRecord], key: str, index: int, r: int, origin: str) -> DockBatch:
        return DockBatch(tuple(records), key, index, r, origin, self.work / "dock" / key)

    def dock_task(self, batch: DockBatch) -> Task:
        from .stages import dock

        out = batch.folder / "out"
        shutil.rmtree(out, ignore_errors=True)  # a killed run may have left a partial rank file
        out.mkdir(parents=True)
        ligands = batch.folder / "ligands.csv"
        write_library(batch.records, ligands)  # quoted CSV: an id may hold a comma
        d = self.c.dock
        argv = dock.command(self.c.receptor.path, ligands, out, exhaustiveness=d.exhaustiveness, seed=d.seed,
                            site=self.c.receptor.site, extra=self.c.ligands.dock_args())
        return executable_task(argv, name=f"dock {batch.key}", ranks=d.ranks, mpi=d.ranks > 1, cwd=str(batch.folder),
                               tags=self._tags(batch.task_stage, batch.round), stderr=str(batch.folder / "stderr.log"))

    def dock_rows(self, batch: DockBatch) -> list[DockRow]:
        """One row per compound of the batch: its score and pose, or why there is none."""
        from .stages.dock import read_dock_results

        by_id = {rec.id: rec for rec in batch.records}
        rows = []
        for item in read_dock_results(batch.folder / "out"):
            cid = item["id"]
            if cid in by_id:
                rows.append(DockRow(cid, by_id[cid].smiles, batch.round, batch.origin, item.get("score_kcal_mol"),
                                    item.get("pose_sdf"), item.get("error"), item.get("state_smiles")))
        missing = set(by_id) - {row.id for row in rows}
        lost = f"the docking task wrote no result for it (see {batch.folder / 'stderr.log'})"
        rows += [DockRow(cid, by_id[cid].smiles, batch.round, batch.origin, None, None, lost) for cid in sorted(missing)]
        return rows

    # ------------------------------------------------------------------ surrogate
    def model_path(self, r: int) -> Path:
        return self.run_dir / "models" / f"surrogate.r{r}.pt"

    def train_task(self, r: int, scores: list[tuple[str, float]]) -> Task:
        path = self.model_path(r)
        path.parent.mkdir(parents=True, exist_ok=True)
        s = self.c.surrogate
        return function_task("impeccable.work:train_surrogate", scores, str(path), s.epochs, self.c.campaign.seed + r,
                             s.val_fraction, s.cores, name=f"train r{r}", cores_per_rank=s.cores,
                             tags=self._tags("train", r))

    def infer_task(self, r: int, batch: int, model_path: str, ids: list[str], smiles: list[str]) -> Task:
        """Only the SMILES travel (the ids stay with the runner); an emulation scores by id instead."""
        return function_task("impeccable.work:infer_batch", model_path, smiles,
                             self.c.library.filters.model_dump(), name=f"infer r{r} b{batch:05d}",
                             tags=self._tags("infer", r))

    def infer_result(self, future: TaskFuture, ids: list[str]) -> InferOutcome:
        out = future.result()
        filtered, failed = out["filtered"], out["failed"]
        counts = (len(ids), len(ids) - len(filtered) - len(failed), len(filtered), len(failed))
        return InferOutcome(np.asarray(out["scores"], dtype=np.float32), counts,
                            [(ids[i], reason) for i, reason in failed])

    # ------------------------------------------------------------------ MD
    def md_job(self, r: int, cid: str, pose_sdf: str) -> MDJob:
        """One compound's MD ensemble: its folder holds the pose and settings its steps read."""
        from .stages import md_tasks
        from .stages.md import MDSettings, compound_seed

        folder = self.work / "md" / _safe(cid)
        folder.mkdir(parents=True, exist_ok=True)
        m = self.c.md
        settings = MDSettings(replicas=m.replicas, length_ps=m.length_ps, equilibration_ps=m.equilibration_ps,
                              frame_interval_ps=m.frame_interval_ps, seed=compound_seed(self.c.campaign.seed, cid),
                              threads=m.cores,
                              solvent=m.solvent, ligand_forcefield=m.ligand_forcefield, mmpbsa_py=m.mmpbsa_py)
        receptor = self.c.receptor.path / "receptor.pdb"
        key = md_tasks.fingerprint(receptor, pose_sdf, settings)
        _write_if_changed(folder / "pose.sdf", pose_sdf)
        _write_if_changed(folder / "settings.json", json.dumps(dataclasses.asdict(settings), indent=1))
        return MDJob(r, cid, folder, m.replicas, key)

    def md_prepared(self, job: MDJob) -> bool:
        from .stages import md_tasks

        return md_tasks.finished(job.folder / md_tasks.PREPARED, job.key)

    def md_replica_done(self, job: MDJob, index: int) -> bool:
        from .stages import md_tasks

        return md_tasks.finished(md_tasks.replica_file(job.folder, index), job.key)

    def md_prepare_task(self, job: MDJob) -> Task:
        """Ligand parameters (cached per compound in the run directory), tleap build, minimisation."""
        from .stages import md_tasks

        argv = md_tasks.command("prepare", job.folder, self.c.receptor.path / "receptor.pdb", self.run_dir / "params")
        return self._md_executable(job, argv, "prepare")

    def md_replica_task(self, job: MDJob, index: int) -> Task:
        from .stages import md_tasks

        return self._md_executable(job, md_tasks.command("replica", job.folder, index=index), f"replica {index}")

    def _md_executable(self, job: MDJob, argv: list[str], step: str) -> Task:
        log = step.replace(" ", "_")
        return executable_task(argv, name=f"md {step} {job.cid}", cores_per_rank=self.c.md.cores,
                               cwd=str(job.folder), stdout=str(job.folder / f"{log}.stdout.log"),
                               stderr=str(job.folder / f"{log}.stderr.log"), tags=self._tags("md", job.round))

    def md_combine_task(self, job: MDJob) -> Task:
        """Replica means, standard error, bootstrap interval (and MMPBSA.py if asked): a call, no process start."""
        return function_task("impeccable.work:md_combine", str(job.folder), name=f"md combine {job.cid}",
                             tags=self._tags("md", job.round))

    def md_result(self, future: TaskFuture, job: MDJob) -> dict[str, Any]:
        return future.result()


@dataclass
class MDJob:
    """One compound's MD ensemble in flight: which replicas are still out, and its first failure."""

    round: int
    cid: str
    folder: Path
    replicas: int
    key: str  # fingerprint of its inputs: outputs on disk with another key are not its own
    replicas_left: set[int] = field(default_factory=set)
    error: str | None = None


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _safe(cid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cid)
