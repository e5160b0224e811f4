"""Docking: batch semantics, receptor validation, the CLI contract, MPI ranks, and a redocking check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rdkit import Chem

from impeccable.stages import dock
from impeccable.stages.dock import DockResult, LigandFailure, dock_ligands, read_dock_results
from impeccable.stages.errors import StageInputError
from impeccable.stages.ligands import enumerate_states
from impeccable.stages.receptor import load_receptor

REPO = Path(__file__).resolve().parents[1]
RECEPTOR = REPO / "data" / "receptors" / "4jsv"
MPIEXEC = Path(sys.executable).with_name("mpiexec")
LIGANDS = [
    ("MOSES-0000256", "Cc1cccc(C)c1NC(=O)c1ccc(C#N)cc1"),
    ("BAD-1", "C1CC("),
    ("MOSES-0000347", "O=C1COc2ccc(C(=O)c3ccccc3)cc2CN1"),
]


def _library(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "lib.csv"
    path.write_text("id,smiles\n" + "".join(f"{i},{s}\n" for i, s in rows), encoding="utf-8")
    return path


def _receptor_copy(tmp_path: Path, site: str | None = None, pdbqt: str | None = None) -> Path:
    target = tmp_path / "rec"
    shutil.copytree(RECEPTOR, target)
    if site is not None:
        (target / "site.toml").write_text(site, encoding="utf-8")
    if pdbqt is not None:
        (target / "receptor.pdbqt").write_text(pdbqt, encoding="utf-8")
    return target


def test_batch_docks_good_molecules_and_reports_bad_ones():
    results = list(dock_ligands(load_receptor(RECEPTOR), LIGANDS[:2], exhaustiveness=1))
    good, bad = results
    assert isinstance(good, DockResult) and isinstance(bad, LigandFailure)
    assert -15.0 < good.score_kcal_mol < 0.0
    assert good.state_smiles == "Cc1cccc(C)c1NC(=O)c1ccc(C#N)cc1" and good.n_states == 1  # nothing to enumerate
    pose = Chem.MolFromMolBlock(good.pose_sdf, removeHs=False)
    centre = pose.GetConformer().GetPositions().mean(axis=0)
    box = load_receptor(RECEPTOR).site
    assert all(abs(c - b) <= s / 2 + 2 for c, b, s in zip(centre, box.center_angstrom, box.size_angstrom))
    assert bad.id == "BAD-1" and "unparsable SMILES" in bad.reason


def test_receptor_that_is_not_a_protein_is_rejected(tmp_path):
    water = "HETATM    1  O   HOH A   1     -19.000 -31.000 -58.000  1.00  0.00    -0.411 OA\n"
    folder = _receptor_copy(tmp_path, pdbqt=water)
    with pytest.raises(StageInputError, match=r"receptor\.pdbqt: not a protein"):
        load_receptor(folder)


def test_box_outside_the_protein_is_rejected(tmp_path):
    folder = _receptor_copy(tmp_path, site="center = [80.0, 80.0, 80.0]\nsize = [20.0, 20.0, 20.0]\n")
    with pytest.raises(StageInputError, match=r"site\.toml: box centre .* outside the protein"):
        load_receptor(folder)


def test_cli_bad_inputs_exit_2_with_one_line_error(tmp_path, capsys):
    lib = _library(tmp_path, LIGANDS[:1])
    assert dock.main(["--receptor", str(tmp_path / "missing"), "--ligands", str(lib), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing: receptor folder not found" in err and err.count("\n") == 1
    empty = tmp_path / "empty.csv"
    empty.write_text("id,smiles\n")
    assert dock.main(["--receptor", str(RECEPTOR), "--ligands", str(empty), "--out-dir", str(tmp_path)]) == 2
    assert "empty.csv: library is empty" in capsys.readouterr().err
    far = tmp_path / "far.toml"
    far.write_text("center = [80.0, 80.0, 80.0]\nsize = [20.0, 20.0, 20.0]\n")
    assert (
        dock.main(["--receptor", str(RECEPTOR), "--site", str(far), "--ligands", str(lib), "--out-dir", str(tmp_path)])
        == 2
    )
    assert "far.toml: box centre" in capsys.readouterr().err
    assert not list(tmp_path.glob("dock.rank*.jsonl"))


def test_read_dock_results_reads_every_rank_file(tmp_path):
    for rank, rows in enumerate([[{"id": "a", "smiles": "C", "error": "x"}], [{"id": "b"}, {"id": "c"}]]):
        dock.rank_file(tmp_path, rank).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["id"] for r in read_dock_results(tmp_path)] == ["a", "b", "c"]
    with pytest.raises(StageInputError, match="not found"):
        list(read_dock_results(tmp_path / "nope"))


@pytest.mark.slow
def test_mpi_entry_point_writes_one_file_per_rank(tmp_path):
    lib = _library(tmp_path, LIGANDS)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    cmd = [
        str(MPIEXEC),
        "-n",
        "2",
        sys.executable,
        "-m",
        "impeccable.stages.dock",
        "--receptor",
        str(RECEPTOR),
        "--ligands",
        str(lib),
        "--out-dir",
        str(out),
        "--exhaustiveness",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dock.rank0.jsonl", "dock.rank1.jsonl"]
    rank0 = [json.loads(x)["id"] for x in dock.rank_file(out, 0).read_text().splitlines()]
    assert rank0 == ["MOSES-0000256", "MOSES-0000347"]  # round-robin: records 0 and 2
    by_id = {r["id"]: r for r in read_dock_results(out)}
    assert set(by_id) == {i for i, _ in LIGANDS}
    assert "error" in by_id["BAD-1"] and by_id["MOSES-0000347"]["score_kcal_mol"] < 0
    good = by_id["MOSES-0000347"]
    assert {
        "id",
        "smiles",
        "score_kcal_mol",
        "pose_sdf",
        "runtime_s",
        "state_smiles",
        "n_states",
        "state_scores_kcal_mol",
        "state_penalties_kcal_mol",
        "penalty_kcal_mol",
    } <= set(good)
    assert good["n_states"] == len(good["state_scores_kcal_mol"]) == len(good["state_penalties_kcal_mol"])
    assert good["score_kcal_mol"] == pytest.approx(
        min(s + p for s, p in zip(good["state_scores_kcal_mol"], good["state_penalties_kcal_mol"])), abs=2e-3
    )


@pytest.mark.slow
def test_a_compound_scores_as_its_best_state_and_names_it():
    """Two unassigned centres: four stereoisomers docked, the best one reported with its stereo."""
    docker = dock.Docker(load_receptor(RECEPTOR), exhaustiveness=1)
    result = docker.dock("two-centres", "CC(C)NC(=O)C1CCCN(C1)C(=O)C(C)c1ccccc1")
    assert isinstance(result, DockResult) and result.n_states == 4
    # a state's score is its Vina score plus its microstate penalty; the compound takes the best
    assert result.score_kcal_mol == pytest.approx(
        min(s + p for s, p in zip(result.state_scores_kcal_mol, result.state_penalties_kcal_mol)), abs=2e-3
    )
    centres = Chem.FindMolChiralCenters(Chem.MolFromSmiles(result.state_smiles), useLegacyImplementation=False)
    assert len(centres) == 2 and result.state_smiles in enumerate_states(result.smiles)


@pytest.mark.slow
def test_redocking_the_cocrystal_ligand_over_three_seeds():
    """ADP into 4JSV (Mg2+ removed), as a library compound is docked; symmetry-corrected RMSD per seed.

    Exhaustiveness 4 here (half the CPU of `impeccable validate`'s 8). Measured with the dimorphite-dl states:
    1.81, 1.60, 2.38 A for seeds 1-3 (median 1.81); with the pKasso states (ADP docked as its dominant
    trianion, 2026-12-06): 2.29, 2.35, 2.38 A (median 2.35). The 2.0 A criterion belongs to the native complex
    with its Mg2+ (validate's ``redock_native_metals``); the metal-free screening receptor is checked here. The adenine always sits in
    the hinge (0.5 A); the phosphates, with no Mg2+ to hold them, often go elsewhere, and Vina scores those
    poses better than the locally optimised crystal pose, so which side of 2.0 A the median falls on depends
    on seeds and exhaustiveness. This checks what holds either way, not the field's 2.0 A criterion
    (which `impeccable validate` reports against).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from impeccable.stages.validate import _job

    jobs = [("redock", (str(RECEPTOR), seed, 4)) for seed in (1, 2, 3)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        runs = [run for _, run in pool.map(_job, jobs)]
    rmsds = sorted(run["rmsd_angstrom"] for run in runs)
    print(f"\nredocked ADP into 4JSV, seeds 1-3: RMSD {rmsds} A, scores {[run['score_kcal_mol'] for run in runs]}")
    assert all(run["score_kcal_mol"] < -5.0 and run["n_states"] == 2 for run in runs)
    assert rmsds[2] < 2.5  # the adenine in the hinge in every run; the phosphates, without Mg2+, within 2.5 A


def test_symmetry_corrected_rmsd_across_protonation_states():
    """A docked acetate against a neutral crystal acetic acid, its =O where the OH was: RMSD 0."""
    from rdkit.Chem import AllChem

    crystal = Chem.AddHs(Chem.MolFromSmiles("CC(=O)O"))
    AllChem.EmbedMolecule(crystal, randomSeed=1)
    xyz = crystal.GetConformer().GetPositions()
    pose = Chem.AddHs(Chem.MolFromSmiles("CC(=O)[O-]"))
    conf = Chem.Conformer(pose.GetNumAtoms())
    for i, j in enumerate([0, 1, 3, 2]):  # heavy atoms; the two oxygens trade places
        conf.SetAtomPosition(i, xyz[j].tolist())
    pose.AddConformer(conf)
    assert dock.heavy_atom_rmsd(pose, crystal) == pytest.approx(0.0, abs=1e-6)


def test_rank_and_size_come_from_the_launcher(monkeypatch):
    for var in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "FLUX_TASK_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dock.mpi_rank_size() == (0, 1)
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.setenv("PMI_SIZE", "4")
    assert dock.mpi_rank_size() == (3, 4)


@pytest.mark.slow
def test_posebusters_passes_the_crystal_pose_and_flags_a_stretched_one():
    from impeccable.stages.posecheck import check_poses

    crystal = Chem.MolFromMolFile(str(RECEPTOR / "ligand_ADP.sdf"), removeHs=False)
    stretched = Chem.Mol(crystal)
    conf = stretched.GetConformer()
    p = conf.GetAtomPosition(0)
    conf.SetAtomPosition(0, (p.x + 1.5, p.y, p.z))
    verdicts = check_poses(
        RECEPTOR / "receptor.pdb",
        [("crystal", Chem.MolToMolBlock(crystal)), ("stretched", Chem.MolToMolBlock(stretched)), ("empty", "")],
    )
    assert [v.id for v in verdicts] == ["crystal", "stretched", "empty"]
    assert verdicts[0].passed, verdicts[0].failed
    assert not verdicts[1].passed and "bond_lengths" in verdicts[1].failed
    assert verdicts[2].failed == ("unreadable",)
    with pytest.raises(StageInputError, match="receptor PDB not found"):
        check_poses(RECEPTOR / "missing.pdb", [])


def test_a_pose_posebusters_fails_on_costs_the_others_nothing(monkeypatch):
    """PoseBusters failing on a batch: each pose is checked alone, and the one it still fails on is said so."""
    from impeccable.stages import posecheck

    def together(receptor, poses, pocket):
        if any(cid == "odd" for cid, _ in poses):
            raise RuntimeError("Range Error")
        return [posecheck.PoseCheck(cid, True, ()) for cid, _ in poses]

    monkeypatch.setattr(posecheck, "_check_together", together)
    verdicts = posecheck.check_poses(RECEPTOR / "receptor.pdb", [("a", "x"), ("odd", "y"), ("b", "z")])
    assert [(v.id, v.passed, v.failed) for v in verdicts] == [
        ("a", True, ()),
        ("odd", False, ("could_not_check_RuntimeError",)),
        ("b", True, ()),
    ]
