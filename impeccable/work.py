"""Function tasks the campaign sends to the pilot's function backend (persistent workers).

They live in an importable module (workers import them by name) and take and
return plain data, so any backend can ship them. The surrogate model is loaded
once per worker process and reused across batches (see ``stages.surrogate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# what these functions import: a function worker imports it once, before its first call (``preload``)
PRELOAD = ("impeccable.stages.surrogate", "impeccable.stages.filters")


def infer_batch(model_path: str, records: Sequence[tuple[str, str]], filters: dict[str, Any],
                threads: int = 1) -> dict[str, Any]:
    """Filter, featurise and score one batch of (id, smiles).

    Returns ``scored`` [(id, smiles, predicted score)], ``filtered`` [(id, reason)]
    and ``failed`` [(id, reason)] so the campaign can account for every compound.
    """
    from .stages import surrogate
    from .stages.filters import FilterRules, check

    rules = FilterRules(**filters)
    keep, filtered = [], []
    if rules.active:
        for cid, smiles in records:
            reason = check(smiles, rules)
            if reason is None:
                keep.append((cid, smiles))
            else:
                filtered.append((cid, reason))
    else:
        keep = list(records)
    smiles_of = dict(keep)
    predictions = surrogate.predict(model_path, keep, threads=threads) if keep else []
    scored, failed = [], []
    for cid, value in predictions:
        if value is None:
            failed.append((cid, f"unparsable SMILES {smiles_of[cid]!r}"))
        else:
            scored.append((cid, smiles_of[cid], float(value)))
    # an unparsable SMILES is a failure, not a filter decision
    failed += [(cid, reason) for cid, reason in filtered if reason.startswith("unparsable")]
    filtered = [(cid, reason) for cid, reason in filtered if not reason.startswith("unparsable")]
    return {"scored": scored, "filtered": filtered, "failed": failed}


def train_surrogate(records: Sequence[tuple[str, float]], model_path: str, epochs: int, seed: int,
                    val_fraction: float, threads: int) -> dict[str, Any]:
    """Train the surrogate on (smiles, docking score) pairs; returns the training report."""
    from .stages import surrogate

    return surrogate.train(records, model_path, epochs=epochs, seed=seed, val_fraction=val_fraction, threads=threads)
