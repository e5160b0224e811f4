"""Dock a seeded sample of the MOSES library into 4JSV: the reference set and the surrogate's training data.

    .venv/bin/python data/dock_sample.py                       # 5000 compounds, every state, exhaustiveness 1
    nohup nice -n 19 .venv/bin/python data/dock_sample.py --workers 2 > dock_ref.log 2>&1 &

Deterministic: the sample is ``sample_library(moses_20k.csv, n, seed=7)`` in
its own order (so any prefix of a larger run's sample is reproducible), every
compound is docked as each of its states (``stages/ligands.py``: salts
stripped, up to ``--max-stereoisomers`` stereoisomers of unassigned centres,
up to ``--max-protomers`` protomers at pH 7.4) and scores as its best state;
Vina runs with a fixed seed on one CPU thread per worker. Workers only change
the speed: rows are written in sample order whatever finishes first.
Resumable: rows are appended and flushed one at a time; ids already in the
output (or in the failures file) are skipped, so an interrupted run continues
where it stopped. Molecules that cannot be prepared or docked go to
``<out stem>.failures.csv`` with the reason.

Output columns: id, smiles (as in the library), state_smiles (the best state,
with stereo and charges), score_kcal_mol (the best state's Vina score plus its
microstate penalty), n_states, state_scores_kcal_mol (every state's Vina score,
';'-separated, in enumeration order), state_penalties_kcal_mol (each state's
penalty, same order; 0 for the dominant microstate), exhaustiveness, seed.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA.parent))

from impeccable.stages.dock import DEFAULT_DOCK_SEED, Docker, DockResult, LigandFailure  # noqa: E402
from impeccable.stages.library import LibraryRecord, sample_library  # noqa: E402
from impeccable.stages.ligands import StateOptions  # noqa: E402
from impeccable.stages.receptor import load_receptor  # noqa: E402

LIBRARY = DATA / "library" / "moses_20k.csv"
RECEPTOR = DATA / "receptors" / "4jsv"
OUT = DATA / "scores" / "4jsv_vina_states.csv"
SAMPLE_SEED = 7
COLUMNS = ["id", "smiles", "state_smiles", "score_kcal_mol", "n_states", "state_scores_kcal_mol"]
COLUMNS += ["state_penalties_kcal_mol", "exhaustiveness", "seed"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="sample size (compounds to dock in total)")
    p.add_argument("--exhaustiveness", type=int, default=1)
    p.add_argument("--seed", type=int, default=DEFAULT_DOCK_SEED, help="Vina seed")
    p.add_argument("--sample-seed", type=int, default=SAMPLE_SEED)
    p.add_argument("--max-stereoisomers", type=int, default=StateOptions.max_stereoisomers)
    p.add_argument("--max-protomers", type=int, default=StateOptions.max_protomers)
    p.add_argument("--workers", type=int, default=1, help="docking processes (one Vina thread each)")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    states = StateOptions(max_stereoisomers=a.max_stereoisomers, max_protomers=a.max_protomers)

    done = _ids(a.out) | _ids(a.out.with_name(a.out.stem + ".failures.csv"))
    todo = [r for r in sample_library(LIBRARY, a.n, seed=a.sample_seed) if r.id not in done]
    print(f"{len(done)} already done, {len(todo)} to dock -> {a.out}", flush=True)
    if not todo:
        return 0
    dock_and_append(todo, a.out, (a.seed, a.exhaustiveness, states), a.workers)
    return 0


def dock_and_append(
    todo: list[LibraryRecord],
    out_path: Path,
    settings: tuple[int, int, StateOptions],
    workers: int,
    *,
    receptor: Path = RECEPTOR,
    extra: dict[str, dict[str, str]] | None = None,
) -> None:
    """Dock ``todo`` and append one row per compound (``COLUMNS`` plus ``extra``'s columns) in ``todo`` order.

    ``extra`` maps a column name to {id: value}; failures go to ``<out stem>.failures.csv``.
    """
    extra = extra or {}
    seed, exhaustiveness, _ = settings
    failures_path = out_path.with_name(out_path.stem + ".failures.csv")
    with (
        _appender(out_path, COLUMNS + list(extra)) as out,
        _appender(failures_path, ["id", "smiles", "reason"]) as failed,
    ):
        t0 = time.perf_counter()
        n_states = 0
        for i, (record, result) in enumerate(_dock_all(todo, settings, workers, receptor), start=1):
            if isinstance(result, DockResult):
                n_states += result.n_states
                out.writerow(
                    [
                        record.id,
                        record.smiles,
                        result.state_smiles,
                        f"{result.score_kcal_mol:.3f}",
                        result.n_states,
                        ";".join(f"{x:.3f}" for x in result.state_scores_kcal_mol),
                        ";".join(f"{x:.3f}" for x in result.state_penalties_kcal_mol),
                        exhaustiveness,
                        seed,
                    ]
                    + [values[record.id] for values in extra.values()]
                )
            else:
                failed.writerow([record.id, record.smiles, result.reason])
            if i % 50 == 0:
                dt = time.perf_counter() - t0
                print(
                    f"{i}/{len(todo)} docked, {dt / i:.2f} s/compound wall, {n_states / i:.2f} states/compound, "
                    f"ETA {(len(todo) - i) * dt / i / 3600:.1f} h",
                    flush=True,
                )


def _dock_all(
    todo: list[LibraryRecord], settings: tuple[int, int, StateOptions], workers: int, receptor: Path = RECEPTOR
) -> Iterator[tuple[LibraryRecord, DockResult | LigandFailure]]:
    """(record, result) in ``todo`` order; with workers > 1 docked in parallel, yielded in order."""
    if workers <= 1:
        _start_worker(*settings, receptor)
        yield from zip(todo, map(_dock_one, todo))
        return
    ctx = multiprocessing.get_context("spawn")  # no forked Vina/RDKit state
    with ctx.Pool(workers, initializer=_start_worker, initargs=(*settings, receptor)) as pool:
        yield from zip(todo, pool.imap(_dock_one, todo, chunksize=1))


_docker: Docker | None = None
_exhaustiveness = 1


def _start_worker(seed: int, exhaustiveness: int, states: StateOptions, receptor: Path = RECEPTOR) -> None:
    global _docker, _exhaustiveness
    _docker = Docker(load_receptor(receptor), seed=seed, cpu=1, states=states)
    _exhaustiveness = exhaustiveness


def _dock_one(record: LibraryRecord) -> DockResult | LigandFailure:
    assert _docker is not None
    return _docker.dock(record.id, record.smiles, exhaustiveness=_exhaustiveness)


def _ids(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["id"] for row in csv.DictReader(handle)}


def _drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write leaves a line without its newline: drop it so it is docked again."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


class _appender:
    """A CSV writer appending to ``path`` (header when new), flushed to disk after every row."""

    def __init__(self, path: Path, header: list[str]):
        self.path, self.header = path, header

    def __enter__(self) -> _appender:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(self.path)
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
