"""Dock a benchmark set (actives + decoys) through the pilot, like a campaign's docking stage, resumably.

The set is cut into tasks of ``per_task`` compounds in a fixed order; each task is the campaign's
docking command (``stages.dock``: every ligand state, Vina with a fixed seed, one thread) writing
its results atomically into its own folder, so a killed run keeps every finished task and a rerun
submits only the others. The results are merged into one score file in the layout of the shipped
ones (``data/dock_sample.py``) with a ``set`` column, which ``impeccable benchmark --scores`` reads.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import as_completed
from pathlib import Path

from .stages.library import LibraryRecord, write_library

__all__ = ["SCORE_COLUMNS", "dock_set"]

SCORE_COLUMNS = [
    "id",
    "smiles",
    "state_smiles",
    "score_kcal_mol",
    "n_states",
    "state_scores_kcal_mol",
    "exhaustiveness",
    "seed",
    "set",
]


def dock_set(
    records: Sequence[LibraryRecord],
    labels: Mapping[str, bool],
    receptor: Path,
    out_dir: Path,
    *,
    cores: int,
    exhaustiveness: int,
    seed: int,
    per_task: int = 8,
    say: Callable[[str], None] = print,
) -> tuple[Path, int]:
    """Dock every record not docked yet; return (merged score file, compounds whose task failed)."""
    from .runtime import Allocation, Pilot, executable_task
    from .stages import dock

    out_dir = Path(out_dir).resolve()
    chunks = [(i // per_task, list(records[i : i + per_task])) for i in range(0, len(records), per_task)]
    todo = [(k, chunk) for k, chunk in chunks if not dock.rank_file(_folder(out_dir, k) / "out", 0).is_file()]
    say(
        f"benchmark docking: {len(chunks) - len(todo)} of {len(chunks)} tasks already done, {len(todo)} to run "
        f"on {cores} cores -> {out_dir}"
    )
    failed = 0
    if todo:
        tasks = []
        for k, chunk in todo:
            folder = _folder(out_dir, k)
            (folder / "out").mkdir(parents=True, exist_ok=True)
            write_library(chunk, folder / "ligands.csv")
            argv = dock.command(
                receptor.resolve(), folder / "ligands.csv", folder / "out", exhaustiveness=exhaustiveness, seed=seed
            )
            tasks.append(
                executable_task(
                    argv,
                    name=f"benchmark dock {k:05d}",
                    cwd=str(folder),
                    stderr=str(folder / "stderr.log"),
                    tags={"stage": "benchmark dock"},
                )
            )
        with Pilot(Allocation(cores=cores), routes={"executable": "local", "function": "local"}) as pilot:
            futures = {f: len(todo[i][1]) for i, f in enumerate(pilot.submit_many(tasks))}
            for n_done, future in enumerate(as_completed(futures), start=1):
                if future.exception() is not None:
                    failed += futures[future]
                if n_done % 10 == 0 or n_done == len(futures):
                    say(f"  {n_done}/{len(futures)} tasks finished ({failed} compounds in failed tasks)")
    return _merge(chunks, labels, out_dir, exhaustiveness, seed), failed


def _folder(out_dir: Path, k: int) -> Path:
    return out_dir / "tasks" / f"dock-{k:05d}"


def _merge(
    chunks: list[tuple[int, list[LibraryRecord]]],
    labels: Mapping[str, bool],
    out_dir: Path,
    exhaustiveness: int,
    seed: int,
) -> Path:
    """scores.csv (docked) and scores.failures.csv (could not be prepared or docked) from every finished task."""
    from .stages.dock import rank_file, read_dock_results

    label = {cid: "active" if is_active else "decoy" for cid, is_active in labels.items()}
    path, failures = out_dir / "scores.csv", out_dir / "scores.failures.csv"
    tmp, tmp_f = path.with_name(".scores.csv.tmp"), failures.with_name(".scores.failures.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh, open(tmp_f, "w", newline="", encoding="utf-8") as ff:
        good, bad = csv.writer(fh, lineterminator="\n"), csv.writer(ff, lineterminator="\n")
        good.writerow(SCORE_COLUMNS)
        bad.writerow(["id", "smiles", "reason", "set"])
        for k, _ in chunks:
            out = _folder(out_dir, k) / "out"
            if not rank_file(out, 0).is_file():
                continue
            for item in read_dock_results(out):
                if item.get("error"):
                    bad.writerow([item["id"], item["smiles"], item["error"], label.get(item["id"], "")])
                    continue
                good.writerow(
                    [
                        item["id"],
                        item["smiles"],
                        item.get("state_smiles", ""),
                        f"{item['score_kcal_mol']:.3f}",
                        item.get("n_states", 1),
                        ";".join(f"{x:.3f}" for x in item.get("state_scores_kcal_mol", ())),
                        exhaustiveness,
                        seed,
                        label.get(item["id"], ""),
                    ]
                )
    os.replace(tmp, path)
    os.replace(tmp_f, failures)
    return path
