"""Enrichment metrics and intervals against cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from impeccable.stages.enrichment import bootstrap_metrics, enrichment_metrics, max_enrichment_factor, score_table
from impeccable.stages.intervals import clopper_pearson, t_interval


def ranking(n_act: int, n_dec: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores (higher first) with the actives on top, at the bottom, or everyone tied."""
    y = np.r_[np.ones(n_act, bool), np.zeros(n_dec, bool)]
    s = {"top": -np.arange(len(y), dtype=float), "bottom": np.arange(len(y), dtype=float), "tied": np.zeros(len(y))}[
        where
    ]
    return y, s


def test_perfect_ranking_reaches_every_ceiling():
    y, s = ranking(10, 990, "top")
    m = enrichment_metrics(y, s)
    assert m["roc_auc"] == 1.0
    assert m["ef1"] == pytest.approx(100.0)  # top 10 of 1000 all active: (10/10) / (10/1000)
    assert m["ef5"] == pytest.approx(20.0)  # top 50 hold all 10: (10/50) / (10/1000)
    assert m["ef1"] == pytest.approx(max_enrichment_factor(10, 1000, 0.01))
    assert m["top1pct_recall"] == 1.0
    assert m["bedroc"] == pytest.approx(1.0, abs=1e-3)


def test_inverted_ranking_is_zero():
    y, s = ranking(10, 990, "bottom")
    m = enrichment_metrics(y, s)
    assert m["roc_auc"] == 0.0 and m["ef1"] == 0.0 and m["ef5"] == 0.0 and m["top1pct_recall"] == 0.0
    assert m["bedroc"] == pytest.approx(0.0, abs=1e-3)


def test_all_tied_is_exactly_random():
    """Ties are broken at random and every metric is the expectation: AUC 0.5, EF 1."""
    y, s = ranking(10, 990, "tied")
    m = enrichment_metrics(y, s)
    assert m["roc_auc"] == 0.5
    assert m["ef1"] == pytest.approx(1.0) and m["ef5"] == pytest.approx(1.0)
    assert m["top1pct_recall"] == pytest.approx(0.01)


def test_random_scores_are_near_random_and_bedroc_matches_rdkit():
    from rdkit.ML.Scoring import Scoring

    rng = np.random.default_rng(3)
    y = rng.random(4000) < 0.05
    s = rng.random(4000)
    m = enrichment_metrics(y, s)
    assert abs(m["roc_auc"] - 0.5) < 0.05
    ranked = [[float(v), int(a)] for v, a in sorted(zip(s, y), key=lambda t: -t[0])]
    assert m["bedroc"] == pytest.approx(Scoring.CalcBEDROC(ranked, 1, 20.0), abs=1e-9)
    assert m["roc_auc"] == pytest.approx(Scoring.CalcAUC(ranked, 1), abs=1e-9)


def test_hand_computed_small_case():
    # ranking: A D A D D (A active, D decoy); n = 5, 2 actives, 3 decoys
    y = np.array([1, 0, 1, 0, 0], bool)
    s = np.array([5, 4, 3, 2, 1], float)
    m = enrichment_metrics(y, s)
    assert m["roc_auc"] == pytest.approx((3 + 2) / 6)  # first active beats 3 decoys, second beats 2
    assert m["ef1"] == pytest.approx((1 / 1) / (2 / 5))  # top 1 (round(0.05) -> at least 1) is an active


def test_missing_scores_rank_last():
    y = np.array([1, 1, 0, 0], bool)
    m = enrichment_metrics(y, np.array([np.nan, 1.0, 2.0, 3.0]))
    assert m["roc_auc"] == 0.0  # the unscored active is last, the scored one below both decoys


def test_max_enrichment_factor_at_1_to_20():
    assert max_enrichment_factor(97, 97 * 21, 0.01) == pytest.approx(21.0)
    assert max_enrichment_factor(97, 97 * 21, 0.05) == pytest.approx(97 / 102 * 21)


def test_bootstrap_interval_covers_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30, bool), np.zeros(600, bool)]
    s = rng.normal(size=630) + y  # actives shifted up by one standard deviation: AUC ~0.76
    m = enrichment_metrics(y, s)
    ci = bootstrap_metrics(y, s, resamples=300, seed=1)
    for key in ("roc_auc", "ef1", "bedroc"):
        assert ci[key][0] <= m[key] <= ci[key][1]
    assert 0.6 < ci["roc_auc"][0] < m["roc_auc"] < ci["roc_auc"][1] < 0.9
    assert ci == bootstrap_metrics(y, s, resamples=300, seed=1)
    table = score_table(y, {"shifted": s}, resamples=100)
    assert table["shifted"]["roc_auc_ci"][0] < table["shifted"]["roc_auc"] < table["shifted"]["roc_auc_ci"][1]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="actives and decoys"):
        enrichment_metrics([True, True], [1.0, 2.0])
    with pytest.raises(ValueError, match="one length"):
        enrichment_metrics([True, False], [1.0])


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))  # closed form for k = 0
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.1871, abs=1e-4) and hi == pytest.approx(0.8129, abs=1e-4)  # standard table


def test_t_interval_needs_three_values():
    assert t_interval([-25.7, -25.7]) is None
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 1
    assert mean == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
