"""The pose panel's summary, the hinge H-bond on crystal structures, and per-compound MD seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from impeccable.stages.hinge import hinge_hbonds, hinge_residue, ligand_hbond_atoms
from impeccable.stages.md import compound_seed
from impeccable.stages.posepanel import PANEL, RECEPTORS, dock_complex, summarise


def run(name: str, rmsd: float, exhaustiveness: int = 8, passed: bool = True, seed: int = 1) -> dict:
    return {
        "complex": name,
        "exhaustiveness": exhaustiveness,
        "seed": seed,
        "rmsd_angstrom": rmsd,
        "success": rmsd <= 2.0,
        "posebusters_passed": passed,
        "hinge_hbond": None,
    }


def test_summary_counts_complexes_with_an_exact_interval():
    runs = [run("a", 0.8), run("b", 1.9, passed=False), run("c", 3.5), run("d", 6.0), run("a", 4.0, exhaustiveness=1)]
    s = summarise(runs)
    e8 = s["8"]
    assert e8["complexes"] == 4 and e8["successes"] == 2 and e8["success_rate"] == 0.5
    lo, hi = e8["success_rate_ci95"]
    assert lo == pytest.approx(0.0676, abs=1e-3) and hi == pytest.approx(0.9324, abs=1e-3)  # 2 of 4, exact
    assert e8["median_rmsd_angstrom"] == pytest.approx((1.9 + 3.5) / 2)
    assert e8["posebusters_valid_success_rate"] == 0.25  # b is close but fails a PoseBusters check
    assert s["1"]["complexes"] == 1 and s["1"]["successes"] == 0


def test_several_seeds_count_a_complex_once_by_majority():
    runs = [
        run("a", 1.0, seed=1),
        run("a", 1.5, seed=2),
        run("a", 5.0, seed=3),
        run("b", 5.0, seed=1),
        run("b", 1.0, seed=2),
        run("b", 6.0, seed=3),
    ]
    s = summarise(runs)["8"]
    assert s["complexes"] == 2 and s["successes"] == 1


@pytest.mark.skipif(not (RECEPTORS / "4jsx" / "receptor.pdb").is_file(), reason="pose panel data not built")
@pytest.mark.parametrize("folder, ligand", [("4jsx", "ligand_17G.sdf"), ("4jt5", "ligand_P2X.sdf")])
def test_crystal_inhibitors_make_the_val2240_hinge_hbond(folder, ligand):
    """Torin2 and PP242 accept the Val2240 NH in their crystal structures (PDB 4JSX, 4JT5)."""
    mol = Chem.MolFromMolFile(str(RECEPTORS / folder / ligand), removeHs=False)
    hinge = hinge_residue(RECEPTORS / folder / "receptor.pdb", 2240)
    assert hinge is not None and hinge.label == "VAL2240" and hinge.h is not None
    contacts = hinge_hbonds(mol.GetConformer().GetPositions(), ligand_hbond_atoms(mol), hinge)
    assert any("VAL2240 NH" in c for c in contacts)
    far = mol.GetConformer().GetPositions() + np.array([8.0, 0, 0])  # moved out of the site: no contact
    assert hinge_hbonds(far, ligand_hbond_atoms(mol), hinge) == []


def test_every_panel_complex_has_its_files():
    for c in PANEL:
        assert (RECEPTORS / c.receptor / "receptor.pdbqt").is_file(), c.name
        if c.reference:
            assert (RECEPTORS / c.reference).is_file(), c.name


def test_compound_seeds_differ_between_compounds_and_repeat():
    seeds = {compound_seed(42, f"MOSES-{i:07d}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 < s < 2**31 - 1 for s in seeds)
    assert compound_seed(42, "x") == compound_seed(42, "x") != compound_seed(43, "x")


@pytest.mark.slow
def test_redocking_tipiracil_gives_rmsd_checks_and_no_hinge():
    c = next(c for c in PANEL if c.receptor == "1uou")
    r = dock_complex(c, exhaustiveness=1, seed=1)
    assert r["rmsd_angstrom"] >= 0 and isinstance(r["posebusters_passed"], bool) and "hinge_hbond" not in r
    assert Path(RECEPTORS / "1uou" / "receptor.pdb").is_file()


def test_md_observables_count_hinge_frames_and_ligand_drift():
    """Frames in nm: a hinge N-H pointing at a ligand N 2.9 A away in the first frame, 8 A away in the second."""
    from impeccable.stages.md_analysis import Observables

    n, h, o = [0.0, 0, 0], [0.1, 0, 0], [-0.3, 0.5, 0]  # receptor atoms 0-2 (nm): N, H, O
    lig_near = [[0.29, 0, 0], [0.4, 0.1, 0]]  # ligand atoms 3-4: an acceptor N, a carbon
    start = np.array([n, h, o, *lig_near])
    moved = start.copy()
    moved[3:] += [0.8, 0, 0]
    hinge = {"label": "VAL2240", "n": 0, "h": 1, "o": 2, "acceptors": [3], "donors": []}
    obs = Observables(start, 3, 5, np.array([True, True]), hinge)
    obs.add(start)
    obs.add(moved)
    got = obs.summary()
    assert got["hinge_hbond_occupancy"] == 0.5 and got["hinge_residue"] == "VAL2240"
    assert got["ligand_rmsd_mean_angstrom"] == pytest.approx(4.0) and got["ligand_rmsd_max_angstrom"] == 8.0
    assert Observables(start, 3, 5, np.array([True, True]), None).summary()["hinge_hbond_occupancy"] is None
