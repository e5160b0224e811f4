"""Seed sample strategies: reproducible, the asked size, diverse spreads over chemical space, stratified over size."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from impeccable.stages.library import read_library
from impeccable.stages.seedsample import pick_indices, seed_sample

MOSES = Path(__file__).resolve().parents[1] / "data" / "library" / "moses_20k.csv"


@pytest.fixture(scope="module")
def records():
    return list(itertools.islice(read_library(MOSES), 600))


def _mean_similarity(smiles: list[str]) -> float:
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]
    return float(np.mean([DataStructs.TanimotoSimilarity(a, b) for a, b in itertools.combinations(fps, 2)]))


@pytest.mark.parametrize("strategy", ["random", "diverse", "stratified"])
def test_each_strategy_is_reproducible_and_the_asked_size(records, strategy):
    first = seed_sample(iter(records), 24, seed=3, strategy=strategy)
    assert first == seed_sample(iter(records), 24, seed=3, strategy=strategy) and len(first) == 24
    assert len({r.id for r in first}) == 24
    assert [r.id for r in first] == [r.id for r in records if r in first]  # in library order


def test_diverse_is_more_spread_and_stratified_covers_sizes(records):
    from rdkit import Chem

    smiles = [r.smiles for r in records]
    random_pick = pick_indices(smiles, 30, seed=1, strategy="random")
    diverse_pick = pick_indices(smiles, 30, seed=1, strategy="diverse")
    assert _mean_similarity([smiles[i] for i in diverse_pick]) < _mean_similarity([smiles[i] for i in random_pick])
    sizes = np.array([Chem.MolFromSmiles(s).GetNumHeavyAtoms() for s in smiles])
    strat = sizes[pick_indices(smiles, 32, seed=1, strategy="stratified")]
    rand = sizes[random_pick]
    assert strat.std() > rand.std()  # equal shares per size bin: the extremes are seen
    with pytest.raises(ValueError, match="seed strategy 'best'"):
        pick_indices(smiles, 3, seed=1, strategy="best")


def test_the_seeds_command_parses_its_options(tmp_path, capsys):
    from impeccable.stages.evaluate import main

    assert main(["seeds", "--scores", str(tmp_path / "none.csv"), "--replicates", "2", "--strategy", "diverse"]) == 2
    assert "scores file not found" in capsys.readouterr().err
