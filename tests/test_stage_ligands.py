"""Ligand states (salts, stereoisomers, protomers), 3D coordinates, failures as values with id and reason."""

from __future__ import annotations

import re

import pytest
from rdkit import Chem
from rdkit.Chem import Descriptors

from impeccable.stages.filters import FilterRules, check
from impeccable.stages.ligands import (
    LigandFailure,
    PreparedLigand,
    StateOptions,
    enumerate_states,
    prepare_ligand,
    prepare_ligands,
    prepare_states,
    strip_salts,
)

IMATINIB = "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1"


@pytest.mark.parametrize(
    ("smiles", "charge"),
    [
        ("NCC(F)(F)F", 0),  # 2,2,2-trifluoroethylamine, pKa 5.7: neutral at 7.4
        ("Nc1ccncc1", +1),  # 4-aminopyridine, pKa 9.2: ring N protonated
        ("CC(=O)NS(=O)(=O)c1ccccc1", -1),  # acylsulfonamide, pKa ~4.5: deprotonated
        ("CC(=O)O", -1),  # carboxylic acid
        ("CCN", +1),  # aliphatic amine
        ("c1ccccc1N", 0),  # aniline stays neutral
        ("Nc1ccccn1", 0),  # 2-aminopyridine, pKa 6.9: mostly neutral
        ("C1CNCCN1", +1),  # piperazine: one proton, not two (second pKa 5.4)
        ("CC(=O)[O-].[Na+]", -1),  # salt stripped, then protonated like the acid
    ],
)
def test_dominant_protomer_at_ph74(smiles, charge):
    ligand = prepare_ligand("m", smiles)
    assert isinstance(ligand, PreparedLigand), ligand
    assert ligand.formal_charge == charge
    assert Chem.GetFormalCharge(Chem.MolFromSmiles(enumerate_states(smiles)[0])) == charge


def test_protonated_sites_are_the_right_atoms():
    assert enumerate_states("Nc1ccncc1", StateOptions(max_protomers=1)) == ["Nc1cc[nH+]cc1"]
    assert enumerate_states("CC(=O)NS(=O)(=O)c1ccccc1", StateOptions(max_protomers=1)) == [
        "CC(=O)[N-]S(=O)(=O)c1ccccc1"
    ]


def test_two_unassigned_centres_give_four_stereoisomers():
    states = enumerate_states("CC(O)C(N)CC(=O)O", StateOptions(max_protomers=1))
    assert len(states) == 4 == len(set(states))
    for state in states:
        mol = Chem.MolFromSmiles(state)
        centres = Chem.FindMolChiralCenters(mol, includeUnassigned=True, useLegacyImplementation=False)
        assert len(centres) == 2 and all(label in ("R", "S") for _, label in centres)
    assert {Chem.MolToSmiles(Chem.MolFromSmiles(s), isomericSmiles=False) for s in states} == {
        "CC(O)C([NH3+])CC(=O)[O-]"
    }


def test_stereo_cap_is_reproducible_and_assigned_stereo_is_kept():
    capped = enumerate_states("CC(O)C(N)C(C)CC", StateOptions(max_stereoisomers=3, max_protomers=1))
    assert len(capped) == 3
    assert capped == enumerate_states("CC(O)C(N)C(C)CC", StateOptions(max_stereoisomers=3, max_protomers=1))
    assert enumerate_states("C[C@H](O)CC", StateOptions(max_protomers=1)) == [Chem.CanonSmiles("C[C@H](O)CC")]
    # a phosphate's =O and -O- are not a stereocentre however RDKit's graph rules see it
    assert len(enumerate_states("CCOP(=O)(O)OCC(C)O", StateOptions(max_protomers=1))) == 2


def test_every_state_is_embedded_and_names_its_smiles():
    states = prepare_states("m", "CC(O)C(N)CC", StateOptions(max_protomers=1))
    assert [s.smiles for s in states] == enumerate_states("CC(O)C(N)CC", StateOptions(max_protomers=1))
    assert all(s.mol.GetConformer().Is3D() and s.formal_charge == 1 for s in states)


def test_a_salt_whose_counterion_fails_the_weight_filter_passes_after_stripping():
    salt = IMATINIB + ".CS(=O)(=O)O"  # imatinib mesylate: 589.7 g/mol with the acid, 493.6 without
    assert Descriptors.MolWt(Chem.MolFromSmiles(salt)) > 500 > Descriptors.MolWt(strip_salts(salt))
    rules = FilterRules(max_molecular_weight=500)
    assert check(salt, rules) is None
    assert "molecular weight" in check("C" * 40 + ".Cl", rules)  # the parent itself is too heavy
    assert Chem.MolToSmiles(strip_salts("[Na+].CC(=O)[O-]")) == "CC(=O)O"


def test_prepared_ligand_has_hydrogens_and_3d_coordinates():
    ligand = prepare_ligand("MOSES-1", "CNC(=O)c1cccc(NC(=O)Cc2cccc3ccccc23)c1")
    assert isinstance(ligand, PreparedLigand)
    mol = ligand.mol
    assert any(a.GetAtomicNum() == 1 for a in mol.GetAtoms())
    assert mol.GetConformer().Is3D()
    block = Chem.MolFromMolBlock(ligand.to_molblock(), removeHs=False)
    assert block.GetProp("_Name") == "MOSES-1"
    assert prepare_ligand("MOSES-1", "CNC(=O)c1cccc(NC(=O)Cc2cccc3ccccc23)c1").to_molblock() == ligand.to_molblock()


def test_unparsable_smiles_is_a_failure_with_id_and_reason():
    failure = prepare_ligand("BAD-7", "C1CC(")
    assert isinstance(failure, LigandFailure)
    assert failure.id == "BAD-7" and failure.input_smiles == "C1CC("
    assert "unparsable SMILES" in failure.reason
    assert "empty SMILES" in prepare_ligand("E", "  ").reason
    assert "heavy atoms" in prepare_ligand("big", "C" * 120).reason


def test_one_bad_molecule_does_not_stop_a_batch():
    results = list(prepare_ligands([("a", "CCO"), ("b", "not a smiles"), ("c", "c1ccncc1")]))
    assert [type(r) for r in results] == [PreparedLigand, LigandFailure, PreparedLigand]
    assert results[1].id == "b"


@pytest.mark.parametrize(
    "smiles, reason",
    [
        ("[Na+]", "a bare ion or atom ([Na+]), not an organic ligand: no carbon atom"),
        ("[Zn+2]", "a bare ion or atom"),
        ("O=S(=O)([O-])[O-].[Na+].[Na+]", "an inorganic fragment"),
        ("C[Hg]C", "contains Hg"),
    ],
)
def test_ions_and_inorganic_fragments_are_refused_with_a_reason(smiles, reason):
    from impeccable.stages.ligands import parent_molecule

    with pytest.raises(ValueError, match=re.escape(reason)):
        parent_molecule(smiles)
