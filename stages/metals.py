"""Heterogens near a docking box, and which metal ions the receptor keeps: ``metals = auto | keep | remove``.

Why a rule and a record: a crystal's metal ions change every docking score near
them, and whether one belongs to the receptor is chemistry, not tuning. A
structural ion (a zinc held by cysteines and histidines) is part of the protein;
a catalytic Mg2+ held by ATP's phosphates arrives with the nucleotide, and an
ATP-competitive inhibitor displaces both. So under ``auto`` a metal ion is kept
when at least two protein donor atoms (N, O, S of amino acids) from at least two
residues lie within 2.8 A of it, and removed otherwise (held by a ligand, a
nucleotide or one residue). A bidentate carboxylate counts as one residue: 4JSV's
Mg B2603 touches both oxygens of Asp2357 and the MgF3, and goes with the ATP site.
``keep`` keeps every metal ion, ``remove`` none.

Every heterogen within 8 A of the box (metal ions, ligands, cofactors; crystal
waters as one count) is recorded in the receptor folder's ``heterogens.toml``
with its fate under each mode and why, so a campaign can apply its own mode at
load time (``receptor.load_receptor(..., metals=...)``) and the report can list them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import StageInputError

__all__ = [
    "METAL_MODES",
    "METAL_IONS",
    "MD_PARAMETERISED",
    "Heterogen",
    "survey",
    "write_provenance",
    "read_provenance",
    "kept_metals",
    "metal_pdbqt_lines",
    "metal_pdb_lines",
]

METAL_MODES = ("auto", "keep", "remove")
DONOR_CUTOFF_ANGSTROM = 2.8  # metal-donor bond lengths are 1.9-2.6 A; 2.8 allows crystal error
NEAR_BOX_ANGSTROM = 8.0
# residue name -> (element, charge) for the ions a crystal structure carries
METAL_IONS: dict[str, tuple[str, int]] = {
    "MG": ("Mg", 2),
    "ZN": ("Zn", 2),
    "CA": ("Ca", 2),
    "MN": ("Mn", 2),
    "FE2": ("Fe", 2),
    "FE": ("Fe", 3),
    "CO": ("Co", 2),
    "NI": ("Ni", 2),
    "CU": ("Cu", 2),
    "CU1": ("Cu", 1),
    "CD": ("Cd", 2),
    "HG": ("Hg", 2),
    "NA": ("Na", 1),
    "K": ("K", 1),
    "LI": ("Li", 1),
    "SR": ("Sr", 2),
    "BA": ("Ba", 2),
}
WATERS = frozenset({"HOH", "WAT", "DOD", "H2O"})
# Metal ions the MD stage can simulate: tleap's leaprc.water.tip3p loads them from atomic_ions.lib with the
# Li/Merz 12-6 nonbonded parameters for TIP3P (frcmod.ions234lm_126_tip3p; Li P et al. (2013) J Chem Theory
# Comput 9:2733 and Li P, Song LF, Merz KM (2015) J Chem Theory Comput 11:1645). A nonbonded model: no bonds to
# the protein, so the ion keeps its site only through electrostatics and Lennard-Jones contacts.
MD_PARAMETERISED = frozenset({"MG", "ZN", "CA", "MN"})
_VINA_METAL_TYPES = {"Mg": "Mg", "Zn": "Zn", "Ca": "Ca", "Mn": "Mn", "Fe": "Fe"}  # AutoDock types Vina reads


@dataclass(frozen=True)
class Heterogen:
    """One heterogen residue near the box, its fate under each mode, and why."""

    resname: str
    chain: str
    resid: int
    n_atoms: int
    distance_to_box_angstrom: float
    is_metal: bool
    protein_donors: tuple[str, ...] = ()  # "ASP2357 OD1 2.10" for a metal's protein donor atoms
    other_contacts: tuple[str, ...] = ()  # heterogen atoms within the cutoff of a metal: "ADP2601 O3B 2.23"
    xyz: tuple[float, float, float] | None = None  # a metal ion's position (angstrom)

    @property
    def label(self) -> str:
        return f"{self.resname} {self.chain}{self.resid}"

    def kept(self, mode: str) -> bool:
        """Whether the receptor keeps this heterogen under ``mode`` (only metal ions are ever kept)."""
        if not self.is_metal or mode == "remove":
            return False
        return mode == "keep" or (len(self.protein_donors) >= 2 and len(_residues(self.protein_donors)) >= 2)

    def reason(self, mode: str) -> str:
        """In words: kept or removed under ``mode``, and why."""
        if not self.is_metal:
            if self.resname in WATERS:
                return f"removed: {self.n_atoms} crystal waters (docking uses no explicit water)"
            return "removed: ligand or cofactor, not part of the receptor"
        donors = (
            f"{len(self.protein_donors)} protein donor atom(s) from {len(_residues(self.protein_donors))} "
            f"residue(s) within {DONOR_CUTOFF_ANGSTROM} A ({', '.join(self.protein_donors) or 'none'})"
        )
        others = f"; also bound by {', '.join(self.other_contacts)}" if self.other_contacts else ""
        if mode != "auto":
            return f"{'kept' if mode == 'keep' else 'removed'} (metals = {mode!r}): {donors}{others}"
        verdict = "kept: held by the protein" if self.kept(mode) else "removed: not held by two protein residues"
        return f"{verdict} ({donors}{others})"


def survey(
    pdb_text: str,
    center: tuple[float, float, float],
    size: tuple[float, float, float],
    chain: str | None = None,
    radius: float = NEAR_BOX_ANGSTROM,
) -> list[Heterogen]:
    """Every HETATM residue (of ``chain``, or all) with an atom within ``radius`` of the box."""
    protein: list[tuple[str, np.ndarray]] = []
    hets: dict[tuple[str, str, int], list[tuple[str, np.ndarray]]] = {}
    for line in pdb_text.splitlines():
        if not line.startswith(("ATOM", "HETATM")) or len(line) < 54:
            continue
        xyz = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
        resname, ch, resid = line[17:20].strip(), line[21], int(line[22:26])
        if chain is not None and ch != chain:
            continue
        if line.startswith("ATOM"):
            element = (line[76:78].strip() or line[12:16].strip()[0]).upper()
            if element in ("N", "O", "S"):
                protein.append((f"{resname}{resid} {line[12:16].strip()}", xyz))
        else:
            hets.setdefault((resname, ch, resid), []).append((line[12:16].strip(), xyz))
    lo = np.asarray(center) - np.asarray(size) / 2
    hi = np.asarray(center) + np.asarray(size) / 2
    out = []
    for (resname, ch, resid), atoms in hets.items():
        distance = min(float(np.linalg.norm(np.maximum(0, np.maximum(lo - xyz, xyz - hi)))) for _, xyz in atoms)
        if distance > radius:
            continue
        metal = resname in METAL_IONS and len(atoms) == 1
        donors, contacts, where = (), (), None
        if metal:
            where = atoms[0][1]
            donors = tuple(f"{name} {d:.2f}" for name, d in _within(where, protein))
            others = [
                (f"{rn}{ri} {an}", xyz)
                for (rn, c, ri), ats in hets.items()
                if (rn, c, ri) != (resname, ch, resid) and rn not in WATERS
                for an, xyz in ats
            ]
            contacts = tuple(f"{name} {d:.2f}" for name, d in _within(where, others))
        out.append(
            Heterogen(
                resname,
                ch,
                resid,
                len(atoms),
                round(distance, 2),
                metal,
                donors,
                contacts,
                None if where is None else tuple(round(float(v), 3) for v in where),
            )
        )
    waters = [h for h in out if h.resname in WATERS]
    merged = [h for h in out if h.resname not in WATERS]
    if waters:
        merged.append(
            Heterogen("HOH", waters[0].chain, 0, len(waters), min(w.distance_to_box_angstrom for w in waters), False)
        )
    return sorted(merged, key=lambda h: (h.distance_to_box_angstrom, h.chain, h.resid))


def write_provenance(path: Path, heterogens: list[Heterogen], source: str) -> None:
    """``heterogens.toml``: every heterogen near the box with its fate under each mode."""
    lines = [
        f"# Heterogens within {NEAR_BOX_ANGSTROM} A of the docking box of {source}: what the receptor keeps",
        "# under metals = auto | keep | remove, and why (stages/metals.py). Waters are one entry.",
        "",
    ]
    for h in heterogens:
        lines += [
            "[[heterogen]]",
            f'resname = "{h.resname}"',
            f'chain = "{h.chain}"',
            f"resid = {h.resid}",
            f"n_atoms = {h.n_atoms}",
            f"distance_to_box_angstrom = {h.distance_to_box_angstrom}",
            f"is_metal = {str(h.is_metal).lower()}",
            "protein_donors = [" + ", ".join(f'"{d}"' for d in h.protein_donors) + "]",
            "other_contacts = [" + ", ".join(f'"{c}"' for c in h.other_contacts) + "]",
        ]
        if h.xyz is not None:
            lines.append("xyz = [" + ", ".join(f"{v:.3f}" for v in h.xyz) + "]")
        lines += [f'auto = "{h.reason("auto")}"', ""]
    path.write_text("\n".join(lines))


def read_provenance(path: Path) -> list[Heterogen]:
    """The heterogens of a receptor folder's ``heterogens.toml``; [] when the folder has none."""
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return [
            Heterogen(
                h["resname"],
                h["chain"],
                int(h["resid"]),
                int(h["n_atoms"]),
                float(h["distance_to_box_angstrom"]),
                bool(h["is_metal"]),
                tuple(h["protein_donors"]),
                tuple(h["other_contacts"]),
                tuple(h["xyz"]) if "xyz" in h else None,
            )
            for h in data.get("heterogen", [])
        ]
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StageInputError(f"{path}: not a heterogen record: {exc}") from None


def kept_metals(heterogens: list[Heterogen], mode: str) -> list[Heterogen]:
    """The metal ions the receptor keeps under ``mode``."""
    if mode not in METAL_MODES:
        raise StageInputError(f"metals: must be one of {', '.join(METAL_MODES)}, got {mode!r}")
    return [h for h in heterogens if h.kept(mode)]


def metal_pdbqt_lines(metals: list[Heterogen]) -> list[str]:
    """PDBQT ATOM records of kept metal ions (formal charge as the partial charge, AutoDock metal type)."""
    lines = []
    for i, h in enumerate(metals, start=1):
        element, charge = METAL_IONS[h.resname]
        if element not in _VINA_METAL_TYPES or h.xyz is None:
            raise StageInputError(f"{h.label}: Vina has no atom type for {element}; use metals = 'remove'")
        x, y, z = h.xyz
        lines.append(
            f"HETATM{90000 + i:5d} {element.upper():<4s} {h.resname:>3s} {h.chain}{h.resid:4d}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00    {charge:+6.3f} {_VINA_METAL_TYPES[element]:<2s}"
        )
    return lines


def metal_pdb_lines(metals: list[Heterogen]) -> list[str]:
    """PDB HETATM records of kept metal ions (residue and atom named as in tleap's atomic_ions.lib)."""
    lines = []
    for i, h in enumerate(metals, start=1):
        if h.xyz is None:
            raise StageInputError(f"{h.label}: no coordinates in heterogens.toml")
        x, y, z = h.xyz
        element = METAL_IONS[h.resname][0].upper()
        lines.append(
            f"HETATM{90000 + i:5d} {h.resname:<4s} {h.resname:>3s} {h.chain}{h.resid:4d}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2s}"
        )
    return lines


def _within(centre: np.ndarray, atoms: list[tuple[str, np.ndarray]]) -> list[tuple[str, float]]:
    near = [(name, float(np.linalg.norm(xyz - centre))) for name, xyz in atoms]
    return sorted(((n, d) for n, d in near if d <= DONOR_CUTOFF_ANGSTROM), key=lambda x: x[1])


def _residues(donors: tuple[str, ...]) -> set[str]:
    return {d.split()[0] for d in donors}
