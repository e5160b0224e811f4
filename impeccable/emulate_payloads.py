"""The function tasks of an emulated campaign: they take the recorded time and return placeholders.

Kept apart from :mod:`.emulate` and importing nothing at module level, so that under ``srun``, where each
function task is a fresh ``python -m`` process, a task pays what the real stage's process pays: the
interpreter and the real stage's own imports (done in :func:`_stage_imports`), no more and no less.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any


def emulated_train(seconds: float) -> dict[str, Any]:
    """Training's recorded time, after the imports the real training task makes."""
    _stage_imports()
    time.sleep(seconds)
    return {"emulation": True, "val_spearman": float("nan")}


def emulated_infer(seconds: float, ids: list[str]) -> dict[str, Any]:
    """An inference batch's recorded time, and a placeholder prediction for each compound."""
    _stage_imports()
    time.sleep(seconds)
    return placeholder_predictions(ids)


def emulated_md_combine(seconds: float) -> dict[str, Any]:
    """An MD combine step's recorded time, after the import the real one makes (the MD stage: OpenMM)."""
    import impeccable.stages.md  # noqa: F401

    time.sleep(seconds)
    return {"emulation": True}


def placeholder_predictions(ids: list[str]) -> dict[str, Any]:
    """What an inference batch returns (see ``impeccable.work.infer_batch``), with placeholder scores."""
    return {"scores": [placeholder_score(cid, "infer") for cid in ids], "filtered": [], "failed": []}


def _stage_imports() -> None:
    """What ``impeccable.work``'s functions import (the surrogate and the filters: torch, RDKit); cached
    after the first call in a persistent worker, paid by every task in a fresh process. torch is named
    here because the surrogate imports it on first use, not at module level: without it a fresh process
    paid 0.19 s instead of the real 1.3-1.6 s."""
    import torch  # noqa: F401

    import impeccable.stages.filters  # noqa: F401
    import impeccable.stages.surrogate  # noqa: F401


def placeholder_score(cid: str, salt: str) -> float:
    """A deterministic number in [-12, -4): lets selection proceed; it is not a score of anything."""
    return -12.0 + 8.0 * (stable_hash(f"{salt}:{cid}") % 10_000) / 10_000


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
