"""Build the complex, receptor and ligand (and the solvated complex) as Amber topologies with tleap.

Why tleap: it is the program that defines ff14SB and GAFF2 assignments, and
OpenMM (``AmberPrmtopFile``), sander and MMPBSA.py then read the very same
files, so the MD, the MM/GBSA in OpenMM and the AmberTools cross-check share
one set of parameters by construction. GB radii are mbondi2 (the radii set
for OBC2, igb=5). tleap takes protonation states from residue names, so the
receptor's hydrogens are turned into names here (HID/HIE/HIP, ASH, GLH, LYN,
CYX for disulfides) and the atom count is checked afterwards: tleap adding or
dropping atoms would silently change a protonation state.

Explicit solvent: a truncated octahedron of TIP3P with ``padding`` around the
solute, neutralised with Na+/Cl- and brought to ``ion_molar`` NaCl
(Joung-Cheatham ions), as ESMACS does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from openmm import app, unit
from rdkit import Chem

from . import amber
from .errors import StageInputError
from .gaff2 import LigandParameters, mol2_for_pose

__all__ = ["AmberBuild", "build", "build_ligand", "amber_residue_names", "prmtop_charges"]

WATER_MOLAR = 55.5


@dataclass(frozen=True)
class AmberBuild:
    """Paths of the topologies (prmtop) and coordinates (inpcrd) of one complex; counts of its parts."""

    folder: Path
    n_receptor_atoms: int
    n_ligand_atoms: int
    solvated: bool
    n_waters: int = 0
    n_cations: int = 0
    n_anions: int = 0

    def prmtop(self, part: str) -> Path:
        """``part``: complex, receptor, ligand or solvated."""
        return self.folder / f"{part}.prmtop"

    def inpcrd(self, part: str) -> Path:
        return self.folder / f"{part}.inpcrd"


def build(
    receptor: app.Topology,
    receptor_nm: np.ndarray,
    ligand: LigandParameters,
    pose: Chem.Mol,
    folder: Path,
    solvent: str = "implicit",
    padding_angstrom: float = 10.0,
    ion_molar: float = 0.15,
) -> AmberBuild:
    """Write receptor.pdb and ligand.mol2 to ``folder`` and make the prmtop/inpcrd files there."""
    folder = _write_ligand(folder, ligand, pose)
    names = amber_residue_names(receptor)
    disulfides = [(a.residue.index, b.residue.index) for a, b in receptor.bonds() if a.name == b.name == "SG"]
    for res, name in zip(receptor.residues(), names):
        res.name = name
    _name_n_terminal_hydrogens(receptor)
    with open(folder / "receptor.pdb", "w") as fh:
        app.PDBFile.writeFile(receptor, receptor_nm * 10.0 * unit.angstrom, fh)
    what = f"complex of {ligand.name}"
    dry = _LEAP_HEAD + "".join(f"bond rec.{i + 1}.SG rec.{j + 1}.SG\n" for i, j in disulfides) + _LEAP_DRY
    _tleap(dry + "quit\n", folder, what)
    n_rec, n_lig = _atom_count(folder / "receptor.prmtop"), _atom_count(folder / "ligand.prmtop")
    if n_rec != receptor.getNumAtoms():
        raise StageInputError(
            f"receptor for {ligand.name}: tleap made {n_rec} atoms from {receptor.getNumAtoms()}; "
            f"its hydrogens do not match ff14SB residue templates (see leap.log in {folder})"
        )
    if n_lig != pose.GetNumAtoms():
        raise StageInputError(f"{what}: tleap made {n_lig} ligand atoms from {pose.GetNumAtoms()}")
    if solvent == "implicit":
        return AmberBuild(folder, n_rec, n_lig, False)
    if solvent != "explicit":
        raise StageInputError(f"solvent: {solvent!r} is not 'implicit' or 'explicit'")

    solvate = f"solvateOct com TIP3PBOX {padding_angstrom:.1f}\n"
    log = _tleap(dry + solvate + "quit\n", folder, what)  # first pass: how many waters fit
    waters = int(re.findall(r"Added (\d+) residues", log)[-1])
    charge = round(float(np.sum(prmtop_charges(folder / "complex.prmtop"))))
    pairs = round(ion_molar * waters / WATER_MOLAR)
    cations, anions = pairs + max(0, -charge), pairs + max(0, charge)
    counts = " ".join(f"{ion} {n}" for ion, n in (("Na+", cations), ("Cl-", anions)) if n)
    ions = f"addIons com {counts}\n" if counts else ""  # deterministic (addIonsRand is not)
    _tleap(dry + solvate + ions + "saveamberparm com solvated.prmtop solvated.inpcrd\nquit\n", folder, what)
    names = [r.name for r in app.AmberPrmtopFile(str(folder / "solvated.prmtop")).topology.residues()]
    return AmberBuild(folder, n_rec, n_lig, True, sum(n in ("WAT", "HOH") for n in names), cations, anions)


def _name_n_terminal_hydrogens(receptor: app.Topology) -> None:
    """tleap's N-terminal templates (NASN, NALA ...) name the amine's hydrogens H1, H2, H3; pdbfixer and
    OpenMM write H, H2, H3, which tleap could not type: a whole receptor (no ACE caps) failed to build."""
    for chain in receptor.chains():
        first = next(chain.residues(), None)
        if first is not None and first.name not in ("ACE", "NME"):
            for atom in first.atoms():
                if atom.name == "H":
                    atom.name = "H1"


def build_ligand(ligand: LigandParameters, pose: Chem.Mol, folder: Path) -> Path:
    """The ligand alone, ``folder/ligand.prmtop`` and ``.inpcrd`` (for checks against sander)."""
    folder = _write_ligand(folder, ligand, pose)
    _tleap(_LEAP_FF + "saveamberparm LIG ligand.prmtop ligand.inpcrd\nquit\n", folder, f"ligand {ligand.name}")
    return folder / "ligand.prmtop"


def amber_residue_names(top: app.Topology) -> list[str]:
    """ff14SB residue names that encode each residue's protonation state, read from its hydrogens."""
    sg_bonded = {a.residue.index for a, b in top.bonds() if a.name == b.name == "SG"}
    sg_bonded |= {b.residue.index for a, b in top.bonds() if a.name == b.name == "SG"}
    out = []
    for res in top.residues():
        atoms = {a.name for a in res.atoms()}
        name = res.name
        if name in ("HIS", "HID", "HIE", "HIP"):
            name = "HIP" if {"HD1", "HE2"} <= atoms else "HID" if "HD1" in atoms else "HIE"
        elif name in ("CYS", "CYX"):
            name = "CYX" if res.index in sg_bonded else "CYS" if "HG" in atoms else "CYM"
        elif name == "ASP" and "HD2" in atoms:
            name = "ASH"
        elif name == "GLU" and "HE2" in atoms:
            name = "GLH"
        elif name == "LYS" and "HZ3" not in atoms:
            name = "LYN"
        out.append(name)
    return out


# --------------------------------------------------------------------------- helpers

_LEAP_FF = """source leaprc.protein.ff14SB
source leaprc.gaff2
source leaprc.water.tip3p
set default PBRadii mbondi2
loadamberparams ligand.frcmod
LIG = loadmol2 ligand.mol2
"""
_LEAP_HEAD = _LEAP_FF + "rec = loadpdb receptor.pdb\n"
_LEAP_DRY = """com = combine {rec LIG}
saveamberparm rec receptor.prmtop receptor.inpcrd
saveamberparm LIG ligand.prmtop ligand.inpcrd
saveamberparm com complex.prmtop complex.inpcrd
"""


def _write_ligand(folder: Path, ligand: LigandParameters, pose: Chem.Mol) -> Path:
    """ligand.mol2 (cached types and charges, this pose's coordinates) and ligand.frcmod in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ligand.mol2").write_text(mol2_for_pose(ligand, pose))
    (folder / "ligand.frcmod").write_text(ligand.frcmod.read_text())
    return folder


def _tleap(script: str, folder: Path, what: str) -> str:
    """Run a tleap script; tleap exits 0 on most errors, so its log is read for them."""
    (folder / "leap.in").write_text(script)
    out = amber.run("tleap", ["-f", "leap.in"], folder, what).output
    errors = re.search(r"Errors = (\d+)", out)
    if errors is None or int(errors.group(1)) > 0 or "FATAL" in out:
        bad = [ln.strip() for ln in out.splitlines() if re.search(r"error|fatal|does not have a type", ln, re.I)]
        raise amber.AmberToolError(what, "tleap", " | ".join(bad[-5:]) or out.strip().splitlines()[-1])
    return out


def _atom_count(prmtop: Path) -> int:
    return app.AmberPrmtopFile(str(prmtop)).topology.getNumAtoms()


def prmtop_charges(prmtop: Path) -> np.ndarray:
    """Atomic charges (e) from a prmtop's CHARGE section (stored in units of e/18.2223)."""
    text = prmtop.read_text()
    section = text.split("%FLAG CHARGE", 1)[1].split("%FLAG", 1)[0]
    return np.array([float(v) for v in section.splitlines()[2:] for v in v.split()]) / 18.2223
