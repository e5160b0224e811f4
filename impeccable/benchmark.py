"""``impeccable benchmark``: does the pipeline put known actives above decoys (or inactives) for a target?

    impeccable benchmark --actives A.smi --decoys D.smi --receptor data/receptors/4jsv \\
        --scores data/scores/4jsv_litpcba_mtorc1.csv --json bench.json [--html bench.html]

Scores come from one of three places:

- ``--scores FILE``: a docked score file (``id,smiles,score_kcal_mol[,state_smiles]``, e.g. the shipped
  ``data/scores/4jsv_litpcba_mtorc1.csv``); its ``.failures.csv`` beside it lists compounds that could
  not be docked, which rank last. Only compounds present in one of the two are evaluated (a shipped
  file may hold a sample of the decoys; the counts say how many);
- nothing: every compound is docked through the pilot into ``--out-dir`` (``benchdock``; resumable);
- ``--run-dir``: a campaign run over the set (its Vina, surrogate and MM/GBSA values and its ranking).

For every score the pipeline has -- Vina score (the default ranking: every compound has one, computed
the same way), ligand efficiency, heavy-atom count (a size-only baseline: what Vina partly measures),
the surrogate's out-of-fold prediction, MM/GBSA and the campaign's final rank where a run has them --
it reports ROC-AUC, EF1%, EF5%, BEDROC(20) and top-1% recall with stratified bootstrap 95% intervals
(``stages.enrichment``), and the campaign view: actives in the final top 1% after docking a budget
of the set by active learning, against docking everything and docking the same budget at random.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

__all__ = ["register", "read_set", "read_score_file", "evaluate", "campaign_view"]

BUDGETS = (0.05, 0.10, 0.20)
REPLAY_BUDGET = 0.10  # the campaign_rank score: the active-learning ranking after docking this fraction
SCORE_NOTES = {
    "vina": "AutoDock Vina score of the best ligand state (lower binds better); the default ranking",
    "ligand_efficiency": "-Vina score / heavy atoms (kcal/mol per heavy atom)",
    "heavy_atoms": "heavy-atom count alone, larger first: the size baseline Vina has to beat",
    "surrogate": "the campaign's surrogate, out-of-fold (5-fold cross-fitting on the set's Vina scores)",
    "campaign_rank": "the active-learning campaign replayed: 10% docked (ranked by Vina) above the rest "
    "(ranked by the last model's prediction); replicate 0",
    "mmgbsa": "MM/GBSA ensemble mean (campaign run only; lower first; compounds without it rank last)",
    "campaign_final_rank": "the campaign run's own default ranking (impeccable export), the rest by prediction",
}


def read_set(actives: Path, decoys: Path) -> tuple[list[Any], np.ndarray]:
    """The records of both files, actives first, and their labels; an id in both files is refused."""
    from .stages.errors import StageInputError
    from .stages.library import read_library

    try:
        act, dec = list(read_library(actives)), list(read_library(decoys))
    except StageInputError as exc:
        raise UserError(str(exc)) from None
    both = {r.id for r in act} & {r.id for r in dec}
    if both:
        raise UserError(f"{actives} and {decoys}: {len(both)} id(s) in both, e.g. {sorted(both)[0]!r}")
    return act + dec, np.r_[np.ones(len(act), bool), np.zeros(len(dec), bool)]


def read_score_file(path: Path) -> dict[str, float]:
    """id -> Vina score (kcal/mol) from a score file, and NaN for the ids of its ``.failures.csv``."""
    out: dict[str, float] = {}
    failures = path.with_name(path.stem + ".failures.csv")
    if not path.is_file():
        raise UserError(f"{path}: score file not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"id", "score_kcal_mol"} <= set(reader.fieldnames or []):
            raise UserError(f"{path}: needs the columns id and score_kcal_mol")
        for line, row in enumerate(reader, start=2):
            try:
                out[row["id"]] = float(row["score_kcal_mol"])
            except (TypeError, ValueError):
                raise UserError(
                    f"{path}, line {line}: score_kcal_mol {row['score_kcal_mol']!r} is not a number"
                ) from None
    if failures.is_file():
        with open(failures, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                out.setdefault(row["id"], float("nan"))
    return out


def evaluate(
    smiles: list[str],
    labels: np.ndarray,
    vina: np.ndarray,
    *,
    extra: dict[str, np.ndarray] | None = None,
    surrogate: bool = True,
    replicates: int = 5,
    resamples: int = 1000,
    seed: int = 0,
    epochs: int = 60,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every metric for every score, and the campaign view; with the score arrays (higher first) it used."""
    from .stages.enrichment import METRICS, max_enrichment_factor, score_table
    from .stages.retrospective import crossfit_predictions, heavy_atoms, ligand_efficiency

    n_heavy = heavy_atoms(smiles)
    ranked: dict[str, np.ndarray] = {
        "vina": -vina,
        "ligand_efficiency": ligand_efficiency(vina, n_heavy),
        "heavy_atoms": n_heavy,
    }
    view: dict[str, Any] | None = None
    if surrogate:
        ranked["surrogate"] = -crossfit_predictions(smiles, vina, epochs=epochs, seed=seed)
        view, ranked["campaign_rank"] = campaign_view(
            smiles, labels, vina, replicates=replicates, seed=seed, epochs=epochs
        )
    ranked.update(extra or {})
    table = score_table(labels, ranked, resamples=resamples, seed=seed)
    n, n_act = len(labels), int(labels.sum())
    default = table["vina"]
    out: dict[str, Any] = {"default_score": "vina"}
    for metric in METRICS:
        out[metric], out[f"{metric}_ci"] = default[metric], default[f"{metric}_ci"]
    out.update(
        {
            "n_actives": n_act,
            "n_decoys": n - n_act,
            "ef1_max": max_enrichment_factor(n_act, n, 0.01),
            "ef5_max": max_enrichment_factor(n_act, n, 0.05),
            "random": {"roc_auc": 0.5, "ef1": 1.0, "ef5": 1.0},
            "scores": table,
            "score_notes": {k: SCORE_NOTES.get(k, "") for k in table},
            "campaign_view": view,
            "interval": f"95% stratified percentile bootstrap over compounds ({resamples} resamples, seed {seed})",
        }
    )
    return out, ranked


def campaign_view(
    smiles: list[str], labels: np.ndarray, vina: np.ndarray, *, replicates: int, seed: int, epochs: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Actives in the final top 1% after docking each budget (active learning, random) vs docking everything."""
    from .stages.enrichment import enrichment_metrics
    from .stages.retrospective import campaign_replay

    n, n_act = len(labels), int(labels.sum())
    n_top = max(1, int(round(0.01 * n)))
    hits = lambda ranking: enrichment_metrics(labels, ranking)["top1pct_recall"] * n_act  # noqa: E731
    runs = campaign_replay(smiles, vina, BUDGETS, replicates=replicates, seed=seed, epochs=epochs)
    view: dict[str, Any] = {
        "top_n": n_top,
        "replicates": replicates,
        "dock_everything": hits(-vina),
        "random_expectation": n_top * n_act / n,
        "budgets": {},
    }
    for b, reps in runs.items():
        view["budgets"][f"{b:g}"] = {
            strategy: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "values": v}
            for strategy, v in (
                ("active_learning", [hits(r["active"]) for r in reps]),
                ("random_docking", [hits(r["random"]) for r in reps]),
            )
        }
    return view, runs[REPLAY_BUDGET][0]["active"]


def _campaign_scores(run_dir: Path, ids: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Vina (NaN where the campaign did not dock), surrogate, MM/GBSA and final rank from a campaign run."""
    from .results import ranked_hits
    from .store import Store

    try:
        store = Store.open_existing(run_dir, readonly=True)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    try:
        dock, md = store.dock_score_map(), store.md_results()
        predicted = store.first_predictions(ids)
        rank = {h.id: h.rank for h in ranked_hits(store)}
    finally:
        store.close()
    nan = float("nan")
    vina = np.array([dock.get(i, nan) for i in ids])
    pred = np.array([predicted.get(i, nan) for i in ids])
    final = np.array(
        [-rank[i] if i in rank else -1e9 - (pred[k] if np.isfinite(pred[k]) else 1e3) for k, i in enumerate(ids)]
    )
    mmgbsa = np.array([-(md[i][0]) if i in md and md[i][0] is not None else nan for i in ids])
    extra = {"surrogate": -pred, "campaign_final_rank": final}
    if np.isfinite(mmgbsa).any():
        extra["mmgbsa"] = mmgbsa
    return vina, extra


# ---------------------------------------------------------------- command line
def register(sub: Any) -> None:
    """``impeccable benchmark`` and ``impeccable decoys``."""
    from .stages.dock import DEFAULT_DOCK_SEED

    p = sub.add_parser(
        "benchmark",
        help="retrospective enrichment: known actives vs decoys (ROC-AUC, EF, BEDROC)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--actives", type=Path, required=True, help="actives (.smi: SMILES id per line, or id,smiles CSV)")
    p.add_argument("--decoys", type=Path, required=True, help="decoys or confirmed inactives (same formats)")
    p.add_argument("--receptor", type=Path, default=Path("data/receptors/4jsv"), help="receptor folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scores", type=Path, help="docked score file (skips docking)")
    src.add_argument("--run-dir", type=Path, help="a campaign run over the set")
    p.add_argument("--out-dir", type=Path, default=Path("runs/benchmark"), help="where docking goes (resumable)")
    p.add_argument("--cores", type=int, default=2, help="pilot cores for docking")
    p.add_argument("--exhaustiveness", type=int, default=1, help="Vina exhaustiveness for docking")
    p.add_argument("--vina-seed", type=int, default=DEFAULT_DOCK_SEED)
    p.add_argument("--json", type=Path, required=True, help="write the result here")
    p.add_argument("--html", type=Path, help="the HTML page (default: beside --json)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--replicates", type=int, default=5, help="campaign replays per budget")
    p.add_argument("--no-surrogate", action="store_true", help="skip the surrogate and the campaign replay")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap, folds and replays")
    p.set_defaults(handler=_benchmark)

    p = sub.add_parser("decoys", help="DUD-E-style property-matched decoys for a set of actives")
    p.add_argument("--actives", type=Path, required=True)
    p.add_argument("--pool", type=Path, default=Path("data/library/moses_20k.csv"), help="compounds to draw from")
    p.add_argument("--per-active", type=int, default=50)
    p.add_argument("--out", type=Path, required=True, help="decoys .smi")
    p.set_defaults(handler=_decoys)


def _decoys(args: argparse.Namespace) -> int:
    from .stages.decoys import main

    return main(
        [
            "--actives",
            str(args.actives),
            "--pool",
            str(args.pool),
            "--per-active",
            str(args.per_active),
            "--out",
            str(args.out),
        ]
    )


def _benchmark(args: argparse.Namespace) -> int:
    from .benchreport import print_summary, write_page
    from .fileio import write_json
    from .stages.validate import _finite  # JSON has no NaN: null instead

    t0 = time.perf_counter()
    records, labels = read_set(args.actives, args.decoys)
    ids = [r.id for r in records]
    extra: dict[str, np.ndarray] = {}
    source: dict[str, Any] = {"actives": str(args.actives), "decoys": str(args.decoys), "receptor": str(args.receptor)}
    if args.run_dir is not None:
        vina, extra = _campaign_scores(args.run_dir, ids)
        source["run_dir"] = str(args.run_dir)
        keep = np.ones(len(ids), bool)
    else:
        path = args.scores or _dock(args, records, labels)
        scores = read_score_file(path)
        source["scores"] = str(path)
        keep = np.array([i in scores for i in ids])
        vina = np.array([scores.get(i, np.nan) for i in ids])
    if not keep[labels].any() or not keep[~labels].any():
        raise UserError(f"no scored actives or no scored decoys among {args.actives} and {args.decoys}")
    sel = np.flatnonzero(keep)
    result, ranked = evaluate(
        [records[i].smiles for i in sel],
        labels[sel],
        vina[sel],
        extra={k: v[sel] for k, v in extra.items()},
        surrogate=not args.no_surrogate,
        replicates=args.replicates,
        resamples=args.resamples,
        seed=args.seed,
    )
    result.update(
        source=source,
        n_actives_in_file=int(labels.sum()),
        n_decoys_in_file=int((~labels).sum()),
        n_failed_docking={
            "actives": int(np.isnan(vina[sel][labels[sel]]).sum()),
            "decoys": int(np.isnan(vina[sel][~labels[sel]]).sum()),
        },
        seconds=round(time.perf_counter() - t0, 1),
    )
    write_json(args.json, _finite(result))
    html = write_page(result, labels[sel], ranked, args.html or args.json.with_suffix(".html"))
    print_summary(result)
    print(f"wrote {args.json} and {html} in {result['seconds']:.0f} s")
    return 0


def _dock(args: argparse.Namespace, records: list[Any], labels: np.ndarray) -> Path:
    from .benchdock import dock_set

    if not (args.receptor / "receptor.pdbqt").is_file():
        raise UserError(f"{args.receptor}: receptor folder with receptor.pdbqt not found")
    path, failed = dock_set(
        records,
        {r.id: bool(y) for r, y in zip(records, labels)},
        args.receptor,
        args.out_dir,
        cores=args.cores,
        exhaustiveness=args.exhaustiveness,
        seed=args.vina_seed,
    )
    if failed:
        raise UserError(
            f"{failed} compounds are in docking tasks that failed (see {args.out_dir}/tasks/*/stderr.log); "
            "run the same command to retry them"
        )
    return path
