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

from impeccable.campaign import CampaignInterrupted, CampaignRunner
from impeccable.config import load_campaign
from impeccable.runtime import Task, executable_task, function_task
from impeccable.stages.library import write_library
from impeccable.stagetasks import DockBatch, MDJob, StageTasks

PAYLOADS = str(Path(chaos_payloads.__file__).resolve())


class ChaosStageTasks(StageTasks):
    """The real stage tasks' folders and outputs, with fast payloads that log what they do."""

    def __init__(self, campaign, run_dir: Path, log: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__(campaign, run_dir)
        self.log = log

    def dock_task(self, batch: DockBatch) -> Task:
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
            tags=self._tags(batch.task_stage, batch.round),
            stderr=str(batch.folder / "stderr.log"),
        )

    def train_task(self, r: int, scores: list[tuple[str, float]]) -> Task:
        path = self.model_path(r)
        path.parent.mkdir(parents=True, exist_ok=True)
        return function_task(
            chaos_payloads.train, scores, str(path), self.log, r, name=f"train r{r}", tags=self._tags("train", r)
        )

    def infer_task(self, r: int, batch: int, model_path: str, ids: list[str], smiles: list[str]) -> Task:
        return function_task(
            chaos_payloads.infer,
            model_path,
            smiles,
            self.log,
            f"r{r}b{batch}",
            name=f"infer r{r} b{batch:05d}",
            tags=self._tags("infer", r),
        )

    def md_prepare_task(self, job: MDJob) -> Task:
        return self._md_executable(
            job, [sys.executable, PAYLOADS, "prepare", str(job.folder), job.key, self.log, "-1"], "prepare"
        )

    def md_replica_task(self, job: MDJob, index: int) -> Task:
        return self._md_executable(
            job,
            [sys.executable, PAYLOADS, "replica", str(job.folder), job.key, self.log, str(index)],
            f"replica {index}",
        )

    def md_combine_task(self, job: MDJob) -> Task:
        return function_task(
            chaos_payloads.combine,
            str(job.folder),
            job.cid,
            self.log,
            name=f"md combine {job.cid}",
            tags=self._tags("md", job.round),
        )


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as `impeccable run` does
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with Ctrl-C ignored (background)
    try:
        campaign = load_campaign(Path(argv[0]))
        run_dir = Path(argv[1]).resolve()
        runner = CampaignRunner(campaign, run_dir, stages=ChaosStageTasks(campaign, run_dir, argv[2]))
        runner.run()
    except (CampaignInterrupted, KeyboardInterrupt) as exc:
        print(exc or "interrupted")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
