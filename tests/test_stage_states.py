"""Ligand microstates: the dominant state first, minor ones with their penalty, the drug panel, the supplements."""

from __future__ import annotations

import pytest
from rdkit import Chem

from impeccable.stages.ligands import StateOptions, prepare_states, scored_states
from impeccable.stages.protonation import KCAL_PER_PH_UNIT, RULES, microstates
from impeccable.stages.state_panel import run_state_panel, same_state


@pytest.mark.slow  # 25 drugs through the state enumeration (12 s)
def test_drug_panel_puts_the_literature_dominant_state_first():
    result = run_state_panel()
    assert result["size"] == 25
    failures = ", ".join(f"{f['name']} (got {f['top_state']})" for f in result["failures"])
    assert result["correct"] >= 23, f"{result['correct']}/25 correct; wrong: {failures}"


@pytest.mark.parametrize(
    ("name", "smiles", "dominant"),
    [
        ("metformin", "CN(C)C(=N)NC(=N)N", +1),  # biguanide: one proton, not two (pKasso alone: +2)
        ("5-fluorouracil", "O=c1[nH]cc(F)c(=O)[nH]1", 0),  # pKa 8.0: neutral (pKasso alone: N1 anion)
        ("dalfampridine", "Nc1ccncc1", +1),  # 4-aminopyridine 9.2 (pKasso alone: neutral)
        ("cimetidine", "CN=C(NCCSCc1[nH]cnc1C)NC#N", 0),  # cyanoguanidine is not basic (pKasso alone: +1)
    ],
)
def test_each_supplement_fixes_its_measured_case(name, smiles, dominant):
    states = microstates(Chem.CanonSmiles(smiles))
    assert Chem.GetFormalCharge(Chem.MolFromSmiles(states[0].smiles)) == dominant, (name, states)
    assert states[0].penalty_kcal_mol == 0 and states[0].source == "pkasso+rules"


def test_rules_are_valid_smarts_with_a_source():
    for rule in RULES:
        assert Chem.MolFromSmarts(rule.smarts) is not None and rule.source and rule.charge in (-1, 1, 2)


def test_minor_state_carries_its_penalty_and_the_window_limits_them():
    states = scored_states("CCN(CC)CC(=O)Nc1c(C)cccc1C")  # lidocaine, pKa 7.9: cation first, base 0.3-0.7 above
    assert [Chem.GetFormalCharge(Chem.MolFromSmiles(s)) for s, _ in states] == [1, 0]
    assert states[0][1] == 0 and 0 < states[1][1] < 1.5 * KCAL_PER_PH_UNIT
    assert len(scored_states("CCN(CC)CC(=O)Nc1c(C)cccc1C", StateOptions(max_protomers=1))) == 1
    amine = scored_states("CCCCN", StateOptions(window_ph=1.0))  # pKa ~10.6: the neutral amine is outside 1 unit
    assert amine == [("CCCC[NH3+]", 0.0)]


def test_morphine_docks_the_phenol_not_the_phenolate_first():
    states = scored_states("CN1CC[C@]23c4c5ccc(O)c4O[C@H]2[C@@H](O)C=C[C@H]3[C@H]1C5")
    assert "[O-]" not in states[0][0] and "[NH+]" in states[0][0]


def test_states_keep_the_stereo_asked_for():
    states = scored_states("CC(C)[C@H](NC(=O)C)C(=O)O")  # pKasso writes no stereo: copied back onto the state
    assert states[0][0] == "CC(=O)N[C@H](C(=O)[O-])C(C)C"
    assert same_state(states[0][0], "CC(=O)N[C@H](C(=O)[O-])C(C)C")
    assert not same_state(states[0][0], "CC(=O)N[C@@H](C(=O)[O-])C(C)C")


def test_prepared_states_carry_penalties():
    prepared = prepare_states("lido", "CCN(CC)CC(=O)Nc1c(C)cccc1C")
    assert [round(p.penalty_kcal_mol, 3) for p in prepared] == [
        round(p, 3) for _, p in scored_states("CCN(CC)CC(=O)Nc1c(C)cccc1C")
    ]
