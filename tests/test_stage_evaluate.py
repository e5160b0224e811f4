"""Surrogate evaluation: folds never leak into early stopping, baselines share the folds, retrieval bookkeeping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from impeccable.stages import evaluate, validate
from impeccable.stages.errors import StageInputError
from impeccable.stages.evaluate import (
    ReferenceSet,
    RetrievalSettings,
    bootstrap_mean_ci,
    cross_validate,
    read_reference,
    retrieval_runs,
)

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "data" / "library" / "moses_20k.csv"


def _synthetic(n: int) -> ReferenceSet:
    """Real MOSES molecules with a score a fingerprint model can learn: minus the heavy-atom count."""
    with open(LIBRARY, newline="") as fh:
        rows = [r for _, r in zip(range(n), csv.DictReader(fh))]
    smiles = [r["smiles"] for r in rows]
    y = -evaluate.descriptors(smiles)[:, 0] + np.random.default_rng(0).normal(0, 0.3, n)
    return ReferenceSet([r["id"] for r in rows], smiles, y, "synthetic")


def test_read_reference_names_file_line_and_column(tmp_path):
    bad = tmp_path / "scores.csv"
    bad.write_text("id,smiles\na,CCO\n")
    with pytest.raises(StageInputError, match="scores.csv: missing column.*score_kcal_mol"):
        read_reference(bad)
    bad.write_text("id,smiles,score_kcal_mol\n" + "".join(f"m{i},CCO,-5\n" for i in range(30)) + "x,CCO,strong\n")
    with pytest.raises(StageInputError, match=r"scores.csv, line 32: score_kcal_mol 'strong'"):
        read_reference(bad)
    assert len(read_reference(bad, limit=25)) == 25  # a prefix stops before the bad row


def test_cv_fits_on_training_folds_only_and_scores_baselines_in_the_same_folds(monkeypatch):
    ref = _synthetic(80)
    seen: list[int] = []
    real_fit = evaluate.fit

    def spy(x, y, **kw):
        seen.append(len(y))
        return real_fit(x, y, **kw)

    monkeypatch.setattr(evaluate, "fit", spy)
    out = cross_validate(ref, folds=4, epochs=3)
    assert seen == [60, 60, 60, 60]  # early stopping splits these 60 (training folds), never the 20 test rows
    assert len(out["per_fold"]["baseline"]["spearman"]) == 4 and "spearman" not in out["per_fold"]["mean"]
    assert out["baseline_spearman_mean"] > 0.8  # the baseline knows heavy atoms: the synthetic score
    assert out["baseline_rmse_mean"] < out["mean_rmse_mean"]


@pytest.mark.slow
def test_retrieval_hits_every_budget_and_one_shot_shares_the_seed():
    ref = _synthetic(400)  # budgets 8/20/40 compounds, seed sample 8: the smallest budget must exceed it
    with pytest.raises(StageInputError, match="not above the seed sample"):
        retrieval_runs(ref, [0], RetrievalSettings(epochs=2))
    runs = retrieval_runs(ref, [0, 1], RetrievalSettings(epochs=3, budgets=(0.05, 0.10), init_fraction=0.02))
    for strategy in ("active", "oneshot", "random"):
        assert all(len(v) == 2 and all(0.0 <= r <= 1.0 for r in v) for v in runs[strategy].values())
    assert np.mean(runs["active"][0.10]) >= np.mean(runs["random"][0.10])


def test_bootstrap_interval_brackets_the_mean():
    low, high = bootstrap_mean_ci([0.5, 0.6, 0.7, 0.8])
    assert low <= 0.65 <= high and low >= 0.5 and high <= 0.8
    assert bootstrap_mean_ci([0.4]) == (0.4, 0.4)


def test_validate_rejects_bad_inputs_with_one_line(tmp_path, capsys):
    code = validate.main(["--json", str(tmp_path / "v.json"), "--scores", str(tmp_path / "missing.csv")])
    assert code == 2 and "missing.csv: scores file not found" in capsys.readouterr().err
    assert validate._finite({"a": float("nan"), 1: [float("inf"), 2.0]}) == {"a": None, "1": [None, 2.0]}
    json.dumps(validate._finite({"x": float("nan")}), allow_nan=False)


@pytest.mark.slow
def test_validate_writes_every_headline_number(tmp_path):
    """End to end on shipped data, shrunk to a minute: the keys the issue names, finite where they must be."""
    out = tmp_path / "v.json"
    code = validate.main(
        [
            "--json",
            str(out),
            "--scores",
            str(REPO / "data" / "scores" / "4jsv_vina_sample.csv"),
            "--limit",
            "500",
            "--redock-seeds",
            "1",
            "--exhaustiveness",
            "1",
            "--folds",
            "2",
            "--replicates",
            "2",
            "--epochs",
            "3",
            "--no-second-receptor",
            "--pose-exhaustiveness",
            "1",
        ]
    )  # the panel's 8 complexes once, at the cheapest setting
    assert code == 0
    data = json.loads(out.read_text())
    for key in validate.MEASURED:
        assert isinstance(data[key], float), key
    assert data["reference_set_size"] == 500 and data["redock_second_complex"] is None
    assert 0 < data["redock_rmsd_angstrom_median"] < 20 and -1 <= data["surrogate_cv_spearman"] <= 1
    assert data["pose_panel_size"] == 8 and "1" in data["pose_panel"]["by_exhaustiveness"]


def test_validate_uses_the_states_set_only_once_it_is_large_enough(tmp_path, monkeypatch):
    small = tmp_path / "states.csv"
    small.write_text("id,smiles,score_kcal_mol\n" + "".join(f"m{i},CCO,-5\n" for i in range(100)))
    monkeypatch.setattr(validate, "DEFAULT_SCORES", small)
    path, why = validate.default_scores()
    assert path == validate.FALLBACK_SCORES and "100 compounds, fewer than the 450" in why
    small.write_text("id,smiles,score_kcal_mol\n" + "".join(f"m{i},CCO,-5\n" for i in range(450)))
    assert validate.default_scores()[0] == small
