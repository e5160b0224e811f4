"""Retrospective virtual-screening metrics: does a score put known actives above decoys or inactives?

The field's standard set, each computed from one ranking (higher score = ranked first):

- **ROC-AUC**: the probability that a random active outranks a random decoy (Mann-Whitney).
- **EF x%**: actives among the top x% of the ranking over the actives expected there by chance,
  ``(hits / n_top) / (n_actives / n)``, with ``n_top = max(1, round(x n))``. Its ceiling is
  ``min(n_top, n_actives) / n_top * n / n_actives`` (:func:`max_enrichment_factor`): 1:20 actives to
  decoys caps EF1% at 21, not 100.
- **BEDROC** (alpha 20; Truchon and Bayly, J. Chem. Inf. Model. 2007, 47, 488): an exponentially
  weighted early-recognition score in [0, 1]; with alpha 20, 80% of the weight is on the first 8%.
- **Top-x% recall**: the fraction of all actives found in the top x%.

Ties (two compounds with the same score) are broken at random, and every metric is its *expected*
value over those random tie-breaks, computed exactly (AUC counts a tie as one half, the same thing).
Compounds without a score (NaN: failed to dock, no MM/GBSA) rank last, tied: a campaign would never pick them.

Intervals: a 95% percentile bootstrap, stratified (actives and decoys resampled separately with
replacement, so every resample keeps the ratio), seeded. They describe the sampling of *these*
compounds from their populations, not the docking noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["METRICS", "enrichment_metrics", "max_enrichment_factor", "bootstrap_metrics", "score_table"]

EARLY_FRACTIONS = {"ef1": 0.01, "ef5": 0.05}
BEDROC_ALPHA = 20.0
METRICS = ("roc_auc", "ef1", "ef5", "bedroc", "top1pct_recall")


def _groups(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranking as tie groups, best first: (start position, size, actives) per group."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], labels[order].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sizes = np.diff(np.r_[starts, len(s)])
    actives = np.add.reduceat(y, starts) if len(s) else np.zeros(0, dtype=np.int64)
    return starts, sizes, actives


def _n_top(n: int, fraction: float) -> int:
    return max(1, int(round(fraction * n)))


def enrichment_metrics(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, *, alpha: float = BEDROC_ALPHA
) -> dict[str, float]:
    """ROC-AUC, EF1%, EF5%, BEDROC(alpha) and top-1% recall of one ranking (higher score first).

    ``labels``: True for an active. Needs at least one active and one decoy.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores: two 1-D arrays of one length, got {y.shape} and {s.shape}")
    n, n_act = len(y), int(y.sum())
    n_dec = n - n_act
    if n_act == 0 or n_dec == 0:
        raise ValueError(f"need actives and decoys, got {n_act} actives and {n_dec} decoys")
    starts, sizes, actives = _groups(y, s)
    decoys = sizes - actives
    worse_decoys = n_dec - np.cumsum(decoys)  # decoys ranked strictly after each group
    auc = float(np.sum(actives * (worse_decoys + 0.5 * decoys))) / (n_act * n_dec)

    def expected_hits(n_top: int) -> float:
        inside = np.clip(n_top - starts, 0, sizes)
        return float(np.sum(actives * inside / sizes))

    out = {"roc_auc": auc}
    for key, fraction in EARLY_FRACTIONS.items():
        n_top = _n_top(n, fraction)
        out[key] = (expected_hits(n_top) / n_top) / (n_act / n)
    out["top1pct_recall"] = expected_hits(_n_top(n, 0.01)) / n_act
    weights = np.r_[0.0, np.cumsum(np.exp(-alpha * np.arange(1, n + 1) / n))]  # prefix sums over ranks 1..n
    group_mean = (weights[starts + sizes] - weights[starts]) / sizes
    out["bedroc"] = _bedroc(float(np.sum(actives * group_mean)), n_act, n, alpha)
    return out


def _bedroc(weight_sum: float, n_act: int, n: int, alpha: float) -> float:
    """Truchon and Bayly's eq. 36 from the sum of exp(-alpha r_i / n) over the actives' ranks r_i (1-based)."""
    ra = n_act / n
    rie = (weight_sum / n_act) / ((1.0 / n) * (1.0 - math.exp(-alpha)) / (math.exp(alpha / n) - 1.0))
    scale = ra * math.sinh(alpha / 2) / (math.cosh(alpha / 2) - math.cosh(alpha / 2 - alpha * ra))
    return rie * scale + 1.0 / (1.0 - math.exp(alpha * (1.0 - ra)))


def max_enrichment_factor(n_actives: int, n: int, fraction: float) -> float:
    """The best EF at ``fraction`` this set allows: every top slot an active, as far as there are actives."""
    n_top = _n_top(n, fraction)
    return (min(n_top, n_actives) / n_top) / (n_actives / n)


def bootstrap_metrics(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, *, resamples: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Stratified percentile-bootstrap 95% interval of every metric of :func:`enrichment_metrics`."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    act, dec = np.flatnonzero(y), np.flatnonzero(~y)
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(resamples):
        pick = np.r_[rng.choice(act, len(act)), rng.choice(dec, len(dec))]
        for key, value in enrichment_metrics(y[pick], s[pick]).items():
            values[key].append(value)
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in values.items()}


def score_table(
    labels: Sequence[bool] | np.ndarray,
    scores: Mapping[str, Sequence[float] | np.ndarray],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Every metric with its interval for each named score (higher = better), plus how many have a value."""
    y = np.asarray(labels, dtype=bool)
    table: dict[str, dict[str, Any]] = {}
    for name, values in scores.items():
        s = np.asarray(values, dtype=np.float64)
        row: dict[str, Any] = {"n_scored": int(np.isfinite(s).sum()), "n_actives_scored": int(np.isfinite(s[y]).sum())}
        row.update(enrichment_metrics(y, s))
        for key, ci in bootstrap_metrics(y, s, resamples=resamples, seed=seed).items():
            row[f"{key}_ci"] = [ci[0], ci[1]]
        table[name] = row
    return table
