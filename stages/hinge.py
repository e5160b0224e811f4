"""The kinase hinge contact: a ligand H-bond to one residue's backbone (mTOR: Val2240), in a pose or a frame.

ATP-site kinase inhibitors almost all make one to three H-bonds to the hinge backbone; for mTOR the
key one is to Val2240 (Torin2's quinoline N1 and PP242's pyrazolopyrimidine accept the Val2240 NH,
PDB 4JSX and 4JT5). A docked pose in the ATP site without it is suspect, whatever its score.

Geometric criterion (the usual one of PLIP, ProLIF and MDAnalysis' defaults, within 0.1 A): donor-
acceptor distance <= 3.5 A and donor-H...acceptor angle >= 120 degrees. Ligand acceptors are its N
and O atoms without a hydrogen (and every O); ligand donors are N or O carrying a hydrogen. The hinge
residue donates its backbone N-H and accepts on its backbone O. Hydrogens must be in the coordinates
(docked poses and MD frames have them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_DISTANCE",
    "MIN_ANGLE",
    "HingeResidue",
    "LigandHBondAtoms",
    "hinge_residue",
    "ligand_hbond_atoms",
    "hinge_hbonds",
]

MAX_DISTANCE = 3.5  # angstrom, donor to acceptor
MIN_ANGLE = 120.0  # degrees, donor-H...acceptor


@dataclass(frozen=True)
class HingeResidue:
    """Backbone N, H and O of the hinge residue (angstrom), and its label (e.g. VAL2240)."""

    label: str
    n: np.ndarray
    h: np.ndarray | None
    o: np.ndarray


@dataclass(frozen=True)
class LigandHBondAtoms:
    """Indices into the ligand's atoms: acceptors, and (donor, hydrogen) pairs."""

    acceptors: tuple[int, ...]
    donors: tuple[tuple[int, int], ...]


def hinge_residue(receptor_pdb: str | Path, residue: int, chain: str | None = None) -> HingeResidue | None:
    """The backbone atoms of residue number ``residue`` (first chain that has it, or ``chain``); None if absent."""
    found: dict[str, np.ndarray] = {}
    name, chain_seen = "", chain
    for line in Path(receptor_pdb).read_text().splitlines():
        if not line.startswith(("ATOM", "HETATM")) or int(line[22:26]) != residue:
            continue
        if chain_seen is not None and line[21] != chain_seen:
            continue
        chain_seen = line[21]
        name = f"{line[17:20]}{residue}"
        atom = line[12:16].strip()
        if atom in ("N", "H", "O"):
            found[atom] = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
    if "N" not in found or "O" not in found:
        return None
    return HingeResidue(name, found["N"], found.get("H"), found["O"])


def ligand_hbond_atoms(mol: object) -> LigandHBondAtoms:
    """The ligand's H-bond acceptors and donor-H pairs (RDKit molecule with explicit hydrogens)."""
    acceptors, donors = [], []
    for atom in mol.GetAtoms():  # type: ignore[attr-defined]
        if atom.GetSymbol() not in ("N", "O"):
            continue
        hs = [n.GetIdx() for n in atom.GetNeighbors() if n.GetAtomicNum() == 1]
        donors += [(atom.GetIdx(), h) for h in hs]
        # O always; N only with a free lone pair: no H, not a cation, at most two neighbours (pyridine, nitrile)
        if atom.GetSymbol() == "O" or (not hs and atom.GetFormalCharge() <= 0 and atom.GetDegree() <= 2):
            acceptors.append(atom.GetIdx())
    return LigandHBondAtoms(tuple(acceptors), tuple(donors))


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    u, v = a - b, c - b
    cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def hinge_hbonds(
    xyz: np.ndarray,
    atoms: LigandHBondAtoms,
    hinge: HingeResidue,
    hinge_xyz: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None,
) -> list[str]:
    """The H-bonds between ligand coordinates ``xyz`` (angstrom) and the hinge backbone, as short labels.

    ``hinge_xyz`` overrides the hinge's (N, H, O) coordinates, for an MD frame. Without the hinge H
    the NH...acceptor angle cannot be checked and the distance alone decides.
    """
    n, h, o = hinge_xyz if hinge_xyz is not None else (hinge.n, hinge.h, hinge.o)
    found = []
    for a in atoms.acceptors:
        d = float(np.linalg.norm(xyz[a] - n))
        if d <= MAX_DISTANCE and (h is None or _angle(n, h, xyz[a]) >= MIN_ANGLE):
            found.append(f"{hinge.label} NH...ligand atom {a + 1} ({d:.1f} A)")
    for donor, hyd in atoms.donors:
        d = float(np.linalg.norm(xyz[donor] - o))
        if d <= MAX_DISTANCE and _angle(xyz[donor], xyz[hyd], o) >= MIN_ANGLE:
            found.append(f"ligand atom {donor + 1} H...O {hinge.label} ({d:.1f} A)")
    return found
