"""``impeccable run`` for the chaos test: the real campaign manager (runner, task loop, store, pilot, reaper) with
each stage's payload replaced by a fast one from :mod:`chaos_payloads`.

Only the tasks' commands change: folders, rank files, MD step files and their fingerprints, the store and every
decision are the real ones. Exit codes as ``impeccable run``: 0 done, 130 interrupted (Ctrl-C or SIGTERM).

    python tests/chaos_campaign.py CAMPAIGN.toml RUN_DIR LOG
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import chaos_payloads

from impeccable import stagetasks as st
from impeccable.campaign import CampaignInterrupted, CampaignRunner
from impeccable.config import load_campaign
from impeccable.runtime import Task, executable_task, function_task
from impeccable.stages.library import write_library

PAYLOADS = str(Path(chaos_payloads.__file__).resolve())


class Chaos(st.Stage):
    """A stage whose payloads append what they do to ``log``."""

    def __init__(self, ctx: st.StageContext, log: str) -> None:
        super().__init__(ctx)
        self.log = log


class ChaosDocking(Chaos, st.Docking):
    """The real docking task's folder and outputs, with a fast payload that logs what it does."""

    def task(self, batch: st.DockBatch) -> Task:
        out = batch.folder / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        ligands = batch.folder / "ligands.csv"
        write_library(batch.records, ligands)
        argv = [sys.executable, PAYLOADS, "dock", str(ligands), str(out), self.log, f"dock-{batch.origin}"]
        return executable_task(
            argv,
            name=f"dock {batch.key}",
            cwd=str(batch.folder),
            tags=self.ctx.tags(batch.task_stage, batch.round),
            stderr=str(batch.folder / "stderr.log"),
        )


class ChaosTraining(Chaos, st.Training):
    def task(self, r: int, scores: list[tuple[str, float]]) -> Task:
        path = self.model_path(r)
        path.parent.mkdir(parents=True, exist_ok=True)
        return function_task(
            chaos_payloads.train, scores, str(path), self.log, r, name=f"train r{r}", tags=self.ctx.tags("train", r)
        )


class ChaosInference(Chaos, st.Inference):
    def task(self, r: int, batch: int, model_path: str, ids: list[str], smiles: list[str]) -> Task:
        return function_task(
            chaos_payloads.infer,
            model_path,
            smiles,
            self.log,
            f"r{r}b{batch}",
            name=f"infer r{r} b{batch:05d}",
            tags=self.ctx.tags("infer", r),
        )


class ChaosMD(Chaos, st.MDRefinement):
    def prepare_task(self, job: st.MDJob) -> Task:
        return self.executable(
            job, [sys.executable, PAYLOADS, "prepare", str(job.folder), job.key, self.log, "-1"], "prepare"
        )

    def replica_task(self, job: st.MDJob, index: int) -> Task:
        argv = [sys.executable, PAYLOADS, "replica", str(job.folder), job.key, self.log, str(index)]
        return self.executable(job, argv, f"replica {index}")

    def combine_task(self, job: st.MDJob) -> Task:
        return function_task(
            chaos_payloads.combine,
            str(job.folder),
            job.cid,
            self.log,
            name=f"md combine {job.cid}",
            tags=self.ctx.tags("md", job.round),
        )


def chaos_stages(campaign, run_dir: Path, log: str) -> st.StageTasks:  # type: ignore[no-untyped-def]
    """The real stage objects' folders and outputs, with fast payloads that log what they do."""
    stages = st.StageTasks(campaign, run_dir)
    stages.docking, stages.training = ChaosDocking(stages.ctx, log), ChaosTraining(stages.ctx, log)
    stages.inference, stages.md = ChaosInference(stages.ctx, log), ChaosMD(stages.ctx, log)
    return stages


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as `impeccable run` does
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with Ctrl-C ignored (background)
    try:
        campaign = load_campaign(Path(argv[0]))
        run_dir = Path(argv[1]).resolve()
        runner = CampaignRunner(campaign, run_dir, stages=chaos_stages(campaign, run_dir, argv[2]))
        runner.run()
    except (CampaignInterrupted, KeyboardInterrupt) as exc:
        print(exc or "interrupted")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
