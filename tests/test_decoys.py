"""DUD-E-style decoys: matched properties, equal charge, dissimilar to every active, never reused."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from impeccable.stages.decoys import PROPERTIES, _window, make_decoys, properties
from impeccable.stages.library import LibraryRecord, read_library

LIBRARY = Path(__file__).resolve().parents[1] / "data" / "library" / "moses_20k.csv"
ACTIVES = [
    LibraryRecord("amine", "CCN1CCN(c2ccc(NC(=O)c3ccccc3Cl)cc2)CC1"),  # basic: +1 at pH 7.4
    LibraryRecord("acid", "OC(=O)c1ccc(NC(=O)c2ccc(F)cc2)cc1"),  # carboxylic acid: -1
]


# MOSES compounds that match the actives (found by make_decoys over the first 800 rows and, for the amine, over
# the library's aliphatic amines), placed among the first rows so that each search stops early: net charge is
# ~0.3 s per compound, and a search that cannot fill its quota charges every compound in every window.
MATCHES = {
    "MOSES-0003686",
    "MOSES-0300260",
    "MOSES-0294988",
    "MOSES-0300259",  # +1, like the amine
    "MOSES-0062378",
    "MOSES-0025711",
    "MOSES-0019152",
}  # -1, like the acid


@pytest.fixture(scope="module")
def decoys():
    rows = list(read_library(LIBRARY))
    pool = rows[:60] + [r for r in rows if r.id in MATCHES]
    pool.append(LibraryRecord("analogue", "CCN1CCN(c2ccc(NC(=O)c3ccccc3Br)cc2)CC1"))  # too similar to an active
    return make_decoys(ACTIVES, pool, per_active=3)


def test_net_charge_is_computed_only_until_the_quota_is_filled(monkeypatch):
    from impeccable.stages import decoys as module

    calls = []
    monkeypatch.setattr(module, "net_charge", lambda mol: calls.append(mol) or 0)
    neutral = LibraryRecord("neutral", "CC(C)Cc1ccc(cc1)C(C)C(=O)N")
    pool = list(itertools.islice(read_library(LIBRARY), 200))
    chosen = make_decoys([neutral], pool, per_active=3)
    assert len(chosen.decoys["neutral"]) == 3
    assert len(calls) == 4  # the active's own charge, then one per candidate visited: all three match


@pytest.mark.slow  # the decoy search over the library (net charges, 14 s)
def test_charges_match_and_properties_are_close(decoys):
    charge = PROPERTIES.index("net_charge")
    widest = _window(4)
    for active, chosen in decoys.decoys.items():
        target = np.array(decoys.active_properties[active])
        assert chosen, f"no decoy for {active}"
        for d in chosen:
            got = np.array(decoys.decoy_properties[d.id])
            assert got[charge] == target[charge]
            assert np.all(np.abs(got - target) <= widest + 1e-9)
    assert decoys.active_properties["amine"][charge] == 1 and decoys.active_properties["acid"][charge] == -1


@pytest.mark.slow  # the decoy search over the library (net charges, 14 s)
def test_decoys_are_dissimilar_and_unique(decoys):
    from rdkit import DataStructs

    ids = [d.id for ds in decoys.decoys.values() for d in ds]
    assert len(ids) == len(set(ids)) and "analogue" not in ids
    active_fps = [properties(a.smiles)[1] for a in ACTIVES]
    for ds in decoys.decoys.values():
        for d in ds:
            assert max(DataStructs.BulkTanimotoSimilarity(properties(d.smiles)[1], active_fps)) < 0.3
    assert decoys.max_tanimoto < 0.3
    summary = decoys.summary()
    assert summary["decoys"] == len(ids) and set(summary["median_abs_difference"]) == set(PROPERTIES)
