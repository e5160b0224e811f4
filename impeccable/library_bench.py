"""``impeccable library bench``: inspect's rate beside a plain loop of the same RDKit calls, on the same cores.

The plain loop is what a chemist would write without the framework: each of
``cores`` processes reads the CSV with the csv module and runs, on every
``cores``-th molecule, the same calls as a preparation task (parse,
standardise, every rule, InChIKey, properties and scaffold of the kept ones);
the parent merges the counts and the InChIKeys. No batches, no pilot, no
transport, no folding. The ratio ``inspect / plain`` is the share of the
plain loop's rate the framework keeps (the issue's target: >= 0.8). Beside the
wall-clock ratio, ``cpu_ratio`` compares the CPU seconds both spent (inspect:
its manager and its worker processes; plain: its processes), which a busy
machine does not blur.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .stages.library import LibraryRecord, read_library, write_library


def run_bench(
    library: Path, copies: int, repeat: int, cores: int, work_dir: Path, settings: dict[str, Any]
) -> dict[str, Any]:
    """Medians of ``repeat`` side-by-side runs of inspect and the plain loop on ``copies`` x the library."""
    from .library_inspect import inspect_library
    from .stages.library_sources import LibrarySource

    if copies < 1 or repeat < 1 or cores < 1:
        raise ValueError("--repeat-library, --repeat and --cores must be at least 1")
    big = work_dir / f"{library.name.split('.')[0]}_x{copies}.csv"
    if not big.is_file():
        rows = list(read_library(library))
        work_dir.mkdir(parents=True, exist_ok=True)
        write_library((LibraryRecord(f"R{c}-{r.id}", r.smiles) for c in range(copies) for r in rows), big)
    runs: dict[str, list[dict[str, Any]]] = {"inspect": [], "plain": []}
    for _ in range(repeat):
        t = time.perf_counter()
        report = inspect_library([LibrarySource.from_spec("bench", big)], False, settings, cores=cores)
        runs["inspect"].append(
            {"s": time.perf_counter() - t, "kept": report["kept"], "rows": report["rows"], "steps": report["steps"]}
        )
        t = time.perf_counter()
        plain = plain_loop(big, settings, cores)
        runs["plain"].append({"s": time.perf_counter() - t, **plain})
        with open(work_dir / "runs.jsonl", "a") as log:  # each pair as it ends: a long benchmark shows progress
            log.write(
                json.dumps({"rows": report["rows"], "inspect": runs["inspect"][-1], "plain": runs["plain"][-1]}) + "\n"
            )
    rows = runs["inspect"][0]["rows"]
    med = {k: statistics.median(r["s"] for r in v) for k, v in runs.items()}
    agree = all(r["kept"] == runs["plain"][0]["kept"] for v in runs.values() for r in v)
    cpu = {
        "inspect": statistics.median(
            r["steps"]["manager_cpu_s"] + r["steps"]["worker_process_cpu_s"] for r in runs["inspect"]
        ),
        "plain": statistics.median(r["cpu_s"] for r in runs["plain"]),
    }
    return {
        "library": str(big),
        "rows": rows,
        "cores": cores,
        "repeat": repeat,
        "settings": settings,
        "inspect_mol_per_s": rows / med["inspect"],
        "plain_mol_per_s": rows / med["plain"],
        "ratio": med["plain"] / med["inspect"],
        "same_counts": agree,
        "cpu_s": cpu,
        "cpu_ratio": cpu["plain"] / cpu["inspect"],
        "inspect_steps_first_run": runs["inspect"][0]["steps"],
        "runs": runs,
    }


def plain_loop(path: Path, settings: dict[str, Any], cores: int) -> dict[str, Any]:
    """The baseline: ``cores`` processes, each its share of the molecules, merged at the end."""
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(cores) as pool:
        parts = pool.starmap(_plain_share, [(str(path), settings, share, cores) for share in range(cores)])
    keys: set[str] = set()
    counts: Counter = Counter()
    for part_counts, part_keys in parts:
        counts.update(part_counts)  # cpu_s: the processes' CPU seconds, summed
        for key in part_keys:
            if key in keys:
                counts["duplicates"] += 1
            else:
                keys.add(key)
    counts["kept"] = counts["passed"] - counts["duplicates"]
    return dict(counts)


def _plain_share(path: str, settings: dict[str, Any], share: int, shares: int) -> tuple[Counter, list[str]]:
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    from .stages.medfilters import compile_rules, properties
    from .stages.prepare import PROFILE_PROPERTIES, Standardizer

    RDLogger.DisableLog("rdApp.*")
    cpu = time.process_time()
    rules = compile_rules(settings["filters"])
    standardize = Standardizer(settings.get("tautomer", False)) if settings.get("standardize") else None
    counts: Counter = Counter()
    keys, scaffolds, values = [], Counter(), []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for i, (_cid, smiles) in enumerate(reader):
            if i % shares != share:
                continue
            counts["rows"] += 1
            mol = Chem.MolFromSmiles(smiles)
            if mol is None:
                counts["failed"] += 1
                continue
            if standardize is not None:
                mol = standardize(mol)
            broken = rules.failures(mol)
            for name, _ in broken:
                counts[f"broken {name}"] += 1
            if broken:
                counts["filtered"] += 1
                continue
            counts["passed"] += 1
            Chem.MolToSmiles(mol)
            if settings.get("deduplicate"):
                keys.append(Chem.MolToInchiKey(mol))
            values.append(properties(mol, PROFILE_PROPERTIES))
            scaffolds[MurckoScaffold.MurckoScaffoldSmiles(mol=mol)] += 1
    counts["cpu_s"] = time.process_time() - cpu
    return counts, keys
