"""``impeccable library inspect``: a library's profile before a campaign spends hours on it.

The same preparation as the campaign's library stage (stages/prepare.py), run
the same way: the sources streamed in batches to function tasks on a local
pilot, results folded in library order. It counts rows, parse failures by
reason, duplicates (InChIKey), the molecules passing each rule and all of them;
histograms of the kept molecules' properties, their most common Bemis-Murcko
scaffolds, depictions of a seeded sample, and (for a campaign file) what the
campaign will cost at its settings, labelled as an estimate.

Memory: one histogram per property (fixed bins), a 64-bit hash per kept
compound when deduplicating, a count per distinct scaffold, and the batches in
flight (4 per core).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .library_store import LibraryCounts, key_hash
from .stages.library_sources import LibrarySource, SourcedRecord, iter_sources

# histogram bins of each profiled property (stages/prepare.PROFILE_PROPERTIES)
BINS: dict[str, np.ndarray] = {
    "mw": np.arange(0, 1001, 25.0),
    "clogp": np.arange(-6, 10.01, 0.5),
    "tpsa": np.arange(0, 301, 10.0),
    "hbd": np.arange(-0.5, 15.6, 1.0),
    "hba": np.arange(-0.5, 20.6, 1.0),
    "rotatable_bonds": np.arange(-0.5, 20.6, 1.0),
    "heavy_atoms": np.arange(-0.5, 80.6, 2.0),
    "fsp3": np.arange(0, 1.01, 0.05),
}
# Docking cost per compound on this machine: data/dock_sample.py docked the 5,000-compound reference set into
# 4JSV at exhaustiveness 1 with ligand states in 2.0-2.2 s per compound on one core (data/README.md).
DOCK_S_PER_COMPOUND_EX1 = 2.1
INFER_CORE_S_PER_MOLECULE = 2 / 31_457  # the surrogate's inference: 31,457 molecules/s on 2 cores (README)
SAMPLE_DEPICTIONS = 12


@dataclass
class Profile(LibraryCounts):
    """What one pass found: the library stage's counts (``seconds``: the workers' CPU per step) and more."""

    parsed: int = 0
    failed_by_reason: Counter = field(default_factory=Counter)
    passing_rule: Counter = field(default_factory=Counter)
    histograms: dict[str, np.ndarray] = field(
        default_factory=lambda: {k: np.zeros(len(v) - 1, np.int64) for k, v in BINS.items()}
    )
    scaffolds: Counter = field(default_factory=Counter)
    sample: list[tuple[str, str]] = field(default_factory=list)
    worker_cpu: dict[int, float] = field(default_factory=dict)  # pid -> its process CPU at its last batch
    first_failures: list[str] = field(default_factory=list)


def inspect_library(
    sources: list[LibrarySource],
    prefix: bool,
    settings: dict[str, Any],
    *,
    limit: int | None = None,
    cores: int = 2,
    batch_size: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Profile the library through a local pilot of ``cores``; returns the JSON-ready report."""
    from .runtime import Allocation, Pilot, function_task

    profile, keys, rng = Profile(), set(), random.Random(seed)
    clock = {"read": 0.0, "fold": 0.0, "cpu": time.process_time()}
    t0 = time.perf_counter()
    options = {"local": {"preload": ["impeccable.stages.prepare"], "function_workers": cores}}
    with Pilot(
        Allocation.emulated(cores), routes={"function": "local", "executable": "local"}, options=options
    ) as pilot:
        started = time.perf_counter()
        window: list[tuple[list[SourcedRecord], Any]] = []
        stream = iter_sources(sources, prefix=prefix, on_skip=partial(_unreadable, profile))
        for index, records in enumerate(_timed_batches(stream, batch_size, limit, clock)):
            task = function_task(
                "impeccable.library_inspect:profile_batch",
                [r.smiles for r in records],
                settings,
                name=f"inspect b{index:05d}",
            )
            window.append((records, pilot.submit(task)))
            if len(window) >= 4 * cores:  # fold the oldest: results in library order, bounded memory
                _fold(profile, keys, rng, *window.pop(0), clock)
        for records, future in window:
            _fold(profile, keys, rng, records, future, clock)
        run_s = time.perf_counter() - started
    total = time.perf_counter() - t0
    clock["cpu"] = time.process_time() - clock["cpu"]
    return _report(profile, settings, total, run_s, clock, cores)


def profile_batch(smiles: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """The function task: :func:`stages.prepare.prepare_batch` with every rule tried and the kept ones profiled."""
    import os

    from .stages.prepare import prepare_batch

    out = prepare_batch(smiles, settings, profile=True)
    out["worker"] = (os.getpid(), time.process_time())  # the worker's CPU so far: the framework's share shows
    return out


def _unreadable(p: Profile, line: int, cid: str, reason: str) -> None:
    """A record the reader skipped (an SDF molfile RDKit refuses, an empty id or SMILES): a row that failed."""
    p.rows += 1
    p.failed += 1
    p.failed_by_reason[reason.split(": ")[-1].split("'")[0].rstrip(" (").strip()] += 1
    if len(p.first_failures) < 20:
        p.first_failures.append(reason)


def _timed_batches(
    records: Iterator[SourcedRecord], size: int, limit: int | None, clock: dict[str, float]
) -> Iterator[list[SourcedRecord]]:
    import itertools

    records = itertools.islice(records, limit)
    while True:
        t = time.perf_counter()
        chunk = list(itertools.islice(records, size))
        clock["read"] += time.perf_counter() - t
        if not chunk:
            return
        yield chunk


def _fold(
    p: Profile, keys: set[int], rng: random.Random, records: list[SourcedRecord], future: Any, clock: dict[str, float]
) -> None:
    try:
        out = future.result()
    except Exception as exc:  # noqa: BLE001 - a failed task fails its records; the profile goes on
        p.rows, p.failed = p.rows + len(records), p.failed + len(records)
        p.failed_by_reason[f"preparation task failed: {exc}"] += len(records)
        return
    t = time.perf_counter()
    p.rows += len(records)
    p.failed += len(out["failed"])
    p.parsed += len(records) - sum(1 for _, why in out["failed"] if why.startswith("unparsable"))
    for i, why in out["failed"]:
        p.failed_by_reason["unparsable SMILES" if why.startswith("unparsable") else why.split(":")[0]] += 1
        if len(p.first_failures) < 20:
            p.first_failures.append(f"{records[i].id}: {why}")
    p.filtered += len(out["filtered"])
    p.filtered_by_rule.update(rule for _, rule, _ in out["filtered"])
    p.passing_rule.update(out["rule_passes"])
    kept = [i for i, s in enumerate(out["smiles"]) if s]
    props = {k: np.asarray(v) for k, v in out["properties"].items()}
    unique = np.ones(len(kept), dtype=bool)
    for j, i in enumerate(kept):
        if out["keys"][i]:
            h = key_hash(out["keys"][i])
            if h in keys:
                unique[j] = False
                continue
            keys.add(h)
    p.duplicates += int((~unique).sum())
    for name, edges in BINS.items():
        values = props[name][unique] if len(kept) else np.zeros(0)
        p.histograms[name] += np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]
    p.scaffolds.update(s for s, u in zip(out["scaffolds"], unique) if u)
    p.seconds.update(out["seconds"])
    pid, cpu = out["worker"]
    p.worker_cpu[pid] = max(cpu, p.worker_cpu.get(pid, 0.0))
    for j, i in enumerate(kept):  # a seeded reservoir sample of the kept compounds, for depictions
        if not unique[j]:
            continue
        p.kept += 1
        if len(p.sample) < SAMPLE_DEPICTIONS:
            p.sample.append((records[i].id, out["smiles"][i]))
        elif (r := rng.randrange(p.kept)) < SAMPLE_DEPICTIONS:
            p.sample[r] = (records[i].id, out["smiles"][i])
    clock["fold"] += time.perf_counter() - t


def _report(
    p: Profile, settings: dict[str, Any], total_s: float, run_s: float, clock: dict[str, float], cores: int
) -> dict[str, Any]:
    worker = {k: round(v, 3) for k, v in p.seconds.items()}
    return {
        "rows": p.rows,
        "parsed": p.parsed,
        "failed": p.failed,
        "duplicates": p.duplicates,
        "filtered": p.filtered,
        "filtered_by_rule": dict(p.filtered_by_rule.most_common()),
        "kept": p.kept,
        "adds_up": p.rows == p.failed + p.duplicates + p.filtered + p.kept,
        "failed_by_reason": dict(p.failed_by_reason.most_common()),
        "first_failures": p.first_failures,
        "passing_each_rule": dict(p.passing_rule),
        "passing_all_rules": p.rows - p.failed - p.filtered,
        "mol_per_s": p.rows / total_s if total_s else 0.0,
        "seconds": round(total_s, 3),
        "steps": {
            "pilot_start_and_stop_s": round(total_s - run_s, 3),
            "manager_read_s": round(clock["read"], 3),
            "manager_fold_s": round(clock["fold"], 3),
            "manager_cpu_s": round(clock["cpu"], 3),
            "worker_cpu_s": worker,
            "worker_process_cpu_s": round(sum(p.worker_cpu.values()), 3),
            "cores": cores,
        },
        "histograms": {k: {"edges": BINS[k].tolist(), "counts": v.tolist()} for k, v in p.histograms.items()},
        "top_scaffolds": [{"scaffold": s, "count": n} for s, n in p.scaffolds.most_common(20)],
        "distinct_scaffolds": len(p.scaffolds),
        "sample": [{"id": cid, "smiles": smi} for cid, smi in p.sample],
        "settings": settings,
    }


def campaign_cost(kept: int, campaign: Any) -> dict[str, Any]:
    """Docking tasks and core-hours of a campaign screening ``kept`` compounds: an estimate (see its basis)."""
    d, r = campaign.dock, campaign.campaign.rounds
    batches = max(1, -(-kept // campaign.infer.batch_size))
    docked = min(kept, d.seed_sample + r * campaign.redock.top_k)
    tasks = -(-d.seed_sample // d.ligands_per_task) + r * min(campaign.redock.top_k, batches)
    dock_s = docked * DOCK_S_PER_COMPOUND_EX1 * d.exhaustiveness
    infer_s = r * kept * INFER_CORE_S_PER_MOLECULE
    return {
        "estimate": True,
        "compounds_screened": kept,
        "compounds_docked": docked,
        "docking_tasks": tasks,
        "docking_core_hours": round(dock_s / 3600, 2),
        "inference_core_hours": round(infer_s / 3600, 3),
        "basis": f"{DOCK_S_PER_COMPOUND_EX1} s per compound at exhaustiveness 1 (ligand states, measured on this "
        "machine by data/dock_sample.py, data/README.md), taken as proportional to exhaustiveness "
        f"({d.exhaustiveness}); inference 31,457 molecules/s on 2 cores (README); MD not included "
        f"({campaign.md.top_m} compounds x {campaign.md.replicas} replicas per round)",
    }
