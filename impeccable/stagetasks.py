"""Each campaign stage as one object that builds its task and reads its outcome back.

The campaign runner decides *what* to run and *when*; the stage objects say
*how*: the command line or function of each stage's task (built by the stage's
own module, beside its ``main()``), where its files go, and how its results are
read back. :class:`StageTasks` holds one of each (``preparation``, ``docking``,
``training``, ``inference``, ``md``, ``pose_checking``); an emulation or a benchmark replaces
some of them with stages whose tasks only take the recorded time (see
``impeccable emulate``), and the runner does not know the difference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Campaign
from .gpuplan import DeviceLog, GpuPlan
from .runtime import Task, TaskFuture, executable_task, function_task
from .stages.library import LibraryRecord, read_library, write_library
from .store import DockRow

# a docking task's folder under work/dock/: unique per session, and it names the batch it docks
DOCK_KEY = re.compile(r"s(?P<session>\d+)-r(?P<round>\d+)-(?P<origin>seed|redock)-(?P<index>\d+)")
STORED = ".stored"  # in a docking task's folder: its results are in the store


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
    filtered: list[tuple[str, str]] = field(default_factory=list)  # (id, the filter that removed it)

    @property
    def accounted(self) -> int:
        """Scored or filtered: finished with, either way."""
        return self.counts[1] + self.counts[2]


@dataclass
class StageContext:
    """What every stage of one run shares: the campaign, where its files go, the GPU plan and what ran where."""

    c: Campaign
    run_dir: Path
    gpu_plan: GpuPlan | None = None  # set by the runner once the pilot's allocation is known
    devices: DeviceLog = field(default_factory=DeviceLog)

    @property
    def work(self) -> Path:
        return self.run_dir / "work"

    def gpus(self, stage: str) -> int:
        """GPU slots per task for ``stage`` (0 before a plan, or where the allocation has none)."""
        return self.gpu_plan.gpus(stage) if self.gpu_plan is not None else 0

    def tags(self, stage: str, r: int) -> dict[str, str]:
        """A task's tags: its stage and round, and the campaign (the report groups by them)."""
        return {"stage": stage, "round": str(r), "campaign": self.c.name}


class Stage:
    """One stage of the campaign; subclasses build its tasks and read their outcomes."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.c = ctx.c


class Preparation(Stage):
    """The library's preparation: standardise, filter and key one batch (stages/prepare.py)."""

    def task(self, batch: int, smiles: list[str], settings: dict[str, Any]) -> Task:
        """Only SMILES travel; the ids stay with the runner."""
        return function_task(
            "impeccable.work:prepare_library",
            smiles,
            settings,
            name=f"library b{batch:05d}",
            tags=self.ctx.tags("library", 0),
        )


class Docking(Stage):
    """Vina docking of a batch of compounds as one (MPI) executable; its ranks write a line per compound."""

    def batch(self, records: list[LibraryRecord], session: int, index: int, r: int, origin: str) -> DockBatch:
        key = f"s{session}-r{r}-{origin}-{index:05d}"
        return DockBatch(tuple(records), key, index, r, origin, self.ctx.work / "dock" / key)

    def task(self, batch: DockBatch) -> Task:
        from .stages import dock

        out = batch.folder / "out"
        shutil.rmtree(out, ignore_errors=True)  # a killed run may have left a partial rank file
        out.mkdir(parents=True)
        ligands = batch.folder / "ligands.csv"
        write_library(batch.records, ligands)  # quoted CSV: an id may hold a comma
        d = self.c.dock
        argv = dock.command(
            self.c.receptor.path,
            ligands,
            out,
            exhaustiveness=d.exhaustiveness,
            seed=d.seed,
            site=self.c.receptor.site,
            extra=[*self.c.ligands.dock_args(), "--metals", self.c.receptor.metals],
        )
        return executable_task(
            argv,
            name=f"dock {batch.key}",
            ranks=d.ranks,
            mpi=d.ranks > 1,
            cwd=str(batch.folder),
            tags=self.ctx.tags(batch.task_stage, batch.round),
            stderr=str(batch.folder / "stderr.log"),
        )

    def rows(self, batch: DockBatch, complete: bool = True) -> list[DockRow]:
        """A row for every compound of the batch with a complete line in the task's rank files, whatever
        the way the task ended (done, failed, canceled, killed with the manager). ``complete`` (the task
        ended DONE): a compound without a line failed, and gets a row saying so; otherwise it has none
        and is docked again by the next session."""
        from .stages.rankfiles import read_rank_files

        by_id = {rec.id: rec for rec in batch.records}
        rows, seen = [], set()
        out = batch.folder / "out"
        for item in read_rank_files(out) if out.is_dir() else ():
            cid = item.get("id")
            if cid in by_id and cid not in seen:
                seen.add(cid)
                found = (item.get(key) for key in ("score_kcal_mol", "pose_sdf", "error", "state_smiles"))
                rows.append(DockRow(cid, by_id[cid].smiles, batch.round, batch.origin, *found))
        if complete:
            lost = f"the docking task wrote no result for it (see {batch.folder / 'stderr.log'})"
            rows += [
                DockRow(cid, by_id[cid].smiles, batch.round, batch.origin, None, None, lost)
                for cid in sorted(set(by_id) - seen)
            ]
        return rows

    def mark_stored(self, batch: DockBatch) -> None:
        """Mark the batch's folder as read into the store (a resumed run does not read it again)."""
        try:
            (batch.folder / STORED).touch()
        except OSError:
            pass  # reading it again stores nothing twice

    def unstored(self) -> Iterator[DockBatch]:
        """The docking tasks of earlier sessions whose results never reached the store (the manager was
        killed, or its task was canceled before its handler ran): a resumed run stores their complete
        lines before it docks anything."""
        root = self.ctx.work / "dock"
        if not root.is_dir():
            return
        for folder in sorted(root.iterdir()):
            match = DOCK_KEY.fullmatch(folder.name)
            if match is None or (folder / STORED).exists() or not (folder / "out").is_dir():
                continue
            try:
                records = tuple(read_library(folder / "ligands.csv"))
            except Exception as exc:  # noqa: BLE001 - a folder we cannot read is docked again, not fatal
                why = f"its docking results cannot be read back ({exc}); its compounds are docked again"
                print(f"warning: {folder}: {why}", file=sys.stderr)
                continue
            yield DockBatch(records, folder.name, int(match["index"]), int(match["round"]), match["origin"], folder)


class Training(Stage):
    """The torch surrogate, trained on every docking score so far, as one function task."""

    def model_path(self, r: int) -> Path:
        return self.ctx.run_dir / "models" / f"surrogate.r{r}.pt"

    def task(self, r: int, scores: list[tuple[str, float]]) -> Task:
        path = self.model_path(r)
        path.parent.mkdir(parents=True, exist_ok=True)
        s = self.c.surrogate
        return function_task(
            "impeccable.work:train_surrogate",
            scores,
            str(path),
            s.epochs,
            self.c.campaign.seed + r,
            s.val_fraction,
            s.cores,
            name=f"train r{r}",
            cores_per_rank=s.cores,
            gpus_per_rank=self.ctx.gpus("train"),
            tags=self.ctx.tags("train", r),
        )

    def report(self, future: TaskFuture) -> dict[str, Any]:
        """The training report; the device it trained on is logged."""
        report = future.result()
        self.ctx.devices.saw("train", report.get("device", "cpu"), report.get("device_note", ""))
        return report


class Inference(Stage):
    """The surrogate's predictions over one batch of the library, as one function task."""

    def task(self, r: int, batch: int, model_path: str, ids: list[str], smiles: list[str]) -> Task:
        """Only the SMILES travel (the ids stay with the runner); an emulation scores by id instead. The library
        stage has applied the filters already, so none travel."""
        return function_task(
            "impeccable.work:infer_batch",
            model_path,
            smiles,
            {},
            name=f"infer r{r} b{batch:05d}",
            gpus_per_rank=self.ctx.gpus("infer"),
            tags=self.ctx.tags("infer", r),
        )

    def outcome(self, future: TaskFuture, ids: list[str]) -> InferOutcome:
        out = future.result()
        self.ctx.devices.saw("infer", out.get("device", "cpu"), out.get("device_note", ""))
        filtered, failed = out["filtered"], out["failed"]
        counts = (len(ids), len(ids) - len(filtered) - len(failed), len(filtered), len(failed))
        failures, dropped = [(ids[i], why) for i, why in failed], [(ids[i], why) for i, why in filtered]
        return InferOutcome(np.asarray(out["scores"], dtype=np.float32), counts, failures, dropped)


class MDRefinement(Stage):
    """One compound's MD ensemble in three steps: prepare (executable), its replicas side by side
    (executables), combine (a call); a step whose output is on disk from the same inputs is not run again."""

    def job(self, r: int, cid: str, pose_sdf: str) -> MDJob:
        """One compound's MD ensemble: its folder holds the pose and settings its steps read."""
        from .stages import md_tasks
        from .stages.md import MDSettings, compound_seed

        folder = self.ctx.work / "md" / folder_name(cid)
        folder.mkdir(parents=True, exist_ok=True)
        m = self.c.md
        # replicas, lengths, solvent, force field, MMPBSA.py, platform and precision by name
        settings = MDSettings.taking(m, seed=compound_seed(self.c.campaign.seed, cid), threads=m.cores)
        receptor = self._receptor()
        key = md_tasks.fingerprint(receptor, pose_sdf, settings)
        _write_if_changed(folder / "pose.sdf", pose_sdf)
        _write_if_changed(folder / "settings.json", json.dumps(dataclasses.asdict(settings), indent=1))
        return MDJob(r, cid, folder, m.replicas, key)

    def prepared(self, job: MDJob) -> bool:
        from .stages import md_tasks

        return md_tasks.finished(job.folder / md_tasks.PREPARED, job.key)

    def replica_done(self, job: MDJob, index: int) -> bool:
        from .stages import md_tasks

        return md_tasks.finished(md_tasks.replica_file(job.folder, index), job.key)

    def prepare_task(self, job: MDJob) -> Task:
        """Ligand parameters (cached per compound in the run directory), tleap build, minimisation."""
        from .stages import md_tasks

        argv = md_tasks.command("prepare", job.folder, self._receptor(), self.ctx.run_dir / "params")
        return self.executable(job, argv, "prepare")

    def _receptor(self) -> Path:
        """receptor.pdb, or a copy in the run directory with the metal ions [receptor] metals keeps."""
        from .stages.metals import kept_metals, metal_pdb_lines, read_provenance

        pdb = self.c.receptor.path / "receptor.pdb"
        kept = kept_metals(read_provenance(self.c.receptor.path / "heterogens.toml"), self.c.receptor.metals)
        if not kept:
            return pdb
        lines = [line for line in pdb.read_text().splitlines() if line.strip() not in ("END", "")]
        out = self.ctx.work / "receptor_metals.pdb"
        _write_if_changed(out, "\n".join([*lines, *metal_pdb_lines(kept), "END"]) + "\n")
        return out

    def replica_task(self, job: MDJob, index: int) -> Task:
        from .stages import md_tasks

        argv = md_tasks.command("replica", job.folder, index=index)
        return self.executable(job, argv, f"replica {index}", self.ctx.gpus("md"))

    def executable(self, job: MDJob, argv: list[str], step: str, gpus: int = 0) -> Task:
        """A step as an executable on the compound's folder, its output in ``<step>.stdout/stderr.log``."""
        log = step.replace(" ", "_")
        return executable_task(
            argv,
            name=f"md {step} {job.cid}",
            cores_per_rank=self.c.md.cores,
            gpus_per_rank=gpus,
            cwd=str(job.folder),
            stdout=str(job.folder / f"{log}.stdout.log"),
            stderr=str(job.folder / f"{log}.stderr.log"),
            tags=self.ctx.tags("md", job.round),
        )

    def combine_task(self, job: MDJob) -> Task:
        """Replica means, standard error, bootstrap interval (and MMPBSA.py if asked): a call, no process start."""
        return function_task(
            "impeccable.work:md_combine",
            str(job.folder),
            name=f"md combine {job.cid}",
            tags=self.ctx.tags("md", job.round),
        )

    def outcome(self, future: TaskFuture, job: MDJob) -> dict[str, Any]:
        result = future.result()
        for replica in result.get("per_replica", []):
            self.ctx.devices.saw("md", replica.get("platform", "CPU"), replica.get("platform_note", ""))
        return result


class PoseChecking(Stage):
    """PoseBusters' ``dock`` checks (geometry, internal energy, clashes, volume overlap with the pocket) on
    the best poses, as function tasks: the run's last step, so the report and the export only read them."""

    def task(self, part: int, poses: list[tuple[str, str]]) -> Task:
        receptor = self.c.receptor.path / "receptor.pdb"
        last_round = self.c.campaign.rounds - 1
        tags = self.ctx.tags("pose check", last_round)
        return function_task("impeccable.work:check_poses", str(receptor), poses, name=f"pose check {part}", tags=tags)

    def outcome(self, future: TaskFuture) -> dict[str, tuple[bool, list[str]]]:
        """id -> (passed, names of the failed checks), as the store keeps them."""
        return {cid: (passed, failed) for cid, passed, failed in future.result()}


class StageTasks:
    """The stages of one run, one object each; a variant (an emulation, a benchmark, a test) replaces some."""

    def __init__(self, campaign: Campaign, run_dir: Path) -> None:
        self.ctx = StageContext(campaign, Path(run_dir))
        self.preparation = Preparation(self.ctx)
        self.docking = Docking(self.ctx)
        self.training = Training(self.ctx)
        self.inference = Inference(self.ctx)
        self.md = MDRefinement(self.ctx)
        self.pose_checking = PoseChecking(self.ctx)

    def use_gpus(self, plan: GpuPlan, say: Any = None) -> None:
        """Ask for the plan's GPU slots from now on; ``say`` is called once per fallback reason (not per task)."""
        self.ctx.gpu_plan = plan
        self.ctx.devices.say = say


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


_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,79}")


def folder_name(cid: str) -> str:
    """A folder name for a compound id, unique per id and always a plain name inside its parent.

    An id of ASCII letters, digits, ``_``, ``-`` and ``.`` (not first), at most 80 characters, is its own
    name. Any other id (``..``, ``a/b``, ``a:b``, non-ASCII, very long) becomes its plain characters with
    the rest replaced by ``_``, cut to 60, then ``~`` and 16 hex digits of the id's SHA-256: ``~`` never
    appears in a name kept as is, so an encoded name cannot meet a plain one, and two ids that encode
    alike differ in their hash.
    """
    if _PLAIN.fullmatch(cid):
        return cid
    stem = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in cid)[:60].lstrip(".")
    return f"{stem}~{hashlib.sha256(cid.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
