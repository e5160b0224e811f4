"""The benchmark's HTML page (ROC and enrichment curves, the metric table, the campaign view) and its console table."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from .htmlparts import img, table

__all__ = ["write_page", "print_summary", "roc_curve", "enrichment_curve"]

COLUMNS = (
    ("roc_auc", "ROC-AUC"),
    ("ef1", "EF1%"),
    ("ef5", "EF5%"),
    ("bedroc", "BEDROC(20)"),
    ("top1pct_recall", "actives in top 1%"),
)


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every threshold, higher score first, NaN last."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-s, kind="stable")
    y = labels[order]
    return np.r_[0, np.cumsum(~y) / max(1, (~y).sum())], np.r_[0, np.cumsum(y) / max(1, y.sum())]


def enrichment_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of the set screened, fraction of the actives found), best first."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    y = labels[np.argsort(-s, kind="stable")]
    return np.arange(1, len(y) + 1) / len(y), np.cumsum(y) / max(1, y.sum())


def _figures(labels: np.ndarray, ranked: dict[str, np.ndarray], table_: dict[str, Any]) -> bytes:
    from .plots import _png, plt

    fig, (roc, enr) = plt.subplots(1, 2, figsize=(11, 4.6))
    for name, scores in ranked.items():
        fpr, tpr = roc_curve(labels, scores)
        roc.plot(fpr, tpr, label=f"{name} (AUC {table_[name]['roc_auc']:.2f})", lw=1.4)
        x, found = enrichment_curve(labels, scores)
        enr.plot(x * 100, found * 100, label=name, lw=1.4)
    roc.plot([0, 1], [0, 1], "k--", lw=0.8, label="random")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    enr.plot([0.1, 100], [0.1, 100], "k--", lw=0.8, label="random")
    enr.set(
        xscale="log",
        xlim=(0.1, 100),
        ylim=(0, 100),
        xlabel="% of the set screened (log)",
        ylabel="% of actives found",
        title="enrichment",
    )
    roc.legend(fontsize=7, loc="lower right")
    enr.legend(fontsize=7, loc="upper left")
    return _png(fig)


def _cell(row: dict[str, Any], key: str) -> str:
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None:
        return ""
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"


def write_page(result: dict[str, Any], labels: np.ndarray, ranked: dict[str, np.ndarray], out: Path) -> Path:
    """One self-contained HTML file (plots inlined)."""
    src = result["source"]
    rows = [
        [
            html.escape(name),
            *[_cell(row, k) for k, _ in COLUMNS],
            row["n_scored"],
            html.escape(result["score_notes"].get(name, "")),
        ]
        for name, row in result["scores"].items()
    ]
    parts = [
        f"<h1>Benchmark: {html.escape(Path(src['actives']).name)} vs {html.escape(Path(src['decoys']).name)}</h1>",
        f"<p>{result['n_actives']} actives and {result['n_decoys']} decoys evaluated (of {result['n_actives_in_file']} "
        f"and {result['n_decoys_in_file']} in the files); failed to dock (ranked last): "
        f"{result['n_failed_docking']['actives']} actives, {result['n_failed_docking']['decoys']} decoys. "
        f"Scores: {html.escape(src.get('scores') or src.get('run_dir') or '')}; receptor "
        f"{html.escape(src['receptor'])}.</p>",
        f"<p>Random ranking: ROC-AUC 0.5, EF 1. The best this set allows: EF1% {result['ef1_max']:.1f}, "
        f"EF5% {result['ef5_max']:.1f}. Intervals: {html.escape(result['interval'])}.</p>",
        table(["score", *[label for _, label in COLUMNS], "n scored", "what"], rows, left=1),
        img(_figures(labels, ranked, result["scores"]), "ROC and enrichment curves"),
    ]
    view = result.get("campaign_view")
    if view:
        vrows = [
            [
                f"{float(b) * 100:g}%",
                f"{v['active_learning']['mean']:.1f} ({v['active_learning']['min']:.0f}-"
                f"{v['active_learning']['max']:.0f})",
                f"{v['random_docking']['mean']:.1f} "
                f"({v['random_docking']['min']:.0f}-{v['random_docking']['max']:.0f})",
            ]
            for b, v in view["budgets"].items()
        ]
        parts += [
            f"<h2>Campaign view</h2><p>Actives among the final top {view['top_n']} (1% of the set) after "
            f"docking a budget, mean (range) over {view['replicates']} replays. Docking everything: "
            f"{view['dock_everything']:.1f}; a random pick of {view['top_n']}: "
            f"{view['random_expectation']:.2f}.</p>",
            table(["docked", "active learning", "random docking"], vrows, left=1),
        ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>benchmark</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td.l,th.l{text-align:left}"
        "img{max-width:100%}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"{result['n_actives']} actives, {result['n_decoys']} decoys (EF1% max "
        f"{result['ef1_max']:.1f}); 95% bootstrap intervals"
    )
    t.add_column("score")
    for _, label in COLUMNS:
        t.add_column(label, justify="right")
    for name, row in result["scores"].items():
        t.add_row(name, *[_cell(row, k) for k, _ in COLUMNS])
    Console().print(t)
