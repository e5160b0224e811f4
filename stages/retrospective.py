"""The scores a campaign would have given a benchmark set, computed offline from its docking scores.

Given every compound's Vina score (the set was docked once), this module answers what the rest of
the pipeline would have made of them, without docking anything again:

- :func:`ligand_efficiency`: Vina score per heavy atom (kcal/mol/atom, as a positive number), the
  classic correction for Vina's reward of size (Hopkins et al., Drug Discov. Today 2004, 9, 430).
- :func:`crossfit_predictions`: the surrogate's prediction for every compound from a model that
  never saw that compound's score (k-fold cross-fitting: train on the other folds, predict this one).
- :func:`campaign_replay`: the campaign's active-learning loop replayed on the known scores (dock a
  1% seed, train, dock the best-predicted 1%, retrain, ... until a budget), as ``evaluate`` does for
  retrieval, returning the campaign's final ranking: docked compounds by Vina score, then the rest
  by the last model's prediction. Beside it the same budget spent at random.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .features import featurise
from .surrogate import fit, nominate

__all__ = ["heavy_atoms", "ligand_efficiency", "crossfit_predictions", "campaign_replay", "final_ranking"]


def heavy_atoms(smiles: Sequence[str]) -> np.ndarray:
    """Heavy atoms of each compound's parent (salts stripped); NaN where it cannot be parsed."""
    from .ligands import strip_salts

    out = np.full(len(smiles), np.nan)
    for i, s in enumerate(smiles):
        mol = strip_salts(s)
        if mol is not None:
            out[i] = mol.GetNumHeavyAtoms()
    return out


def ligand_efficiency(scores_kcal_mol: np.ndarray, n_heavy: np.ndarray) -> np.ndarray:
    """-score / heavy atoms: larger is better (kcal/mol per heavy atom); NaN where either is missing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_heavy > 0, -np.asarray(scores_kcal_mol, dtype=float) / n_heavy, np.nan)


def crossfit_predictions(
    smiles: Sequence[str], scores_kcal_mol: np.ndarray, *, folds: int = 5, epochs: int = 60, seed: int = 0
) -> np.ndarray:
    """Out-of-fold surrogate predictions (kcal/mol, lower is better); NaN for unparsable or unscored compounds."""
    x, valid = featurise(list(smiles))
    y = np.asarray(scores_kcal_mol, dtype=float)
    usable = np.flatnonzero(valid & np.isfinite(y))
    out = np.full(len(y), np.nan)
    parts = np.array_split(np.random.default_rng(seed).permutation(usable), folds)
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        out[test] = fit(x[train], y[train], epochs=epochs, seed=seed + k).predict(x[test])
    return out


def final_ranking(docked: Sequence[int], scores_kcal_mol: np.ndarray, predicted: np.ndarray | None) -> np.ndarray:
    """A ranking score (higher = first) for every compound: docked ones by Vina score above all others,
    which follow by predicted score (or tie last without a model)."""
    y = np.asarray(scores_kcal_mol, dtype=float)
    rank_score = np.full(len(y), np.nan)
    if predicted is not None:
        p = np.where(np.isfinite(predicted), predicted, np.nanmax(predicted) if np.isfinite(predicted).any() else 0)
        rank_score[:] = -p - 1e6  # every undocked compound below every docked one
    d = np.asarray(docked, dtype=int)
    rank_score[d] = np.where(np.isfinite(y[d]), -y[d], np.nan)  # docked but failed: last
    return rank_score


def campaign_replay(
    smiles: Sequence[str],
    scores_kcal_mol: np.ndarray,
    budgets: Sequence[float],
    *,
    replicates: int = 5,
    seed: int = 0,
    epochs: int = 60,
    init_fraction: float = 0.01,
    batch_fraction: float = 0.01,
) -> dict[float, list[dict[str, np.ndarray]]]:
    """For each budget (fraction docked) and replicate: the active-learning and random rankings.

    Returns ``{budget: [{"active": ranking, "random": ranking}, ...]}`` with rankings as from
    :func:`final_ranking`. Compounds that failed to dock still cost a docking (the campaign tried).
    """
    x, valid = featurise(list(smiles))
    y = np.asarray(scores_kcal_mol, dtype=float)
    n = len(y)
    usable = np.flatnonzero(valid)
    n_init = max(8, int(round(init_fraction * n)))
    n_batch = max(1, int(round(batch_fraction * n)))
    sizes = {b: max(n_init + 1, int(round(b * n))) for b in budgets}
    out: dict[float, list[dict[str, np.ndarray]]] = {b: [] for b in budgets}
    ids = [str(i) for i in range(n)]
    for rep in range(seed, seed + replicates):
        rng = np.random.default_rng(rep)
        init = rng.choice(usable, size=n_init, replace=False).tolist()
        rest = np.setdiff1d(usable, init)
        docked = list(init)
        predicted = None
        for b, size in sorted(sizes.items()):
            while len(docked) < size:
                known = [i for i in docked if np.isfinite(y[i])]
                model = fit(x[known], y[known], epochs=epochs, seed=rep)
                predicted = np.full(n, np.nan)
                predicted[usable] = model.predict(x[usable])
                scored = [(ids[i], float(predicted[i])) for i in usable]
                step = min(n_batch, size - len(docked))
                docked += [int(c) for c in nominate(scored, {ids[i] for i in docked}, step)]
            random_docked = init + rng.choice(rest, size=size - n_init, replace=False).tolist()
            out[b].append(
                {"active": final_ranking(docked, y, predicted), "random": final_ranking(random_docked, y, None)}
            )
    return out
