"""Dock a seeded sample of the MOSES library into 4JSV: the surrogate's training data.

    .venv/bin/python data/dock_sample.py                 # 5000 compounds, exhaustiveness 1
    .venv/bin/python data/dock_sample.py --n 2000 --exhaustiveness 2

Deterministic: the sample is ``sample_library(moses_20k.csv, n, seed)`` (so
any prefix of a larger run's sample order is reproducible), and Vina runs with
a fixed seed on one CPU thread. Resumable: rows are appended and flushed one
at a time; ids already in the output (or in the failures file) are skipped, so
an interrupted run continues where it stopped. Molecules that cannot be
prepared or docked go to ``<out stem>.failures.csv`` with the reason.

Output columns: id, smiles, score_kcal_mol, exhaustiveness, seed.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA.parent))

from impeccable.stages.dock import DEFAULT_DOCK_SEED, Docker, DockResult  # noqa: E402
from impeccable.stages.library import sample_library  # noqa: E402
from impeccable.stages.receptor import load_receptor  # noqa: E402

LIBRARY = DATA / "library" / "moses_20k.csv"
RECEPTOR = DATA / "receptors" / "4jsv"
OUT = DATA / "scores" / "4jsv_vina_sample.csv"
SAMPLE_SEED = 7
COLUMNS = ["id", "smiles", "score_kcal_mol", "exhaustiveness", "seed"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="sample size (compounds to dock in total)")
    p.add_argument("--exhaustiveness", type=int, default=1)
    p.add_argument("--seed", type=int, default=DEFAULT_DOCK_SEED, help="Vina seed")
    p.add_argument("--sample-seed", type=int, default=SAMPLE_SEED)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)

    failures_path = a.out.with_name(a.out.stem + ".failures.csv")
    done = _ids(a.out) | _ids(failures_path)
    todo = [r for r in sample_library(LIBRARY, a.n, seed=a.sample_seed) if r.id not in done]
    print(f"{len(done)} already done, {len(todo)} to dock -> {a.out}", flush=True)
    if not todo:
        return 0
    docker = Docker(load_receptor(RECEPTOR), seed=a.seed, cpu=1)
    with _appender(a.out, COLUMNS) as out, _appender(failures_path, ["id", "smiles", "reason"]) as failed:
        t0 = time.perf_counter()
        for i, record in enumerate(todo, start=1):
            result = docker.dock(record.id, record.smiles, exhaustiveness=a.exhaustiveness)
            if isinstance(result, DockResult):
                out.writerow([record.id, record.smiles, f"{result.score_kcal_mol:.3f}", a.exhaustiveness, a.seed])
            else:
                failed.writerow([record.id, record.smiles, result.reason])
            if i % 50 == 0:
                rate = (time.perf_counter() - t0) / i
                print(f"{i}/{len(todo)} docked, {rate:.2f} s/ligand", flush=True)
    return 0


def _ids(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["id"] for row in csv.DictReader(handle)}


class _appender:
    """A CSV writer appending to ``path`` (header when new), flushed to disk after every row."""

    def __init__(self, path: Path, header: list[str]):
        self.path, self.header = path, header

    def __enter__(self) -> _appender:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.handle = open(self.path, "a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle, lineterminator="\n")
        if new:
            self.writerow(self.header)
        return self

    def writerow(self, row: list[object]) -> None:
        self.writer.writerow(row)
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


if __name__ == "__main__":
    raise SystemExit(main())
