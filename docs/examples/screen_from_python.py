"""Screen a small library from Python: a campaign built as a dict, run, then its hits read back.

    python docs/examples/screen_from_python.py runs/example

Docks 12 compounds of the shipped MOSES sample into mTOR (4JSV) with Vina, trains the surrogate on them, scores
60 compounds with it and re-docks the best 3; no MD (``top_m = 0``), so it takes a minute or two on two cores.
Run it again: the run directory is resumed and nothing is recomputed. ``tests/test_docs.py`` runs this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import impeccable

ROOT = Path(__file__).resolve().parents[2]  # the repository: the shipped receptor and library are relative to it

CAMPAIGN = {
    "campaign": {"name": "example", "seed": 7},
    "receptor": {"path": "data/receptors/4jsv"},
    "library": {"path": "data/library/moses_20k.csv", "limit": 60},
    "dock": {"seed_sample": 12, "exhaustiveness": 1, "ligands_per_task": 6},
    "surrogate": {"epochs": 10},
    "infer": {"batch_size": 30},
    "redock": {"top_k": 3},
    "md": {"top_m": 0},
    "hits": {"hinge_residues": ["VAL2240.B"], "interactions_top": 5, "viewer_top": 3},
    "pilot": {"cores": 2, "routes": {"executable": "local", "function": "local"}},
}


def main(run_dir: Path) -> None:
    campaign = impeccable.load_campaign(CAMPAIGN, base_dir=ROOT)  # validated: a bad key is named
    run = impeccable.run_campaign(campaign, run_dir)  # resumes whatever run_dir already holds
    status = run.status()
    print(f"{status.name}: last session {status.state}")
    for stage in status.stages:
        print(f"  {stage.stage}: {stage.done} done, {stage.failed} failed")
    hits = run.hits()  # a pandas DataFrame, best first
    print(hits[["rank", "dock_score", "predicted", "origin"]].head())
    print(f"report: {run.report()}")
    exported = run.export(top=10)
    print(f"export: {exported.hits_csv} ({exported.n_hits} compounds), {exported.n_diverse} diverse picks")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "example")
