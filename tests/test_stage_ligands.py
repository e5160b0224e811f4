"""Ligand preparation: pH 7.4 charges, 3D coordinates, failures as values with id and reason."""

from __future__ import annotations

import pytest
from rdkit import Chem

from impeccable.stages.ligands import LigandFailure, PreparedLigand, prepare_ligand, prepare_ligands


@pytest.mark.parametrize(
    ("smiles", "charge"),
    [
        ("CC(=O)O", -1),  # carboxylic acid
        ("CCN", +1),  # aliphatic amine
        ("c1ccccc1N", 0),  # aniline stays neutral
        ("C1CNCCN1", +1),  # piperazine: one proton, not two
        ("CC(=O)[O-].[Na+]", -1),  # salt stripped, then protonated like the acid
    ],
)
def test_protonation_at_ph74(smiles, charge):
    ligand = prepare_ligand("m", smiles)
    assert isinstance(ligand, PreparedLigand), ligand
    assert ligand.formal_charge == charge


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
