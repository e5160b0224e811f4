"""Function tasks the campaign sends to the pilot's function backend (persistent workers).

They live in an importable module (workers import them by name) and take and
return plain data, so any backend can ship them. The surrogate model is loaded
once per worker process and reused across batches (see ``stages.surrogate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# what these functions import: a function worker imports it once, before its first call (``preload``)
PRELOAD = ("impeccable.stages.surrogate", "impeccable.stages.filters", "impeccable.stages.prepare")
# and what the surrogate imports on first use. The local backend's forkserver imports it once and every worker
# forked from it shares it: 64 first inference calls on 32 workers took 15.9 s without it, 0.0 s with it (start
# 0.6 -> 1.5 s). Dragon's workers are spawned, not forked: there it would only move each worker's import into
# the runtime's start (past its 120-s start timeout for 128 workers on 2 cores), so it is not preloaded there.
PRELOAD_FORKED = ("torch",)


def infer_batch(model_path: str, smiles: Sequence[str], filters: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Filter, featurise and score one batch of SMILES.

    Returns ``scores`` (float32, one per SMILES in order, NaN where not scored), ``filtered``
    [(position, reason)] and ``failed`` [(position, reason)], so the campaign can account for every
    compound. Positions, not ids, travel back, and no SMILES: the manager holds the batch. Also
    ``device`` (the GPU this call holds, where the model stays resident between calls, or the CPU),
    ``device_note`` (why a GPU it holds was not used) and ``seconds`` (featurise_s, transfer_s, model_s).
    """
    import numpy as np

    from .stages import surrogate
    from .stages.device import device_label, torch_device
    from .stages.filters import FilterRules, check
    from .stages.ligands import unusable_reason
    from .stages.skips import is_filter

    torch = surrogate._torch()
    device, note = torch_device(torch)

    rules = FilterRules(**filters)
    keep, filtered = list(range(len(smiles))), []
    if rules.active:
        reasons = [check(s, rules) for s in smiles]
        keep = [i for i, reason in enumerate(reasons) if reason is None]
        filtered = [(i, reason) for i, reason in enumerate(reasons) if reason is not None]
    scores = np.full(len(smiles), np.nan, dtype=np.float32)
    seconds = {"featurise_s": 0.0, "transfer_s": 0.0, "model_s": 0.0}
    if keep:
        kept = smiles if len(keep) == len(smiles) else [smiles[i] for i in keep]
        scores[keep], seconds = surrogate.predict_timed(model_path, kept, threads=threads, device=device)
    # an unusable SMILES (unparsable, impossible valence ...) is a failure, not a filter decision
    unparsable = np.asarray(keep, dtype=np.int64)[np.isnan(scores[keep])]
    failed = [(int(i), unusable_reason(smiles[i]) or f"unparsable SMILES {smiles[i]!r}") for i in unparsable]
    failed += [(i, reason) for i, reason in filtered if not is_filter(reason)]
    filtered = [(i, reason) for i, reason in filtered if is_filter(reason)]
    return {
        "scores": scores,
        "filtered": filtered,
        "failed": failed,
        "device": device_label(torch, device),
        "device_note": note,
        "seconds": seconds,
    }


def prepare_library(smiles: Sequence[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Standardise, filter and key one batch of library SMILES (see ``stages.prepare.prepare_batch``)."""
    from .stages.prepare import prepare_batch

    return prepare_batch(smiles, settings)


def train_surrogate(
    records: Sequence[tuple[str, float]], model_path: str, epochs: int, seed: int, val_fraction: float, threads: int
) -> dict[str, Any]:
    """Train the surrogate on (smiles, docking score) pairs; returns the training report."""
    from .stages import surrogate

    return surrogate.train(records, model_path, epochs=epochs, seed=seed, val_fraction=val_fraction, threads=threads)


def check_poses(receptor_pdb: str, poses: Sequence[tuple[str, str]]) -> list[tuple[str, bool, list[str]]]:
    """PoseBusters' ``dock`` checks on (id, molblock) poses: (id, passed, names of the failed checks) each."""
    from .stages.posecheck import check_poses as bust

    return [(v.id, v.passed, list(v.failed)) for v in bust(receptor_pdb, poses)]


def md_combine(folder: str) -> dict[str, Any]:
    """The MD ensemble's result from its prepare and replica steps' files (see ``stages.md_tasks``)."""
    from pathlib import Path

    from .stages import md_tasks

    return md_tasks.combine_step(Path(folder))
