"""Dock the LIT-PCBA MTORC1 benchmark set into 4JSV: every active and a seeded 1:20 sample of the inactives.

    nohup nice -n 19 .venv/bin/python data/dock_litpcba.py --workers 2 > dock_litpcba.log 2>&1 &

The set (97 actives, 32,972 inactives; Tran-Nguyen, Jacquemard, Rognan, J. Chem.
Inf. Model. 2020, 60, 4263) lives in ``../shared/benchmarks/litpcba-mtorc1/``
(``--set-dir``). The docking order is fixed: all actives in file order, then the
inactives in the order of a seeded permutation (``random.Random(seed).shuffle``
of their file indices), of which the first ``ratio x actives`` are docked. So
any prefix of the output holds every active and a uniform random sample of the
inactives, and a larger ``--ratio`` extends the same sample.

Docking is :mod:`data.dock_sample`'s: every ligand state, AutoDock Vina with a
fixed seed, one CPU thread per worker, rows appended and flushed in order,
resumable (rerun the same command; done ids are skipped). The output has
dock_sample's columns plus ``set`` (``active`` or ``inactive``).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))
sys.path.insert(1, str(DATA.parent))

from dock_sample import RECEPTOR, _ids, dock_and_append  # noqa: E402

from impeccable.stages.dock import DEFAULT_DOCK_SEED  # noqa: E402
from impeccable.stages.library import LibraryRecord, read_library  # noqa: E402
from impeccable.stages.ligands import StateOptions  # noqa: E402

# ../shared/benchmarks beside the main checkout (and two levels up from a worktree in wt/N)
SET_DIR = next(
    (
        d
        for d in (
            DATA.parents[1] / "shared" / "benchmarks" / "litpcba-mtorc1",
            DATA.parents[2] / "shared" / "benchmarks" / "litpcba-mtorc1",
        )
        if d.is_dir()
    ),
    DATA.parents[1] / "shared" / "benchmarks" / "litpcba-mtorc1",
)
OUT = DATA / "scores" / "4jsv_litpcba_mtorc1.csv"
INACTIVE_SEED = 20200918  # any fixed number; documented in data/README.md
RATIO = 20


def benchmark_order(set_dir: Path, ratio: int, seed: int = INACTIVE_SEED) -> list[tuple[LibraryRecord, str]]:
    """(record, "active" | "inactive") in docking order: actives, then ``ratio`` x as many sampled inactives."""
    actives = list(read_library(set_dir / "actives.smi"))
    inactives = list(read_library(set_dir / "inactives.smi"))
    order = list(range(len(inactives)))
    random.Random(seed).shuffle(order)
    sampled = [inactives[i] for i in order[: ratio * len(actives)]]
    return [(r, "active") for r in actives] + [(r, "inactive") for r in sampled]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set-dir", type=Path, default=SET_DIR)
    p.add_argument("--ratio", type=int, default=RATIO, help="inactives per active")
    p.add_argument("--inactive-seed", type=int, default=INACTIVE_SEED)
    p.add_argument("--exhaustiveness", type=int, default=1)
    p.add_argument("--seed", type=int, default=DEFAULT_DOCK_SEED, help="Vina seed")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--receptor", type=Path, default=RECEPTOR)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)

    done = _ids(a.out) | _ids(a.out.with_name(a.out.stem + ".failures.csv"))
    order = benchmark_order(a.set_dir, a.ratio, a.inactive_seed)
    todo = [(r, label) for r, label in order if r.id not in done]
    print(f"{len(done)} already done, {len(todo)} to dock -> {a.out}", flush=True)
    if todo:
        dock_and_append(
            [r for r, _ in todo],
            a.out,
            (a.seed, a.exhaustiveness, StateOptions()),
            a.workers,
            receptor=a.receptor,
            extra={"set": {r.id: label for r, label in todo}},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
