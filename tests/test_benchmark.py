"""``impeccable benchmark`` from a score file: every metric with its interval, the page, clear errors."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from impeccable.cli import main
from impeccable.stages.library import read_library

LIBRARY = Path(__file__).resolve().parents[1] / "data" / "library" / "moses_20k.csv"


def write_set(tmp_path: Path, n_act: int = 12, n_dec: int = 120, shift: float = 1.5):
    """Actives and decoys from the shipped library, with Vina-like scores: actives better by ``shift`` kcal/mol."""
    records = list(itertools.islice(read_library(LIBRARY), n_act + n_dec))
    rng = np.random.default_rng(0)
    actives, decoys = tmp_path / "actives.smi", tmp_path / "decoys.smi"
    actives.write_text("".join(f"{r.smiles} A{r.id}\n" for r in records[:n_act]))
    decoys.write_text("".join(f"{r.smiles} {r.id}\n" for r in records[n_act:]))
    scores = tmp_path / "scores.csv"
    with open(scores, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "smiles", "score_kcal_mol"])
        for i, r in enumerate(records[1:], start=1):  # the first active failed to dock: see the failures file
            w.writerow([f"A{r.id}" if i < n_act else r.id, r.smiles,
                        f"{rng.normal(-7.0, 1.0) - (shift if i < n_act else 0):.3f}"])
    (tmp_path / "scores.failures.csv").write_text(f"id,smiles,reason\nA{records[0].id},{records[0].smiles},test\n")
    return actives, decoys, scores


def test_benchmark_from_scores_writes_every_metric_with_intervals(tmp_path, capsys):
    actives, decoys, scores = write_set(tmp_path)
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--actives", str(actives), "--decoys", str(decoys), "--scores", str(scores),
                 "--json", str(out), "--no-surrogate", "--resamples", "200"]) == 0
    result = json.loads(out.read_text())
    for key in ("roc_auc", "ef1", "bedroc", "ef5", "top1pct_recall"):
        assert isinstance(result[key], float)
        lo, hi = result[f"{key}_ci"]
        assert lo <= result[key] <= hi
    assert result["default_score"] == "vina" and result["n_actives"] == 12 and result["n_decoys"] == 120
    assert result["n_failed_docking"] == {"actives": 1, "decoys": 0}
    assert result["roc_auc"] > 0.75  # actives shifted by 1.5 standard deviations
    assert set(result["scores"]) == {"vina", "ligand_efficiency", "heavy_atoms"}
    assert result["ef1_max"] == pytest.approx(132 / 12)  # 1% of 132 is 1 compound
    page = (tmp_path / "bench.html").read_text()
    assert "<img" in page and "ROC-AUC" in page
    assert "vina" in capsys.readouterr().out


def test_an_id_in_both_files_is_refused(tmp_path, capsys):
    actives, decoys, scores = write_set(tmp_path)
    decoys.write_text(decoys.read_text() + actives.read_text().splitlines()[0] + "\n")
    assert main(["benchmark", "--actives", str(actives), "--decoys", str(decoys), "--scores", str(scores),
                 "--json", str(tmp_path / "b.json"), "--no-surrogate"]) == 2
    assert "in both" in capsys.readouterr().err


@pytest.mark.slow
def test_surrogate_and_campaign_view(tmp_path):
    actives, decoys, scores = write_set(tmp_path, n_act=20, n_dec=380)
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--actives", str(actives), "--decoys", str(decoys), "--scores", str(scores),
                 "--json", str(out), "--resamples", "100", "--replicates", "2"]) == 0
    result = json.loads(out.read_text())
    assert {"surrogate", "campaign_rank"} <= set(result["scores"])
    view = result["campaign_view"]
    assert view["top_n"] == 4 and set(view["budgets"]) == {"0.05", "0.1", "0.2"}
    assert len(view["budgets"]["0.1"]["active_learning"]["values"]) == 2
