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
            w.writerow(
                [
                    f"A{r.id}" if i < n_act else r.id,
                    r.smiles,
                    f"{rng.normal(-7.0, 1.0) - (shift if i < n_act else 0):.3f}",
                ]
            )
    (tmp_path / "scores.failures.csv").write_text(f"id,smiles,reason\nA{records[0].id},{records[0].smiles},test\n")
    return actives, decoys, scores


def benchmark(actives, decoys, scores, out, *extra: str) -> int:
    """``impeccable benchmark`` on a score file, without the surrogate unless ``extra`` says otherwise."""
    args = ["--actives", str(actives), "--decoys", str(decoys), "--scores", str(scores), "--json", str(out)]
    return main(["benchmark", *args, *extra])


def test_benchmark_from_scores_writes_every_metric_with_intervals(tmp_path, capsys):
    actives, decoys, scores = write_set(tmp_path)
    out = tmp_path / "bench.json"
    assert benchmark(actives, decoys, scores, out, "--no-surrogate", "--resamples", "200") == 0
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
    assert benchmark(actives, decoys, scores, tmp_path / "b.json", "--no-surrogate") == 2
    assert "in both" in capsys.readouterr().err


@pytest.mark.slow
def test_surrogate_and_campaign_view(tmp_path):
    actives, decoys, scores = write_set(tmp_path, n_act=20, n_dec=380)
    out = tmp_path / "bench.json"
    assert benchmark(actives, decoys, scores, out, "--resamples", "100", "--replicates", "2") == 0
    result = json.loads(out.read_text())
    assert {"surrogate", "campaign_rank"} <= set(result["scores"])
    view = result["campaign_view"]
    assert view["top_n"] == 4 and set(view["budgets"]) == {"0.05", "0.1", "0.2"}
    assert len(view["budgets"]["0.1"]["active_learning"]["values"]) == 2


@pytest.mark.slow
def test_docking_through_the_pilot_is_resumable(tmp_path):
    """No score file: the set is docked in pilot tasks; a second run docks nothing and gives the same numbers."""
    actives, decoys, _ = write_set(tmp_path, n_act=2, n_dec=6)
    args = [
        "benchmark",
        "--actives",
        str(actives),
        "--decoys",
        str(decoys),
        "--receptor",
        str(Path(__file__).resolve().parents[1] / "data" / "receptors" / "4jsv"),
        "--out-dir",
        str(tmp_path / "d"),
        "--no-surrogate",
        "--resamples",
        "50",
        "--cores",
        "2",
    ]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "d" / "scores.csv")))
    assert len(rows) + first["n_failed_docking"]["actives"] + first["n_failed_docking"]["decoys"] == 8
    assert {r["set"] for r in rows} <= {"active", "decoy"} and all(float(r["score_kcal_mol"]) < 0 for r in rows)
    stamp = (tmp_path / "d" / "tasks" / "dock-00000" / "out" / "dock.rank0.jsonl").stat().st_mtime
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "d" / "tasks" / "dock-00000" / "out" / "dock.rank0.jsonl").stat().st_mtime == stamp
    assert json.loads((tmp_path / "b.json").read_text())["roc_auc"] == first["roc_auc"]


def test_benchmark_over_a_campaign_run_uses_its_scores_and_ranking(tmp_path):
    from test_store_report import make_run

    make_run(tmp_path).close()  # Vina a -5, b -6, c -7, d -8; MM/GBSA on c; a prediction for a
    (tmp_path / "act.smi").write_text("CCN d\nCC(=O)Nc1ccccc1 c\n")
    (tmp_path / "dec.smi").write_text("CCO a\nc1ccccc1O b\nCCCC e\n")  # e: never docked by the campaign
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "benchmark",
                "--actives",
                str(tmp_path / "act.smi"),
                "--decoys",
                str(tmp_path / "dec.smi"),
                "--run-dir",
                str(tmp_path),
                "--json",
                str(out),
                "--no-surrogate",
                "--resamples",
                "50",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["roc_auc"] == 1.0  # both actives have the best Vina scores
    assert {"vina", "surrogate", "campaign_final_rank", "mmgbsa"} <= set(result["scores"])
    assert result["scores"]["mmgbsa"]["n_scored"] == 1 and result["n_failed_docking"]["decoys"] == 1
