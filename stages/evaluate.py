"""How good is the surrogate, measured so that a reader can trust it: CV against baselines, and top-k retrieval.

Two questions, each answered on a fully docked reference set (data/scores/,
every compound docked, so the truth is known for all of them):

1. **Does the model predict docking scores?** ``cross_validate``: k-fold CV.
   In every fold the network picks its best epoch on a validation split carved
   out of the *training* folds only (``surrogate.fit``), so the test fold is
   never seen before it is scored. Beside it, in the same folds: a least-squares
   linear model on three descriptors (heavy atoms, aromatic rings, rotatable
   bonds -- Vina rewards size, and this says how much of the signal is size)
   and the mean predictor (RMSE only; it has no ranking).
2. **Does it find the best compounds?** ``retrieval``: the fraction of the
   reference set's true top 1% (by docking score) found after docking 2%, 5%
   and 10% of the set, for
   - *active learning*, the campaign's loop replayed offline on the known
     scores: dock a random seed (1% of the set), train, dock the best-predicted
     undocked compounds (``surrogate.nominate``, 1% per round), retrain on
     everything docked, repeat. The campaign takes each inference batch's share
     of the top-k; its batches are stratified samples of the library, so that
     approximates the global top-k used here;
   - *one-shot*: train once on the seed, dock the top of its predictions;
   - *random*: dock a random sample.
   Each strategy runs ``replicates`` times with different random seed samples
   and network seeds; intervals are 95% bootstrap intervals of the mean over
   those replicates (resampling replicates), so they describe run-to-run
   variation on this reference set, not variation between reference sets.

    python -m impeccable.stages.evaluate cv --scores data/scores/4jsv_vina_states.csv
    python -m impeccable.stages.evaluate retrieval --scores data/scores/4jsv_vina_states.csv
    python -m impeccable.stages.evaluate seeds --scores data/scores/4jsv_vina_states.csv   # seed strategies
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StageInputError, exit_code
from .features import featurise
from .surrogate import _spearman, fit, nominate

__all__ = [
    "ReferenceSet",
    "read_reference",
    "descriptors",
    "cross_validate",
    "retrieval",
    "retrieval_runs",
    "seed_strategies",
    "RetrievalSettings",
    "summarise_retrieval",
    "bootstrap_mean_ci",
    "main",
]

BUDGETS = (0.02, 0.05, 0.10)  # fractions of the reference set docked
TOP_FRACTION = 0.01  # "the best compounds": the true top 1%


@dataclass(frozen=True)
class ReferenceSet:
    """Fully docked compounds: ids, library SMILES, best-state Vina scores (kcal/mol, lower is better)."""

    ids: list[str]
    smiles: list[str]
    scores: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.ids)


def read_reference(path: str | Path, limit: int | None = None) -> ReferenceSet:
    """The first ``limit`` rows (all by default) of a score file with id, smiles and score_kcal_mol columns.

    Rows are in sample order (data/dock_sample.py), so a prefix is a fair random subset.
    """
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"{path}: scores file not found")
    ids, smiles, scores = [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"id", "smiles", "score_kcal_mol"} - set(reader.fieldnames or [])
        if missing:
            raise StageInputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            if limit is not None and len(ids) >= limit:
                break
            try:
                value = float(row["score_kcal_mol"])
            except (TypeError, ValueError):
                raise StageInputError(
                    f"{path}, line {line}: score_kcal_mol {row['score_kcal_mol']!r} is not a number"
                ) from None
            ids.append(row["id"])
            smiles.append(row["smiles"])
            scores.append(value)
    if len(ids) < 20:
        raise StageInputError(f"{path}: {len(ids)} scored compounds, too few to evaluate anything")
    return ReferenceSet(ids, smiles, np.array(scores, dtype=np.float64), str(path))


def descriptors(smiles: Sequence[str]) -> np.ndarray:
    """[n, 3]: heavy atoms, aromatic rings, rotatable bonds of each (salt-stripped) molecule; NaN if unparsable."""
    from rdkit.Chem import rdMolDescriptors

    from .ligands import strip_salts

    out = np.full((len(smiles), 3), np.nan)
    for i, s in enumerate(smiles):
        mol = strip_salts(s)
        if mol is not None:
            out[i] = (
                mol.GetNumHeavyAtoms(),
                rdMolDescriptors.CalcNumAromaticRings(mol),
                rdMolDescriptors.CalcNumRotatableBonds(mol),
            )
    return out


def cross_validate(
    ref: ReferenceSet, *, folds: int = 5, seed: int = 0, epochs: int = 60, val_fraction: float = 0.2
) -> dict[str, Any]:
    """k-fold CV of the surrogate, the 3-descriptor linear baseline and the mean predictor (same folds).

    Returns per-model mean and standard deviation over folds of Spearman and RMSE, and the per-fold values.
    """
    x, valid = featurise(ref.smiles)
    d = descriptors(ref.smiles)
    ok = valid & np.all(np.isfinite(d), axis=1)
    x, d, y = x[ok], d[ok], ref.scores[ok]
    order = np.random.default_rng(seed).permutation(len(y))
    parts = np.array_split(order, folds)
    per_fold: dict[str, dict[str, list[float]]] = {
        m: {"spearman": [], "rmse": []} for m in ("surrogate", "baseline", "mean")
    }
    del per_fold["mean"]["spearman"]
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        model = fit(x[train], y[train], epochs=epochs, seed=seed + k, val_fraction=val_fraction)
        predictions = {
            "surrogate": model.predict(x[test]),
            "baseline": _linear(d[train], y[train], d[test]),
            "mean": np.full(len(test), y[train].mean()),
        }
        for name, p in predictions.items():
            if name != "mean":  # a constant has no ranking
                per_fold[name]["spearman"].append(_spearman(p, y[test]))
            per_fold[name]["rmse"].append(float(np.sqrt(np.mean((p - y[test]) ** 2))))
    summary: dict[str, Any] = {
        "n": int(len(y)),
        "n_unparsable": int((~ok).sum()),
        "folds": folds,
        "epochs": epochs,
        "inner_val_fraction": val_fraction,
        "per_fold": per_fold,
    }
    for name, metrics in per_fold.items():
        for metric, values in metrics.items():
            if not values:
                continue
            summary[f"{name}_{metric}_mean"] = float(np.mean(values))
            summary[f"{name}_{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return summary


@dataclass(frozen=True)
class RetrievalSettings:
    """How a campaign is replayed on a reference set: surrogate epochs, seed sample and batch as fractions of
    the set, the docking budgets recall is read at, and the fraction of best compounds counted as hits."""

    epochs: int = 60
    init_fraction: float = 0.01
    batch_fraction: float = 0.01
    budgets: tuple[float, ...] = BUDGETS
    top_fraction: float = TOP_FRACTION


def retrieval(
    ref: ReferenceSet, *, replicates: int = 10, seed: int = 0, settings: RetrievalSettings = RetrievalSettings()
) -> dict[str, Any]:
    """Top-1% recall after docking each budget, for active learning, one-shot and random selection.

    Offline: every score is already known, nothing is docked; "docking" a compound reveals its score.
    """
    runs = retrieval_runs(ref, range(seed, seed + replicates), settings)
    return summarise_retrieval(ref, runs, settings)


def retrieval_runs(
    ref: ReferenceSet,
    replicate_seeds: Sequence[int],
    settings: RetrievalSettings = RetrievalSettings(),
    *,
    seed_strategy: str = "random",
) -> dict[str, dict[float, list[float]]]:
    """The raw recalls: strategy -> budget -> one value per replicate seed (see :func:`retrieval`).

    ``seed_strategy`` picks the first docked compounds as a campaign's ``library.seed_strategy`` does
    (stages/seedsample.py); the random baseline always starts from a random seed. Replicates are
    independent, so callers may split the seeds over processes and concatenate.
    """
    from .seedsample import pick_indices

    epochs, budgets, top_fraction = settings.epochs, settings.budgets, settings.top_fraction
    init_fraction, batch_fraction = settings.init_fraction, settings.batch_fraction
    n = len(ref)
    x, valid = featurise(ref.smiles)
    y = ref.scores
    top = set(np.argsort(y, kind="stable")[: _n_top(n, top_fraction)].tolist())
    n_init, n_batch = _n_init(n, init_fraction), max(1, int(round(batch_fraction * n)))
    sizes = {b: int(round(b * n)) for b in budgets}
    if min(sizes.values()) <= n_init:
        raise StageInputError(
            f"the smallest budget ({min(sizes.values())} compounds) is not above the seed "
            f"sample ({n_init}); use a larger reference set"
        )
    runs: dict[str, dict[float, list[float]]] = {s: {b: [] for b in budgets} for s in ("active", "oneshot", "random")}
    usable = np.flatnonzero(valid)
    for rep in replicate_seeds:
        rng = np.random.default_rng(rep)
        init = rng.choice(usable, size=n_init, replace=False).tolist()
        rest = np.setdiff1d(usable, init)
        for b, size in sizes.items():
            runs["random"][b].append(_recall(init + rng.choice(rest, size=size - n_init, replace=False).tolist(), top))
        if seed_strategy != "random":
            init = pick_indices(ref.smiles, n_init, seed=rep, strategy=seed_strategy, among=usable.tolist())
        docked = list(init)
        while len(docked) < max(sizes.values()):
            model = fit(x[docked], y[docked], epochs=epochs, seed=rep)
            scored = list(zip(usable.tolist(), model.predict(x[usable]).tolist()))
            if len(docked) == n_init:  # one-shot: the first model's top picks, for every budget
                for b, size in sizes.items():
                    runs["oneshot"][b].append(_recall(init + nominate(scored, set(init), size - n_init), top))
            step = min(n_batch, min(s for s in sizes.values() if s > len(docked)) - len(docked))  # hit each budget
            docked += nominate(scored, set(docked), step)
            for b, size in sizes.items():
                if len(docked) == size:
                    runs["active"][b].append(_recall(docked, top))
    return runs


def seed_strategies(
    ref: ReferenceSet, *, replicates: int = 10, seed: int = 0, epochs: int = 60, strategies: Sequence[str] | None = None
) -> dict[str, Any]:
    """Active-learning top-1% recall at each budget when the seed sample is random, diverse or stratified
    (``library.seed_strategy``), the same replicate seeds for each; means with bootstrap intervals."""
    from .seedsample import STRATEGIES

    out: dict[str, Any] = {
        "reference_set_size": len(ref),
        "replicates": replicates,
        "epochs": epochs,
        "interval": "95% bootstrap interval of the mean over replicates",
    }
    for strategy in strategies or STRATEGIES:
        runs = retrieval_runs(
            ref, range(seed, seed + replicates), RetrievalSettings(epochs=epochs), seed_strategy=strategy
        )
        for b, values in runs["active"].items():
            key = f"{strategy}_seed_active_top{_pct(TOP_FRACTION)}_recall_at_{_pct(b)}"
            out[key], out[key + "_runs"] = float(np.mean(values)), values
            out[key + "_ci95"] = list(bootstrap_mean_ci(values))
    return out


def summarise_retrieval(
    ref: ReferenceSet, runs: dict[str, dict[float, list[float]]], settings: RetrievalSettings = RetrievalSettings()
) -> dict[str, Any]:
    """Means, bootstrap intervals and the raw values of :func:`retrieval_runs`, keyed by strategy and budget."""
    budgets, top_fraction, batch_fraction = settings.budgets, settings.top_fraction, settings.batch_fraction
    n = len(ref)
    result: dict[str, Any] = {
        "reference_set_size": n,
        "top_compounds": _n_top(n, top_fraction),
        "seed_sample": _n_init(n, settings.init_fraction),
        "batch": max(1, int(round(batch_fraction * n))),
        "replicates": len(runs["random"][budgets[0]]),
        "epochs": settings.epochs,
        "interval": "95% bootstrap interval of the mean over replicates (different seed samples and network seeds)",
    }
    for strategy, by_budget in runs.items():
        for b in budgets:
            values = by_budget[b]
            key = f"{strategy}_top{_pct(top_fraction)}_recall_at_{_pct(b)}"
            result[key] = float(np.mean(values))
            result[key + "_ci95"] = list(bootstrap_mean_ci(values))
            result[key + "_runs"] = values
    return result


def _n_top(n: int, fraction: float) -> int:
    return max(1, int(round(fraction * n)))


def _n_init(n: int, fraction: float) -> int:
    return max(8, int(round(fraction * n)))


def bootstrap_mean_ci(values: Sequence[float], *, seed: int = 0, resamples: int = 10_000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values``."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return (float(v.mean()), float(v.mean())) if len(v) else (float("nan"), float("nan"))
    means = np.random.default_rng(seed).choice(v, size=(resamples, len(v)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _recall(picked: Sequence[int], top: set[int]) -> float:
    return len(top.intersection(picked)) / len(top)


def _linear(d_train: np.ndarray, y_train: np.ndarray, d_test: np.ndarray) -> np.ndarray:
    a = np.column_stack([d_train, np.ones(len(d_train))])
    coef, *_ = np.linalg.lstsq(a, y_train, rcond=None)
    return np.column_stack([d_test, np.ones(len(d_test))]) @ coef


def _pct(fraction: float) -> str:
    return f"{round(fraction * 100)}pct"


def main(argv: list[str] | None = None) -> int:
    """CLI: print the CV or retrieval result as JSON; exit 2 for bad inputs."""
    p = argparse.ArgumentParser(prog="python -m impeccable.stages.evaluate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("cv", "retrieval", "seeds"):
        c = sub.add_parser(name)
        c.add_argument("--scores", required=True, type=Path)
        c.add_argument("--limit", type=int, help="use only the first N rows (a fair subset: sample order)")
        c.add_argument("--epochs", type=int, default=60)
        c.add_argument("--seed", type=int, default=0)
        c.add_argument("--threads", type=int, default=1, help="torch threads")
        if name == "cv":
            c.add_argument("--folds", type=int, default=5)
        else:
            c.add_argument("--replicates", type=int, default=10)
        if name == "seeds":
            c.add_argument(
                "--strategy",
                action="append",
                choices=("random", "diverse", "stratified"),
                help="only these seed strategies (repeat the option; default all three)",
            )
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)

    def body() -> None:
        ref = read_reference(a.scores, a.limit)
        if a.command == "cv":
            out = cross_validate(ref, folds=a.folds, seed=a.seed, epochs=a.epochs)
        elif a.command == "seeds":
            out = seed_strategies(ref, replicates=a.replicates, seed=a.seed, epochs=a.epochs, strategies=a.strategy)
        else:
            out = retrieval(ref, replicates=a.replicates, seed=a.seed, settings=RetrievalSettings(epochs=a.epochs))
        print(json.dumps({"scores": ref.source, **out}, indent=1))

    return exit_code(body)


if __name__ == "__main__":
    raise SystemExit(main())
