"""MD refinement + MM/GBSA: a real tiny ensemble on a docked pose, and clear errors for bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from impeccable.stages import md
from impeccable.stages.dock import DockResult, dock_one
from impeccable.stages.md import MDSettings, refine_and_score
from impeccable.stages.receptor import load_receptor

REPO = Path(__file__).resolve().parents[1]
RECEPTOR_DIR = REPO / "data" / "receptors" / "4jsv"
RECEPTOR_PDB = RECEPTOR_DIR / "receptor.pdb"
CRYSTAL_ADP = RECEPTOR_DIR / "ligand_ADP.sdf"


def _run(tmp_path: Path, receptor: Path, ligand: Path, capsys) -> tuple[int, str]:
    code = md.main(["--receptor", str(receptor), "--ligand", str(ligand), "--out", str(tmp_path / "r.json")])
    return code, capsys.readouterr().err


def test_missing_ligand_file_is_named(tmp_path, capsys):
    code, err = _run(tmp_path, RECEPTOR_PDB, tmp_path / "pose.sdf", capsys)
    assert code == 2 and err.startswith("error: ligand ") and "pose.sdf: no such file" in err


def test_ligand_without_3d_coordinates_is_rejected(tmp_path, capsys):
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.Compute2DCoords(mol)
    flat = tmp_path / "flat.sdf"
    Chem.MolToMolFile(mol, str(flat))
    code, err = _run(tmp_path, RECEPTOR_PDB, flat, capsys)
    assert code == 2 and "flat.sdf: needs 3D coordinates" in err


def test_receptor_that_is_not_a_protein_is_rejected(tmp_path, capsys):
    water = tmp_path / "water.pdb"
    water.write_text(
        "HETATM    1  O   HOH A   1     -19.000 -31.000 -58.000  1.00  0.00           O\n"
        "HETATM    2  H1  HOH A   1     -18.100 -31.000 -58.000  1.00  0.00           H\n"
        "HETATM    3  H2  HOH A   1     -19.300 -30.100 -58.000  1.00  0.00           H\n"
        "END\n"
    )
    code, err = _run(tmp_path, water, CRYSTAL_ADP, capsys)
    assert code == 2 and "water.pdb: no amino-acid residues, not a protein" in err


def test_pose_far_from_the_receptor_is_rejected(tmp_path, capsys):
    mol = Chem.MolFromMolFile(str(CRYSTAL_ADP), removeHs=False)
    conf = mol.GetConformer()
    for i in range(mol.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, (p.x + 60.0, p.y, p.z))
    far = tmp_path / "far.sdf"
    Chem.MolToMolFile(mol, str(far))
    code, err = _run(tmp_path, RECEPTOR_PDB, far, capsys)
    assert code == 2 and "far.sdf" in err and "from receptor" in err


def test_bad_settings_are_named():
    with pytest.raises(md.StageInputError, match="MDSettings.replicas"):
        MDSettings(replicas=0).check()


@pytest.mark.slow
def test_tiny_ensemble_on_a_docked_pose(tmp_path):
    docked = dock_one(load_receptor(RECEPTOR_DIR), "MOSES-0000256", "Cc1cccc(C)c1NC(=O)c1ccc(C#N)cc1", exhaustiveness=1)
    assert isinstance(docked, DockResult), docked
    pose = tmp_path / "pose.sdf"
    pose.write_text(docked.pose_sdf)
    settings = MDSettings(replicas=2, length_ps=1.0, equilibration_ps=0.2, frame_interval_ps=0.25,
                          pocket_radius_angstrom=8.0, flexible_radius_angstrom=6.0, minimise_max_iterations=300,
                          threads=1)
    result = refine_and_score(RECEPTOR_PDB, pose, settings)
    print(f"\nMM/GBSA {result.binding_energy_kcal_mol:.2f} +/- {result.stderr_kcal_mol:.2f} kcal/mol, "
          f"{result.n_atoms} atoms, timings {result.timings_s}")
    frames = [e for r in result.per_replica for e in r.frames_kcal_mol]
    assert len(frames) == result.n_frames == 2 * 4
    assert all(math.isfinite(e) for e in frames)
    assert math.isfinite(result.binding_energy_kcal_mol) and result.binding_energy_kcal_mol < 0
    assert result.stderr_kcal_mol is not None and math.isfinite(result.stderr_kcal_mol)
    for replica in result.per_replica:
        assert replica.max_displacement_angstrom < settings.max_displacement_angstrom
        assert replica.ligand_rmsd_angstrom < 5.0  # the ligand stays in the pocket
    json.dumps(result.to_json())  # the CLI's output is plain JSON
