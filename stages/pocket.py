"""The receptor side of the MD stage: read a protonated protein, cut the pocket out, choose restraints.

Why trim: on a few CPU cores the whole receptor (8,000 atoms for 4JSV) costs
most of the MD time while the binding energy depends on the residues near the
ligand. Residues with any atom within ``radius`` of the ligand are kept whole
(gaps of up to 3 residues are filled, disulfide partners kept); every cut is
capped with ACE/NME built from the neighbouring residue's backbone atoms, so
the fragment is a valid ff14SB molecule with an integer charge (the ACE/NME
atom names are those of ff14SB's libraries, which OpenMM's amber14 shares).
Heavy atoms of residues farther than ``flexible_radius`` from the ligand, and
all cap atoms, are then held by harmonic restraints (``restrained_atoms``),
so the fragment keeps the shape the rest of the protein gave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from openmm import app, unit
from rdkit import Chem

from .errors import StageInputError
from .metals import MD_PARAMETERISED, METAL_IONS

__all__ = ["Protein", "read_protein", "check_contact", "trim", "restrained_atoms", "min_distances"]

CAPS = frozenset({"ACE", "NME"})


@dataclass
class Protein:
    topology: app.Topology
    positions_nm: np.ndarray


_PROTEIN_RESIDUES = frozenset(
    "ALA ARG ASN ASP ASH CYS CYX CYM GLN GLU GLH GLY HIS HID HIE HIP ILE LEU LYS LYN MET PHE PRO SER THR "
    "TRP TYR VAL ACE NME".split()
)


def read_protein(path: str | Path, notes: list[str]) -> Protein:
    """The protein residues of a protonated PDB file (other residues are dropped, with a note)."""
    p = Path(path)
    if not p.is_file():
        raise StageInputError(f"receptor {p}: no such file")
    try:
        pdb = app.PDBFile(str(p))
    except Exception as exc:  # OpenMM raises bare Exceptions/ValueErrors for malformed files
        raise StageInputError(f"receptor {p}: cannot read as PDB ({exc})") from exc
    other = sorted({r.name for r in pdb.topology.residues() if r.name not in _PROTEIN_RESIDUES})
    n_protein = sum(r.name in _PROTEIN_RESIDUES for r in pdb.topology.residues())
    if n_protein == 0:
        raise StageInputError(f"receptor {p}: no amino-acid residues, not a protein (found {other[:5]})")
    metals = [r for r in pdb.topology.residues() if r.name in METAL_IONS]
    unparameterised = sorted({f"{r.name} {r.chain.id}{r.id}" for r in metals if r.name not in MD_PARAMETERISED})
    if unparameterised:
        raise StageInputError(
            f"receptor {p}: metal ion(s) {', '.join(unparameterised)} in the receptor have no MD parameters here "
            f"(Li/Merz 12-6 ions through tleap: {', '.join(sorted(MD_PARAMETERISED))}), and the MD stage will not "
            "drop one silently; give MD the metal-free protein (receptor.metals = 'remove', or a PDB without it)"
        )
    modeller = app.Modeller(pdb.topology, pdb.positions)
    other = sorted(set(other) - MD_PARAMETERISED)
    if other:
        modeller.delete(
            [
                r
                for r in modeller.topology.residues()
                if r.name not in _PROTEIN_RESIDUES and r.name not in MD_PARAMETERISED
            ]
        )
        notes.append(f"removed non-protein residues from the receptor: {', '.join(other[:10])}")
    if metals:
        notes.append(
            f"kept metal ion(s) {', '.join(f'{r.name} {r.chain.id}{r.id}' for r in metals)}: Li/Merz 12-6 "
            "nonbonded parameters for TIP3P through tleap (no bonds to the protein)"
        )
    if not any(a.element is not None and a.element.symbol == "H" for a in modeller.topology.atoms()):
        raise StageInputError(f"receptor {p}: has no hydrogens; protonate it first (pdbfixer addMissingHydrogens)")
    pos = np.array(modeller.positions.value_in_unit(unit.nanometer))
    return Protein(modeller.topology, pos)


def check_contact(protein: Protein, lig_nm: np.ndarray, mol: Chem.Mol, name: str, receptor: str | Path) -> None:
    """A pose must touch the receptor: its closest heavy-atom contact within 6 A."""
    heavy_p = np.array([a.element is not None and a.element.symbol != "H" for a in protein.topology.atoms()])
    heavy_l = np.array([a.GetAtomicNum() > 1 for a in mol.GetAtoms()])
    d = min_distances(lig_nm[heavy_l], protein.positions_nm[heavy_p])
    if float(d.min()) * 10.0 > 6.0:
        raise StageInputError(
            f"ligand {name}: closest heavy atom is {float(d.min()) * 10:.1f} A from receptor {receptor} "
            "(expected a pose in contact, < 6 A); are both in the same frame?"
        )


def min_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each point of b, the distance to the nearest point of a."""
    out = np.full(len(b), np.inf)
    for x in a:
        np.minimum(out, np.linalg.norm(b - x, axis=1), out=out)
    return out


def trim(protein: Protein, lig_nm: np.ndarray, radius_angstrom: float) -> tuple[app.Topology, np.ndarray]:
    """Residues within ``radius_angstrom`` of the ligand as ACE/NME-capped fragments: topology, positions (nm)."""
    top, pos = protein.topology, protein.positions_nm
    atom_d = min_distances(lig_nm, pos) * 10.0  # angstrom, each receptor atom to the ligand
    residues = list(top.residues())
    res_d = np.array([min(atom_d[a.index] for a in r.atoms()) for r in residues])
    keep = {r.index for r in residues if res_d[r.index] <= radius_angstrom}
    for a1, a2 in top.bonds():  # keep both halves of a disulfide
        if a1.name == "SG" and a2.name == "SG" and (a1.residue.index in keep) != (a2.residue.index in keep):
            keep |= {a1.residue.index, a2.residue.index}

    new = app.Topology()
    new_pos: list[np.ndarray] = []
    old_to_new: dict[int, app.Atom] = {}
    extra_bonds: list[tuple[app.Atom, app.Atom]] = []

    def add_atom(residue: app.Residue, name: str, element: app.Element, xyz: np.ndarray, old: app.Atom | None = None):
        atom = new.addAtom(name, element, residue)
        new_pos.append(xyz)
        if old is not None:
            old_to_new[old.index] = atom
        return atom

    for chain in top.chains():
        chain_res = list(chain.residues())
        kept_pos = [i for i, r in enumerate(chain_res) if r.index in keep]
        for i, j in zip(kept_pos, kept_pos[1:]):  # fill short gaps: caps need room
            if 1 < j - i <= 4:
                kept_pos.extend(range(i + 1, j))
        kept_pos = sorted(set(kept_pos))
        for seg in _runs(kept_pos):
            c = new.addChain(chain.id)
            first, last = chain_res[seg[0]], chain_res[seg[-1]]
            if seg[0] > 0 and _peptide_bonded(chain_res[seg[0] - 1], first, pos):
                _add_cap(add_atom, new.addResidue("ACE", c), chain_res[seg[0] - 1], pos, top, "ACE", extra_bonds)
            for i in seg:
                old = chain_res[i]
                res = new.addResidue(old.name, c, old.id, old.insertionCode)
                for a in old.atoms():
                    add_atom(res, a.name, a.element, pos[a.index], a)
            if seg[-1] + 1 < len(chain_res) and _peptide_bonded(last, chain_res[seg[-1] + 1], pos):
                _add_cap(add_atom, new.addResidue("NME", c), chain_res[seg[-1] + 1], pos, top, "NME", extra_bonds)
    for a1, a2 in top.bonds():
        if a1.index in old_to_new and a2.index in old_to_new:
            new.addBond(old_to_new[a1.index], old_to_new[a2.index])
    for a1, a2 in extra_bonds:
        new.addBond(a1, a2)
    return new, np.array(new_pos)


def restrained_atoms(
    top: app.Topology, pos_nm: np.ndarray, lig_nm: np.ndarray, flexible_radius_angstrom: float, n_receptor: int
) -> list[int]:
    """Atoms to hold in place in a trimmed pocket: every cap atom, and heavy atoms of far residues.

    Works on any topology whose first ``n_receptor`` atoms are the trimmed
    receptor (tleap reorders atoms inside residues, so this runs on its output).
    """
    atom_d = min_distances(lig_nm, pos_nm[:n_receptor]) * 10.0
    held: list[int] = []
    for res in top.residues():
        atoms = [a for a in res.atoms() if a.index < n_receptor]
        if not atoms:
            continue
        if res.name in CAPS:
            held += [a.index for a in atoms]
        elif min(atom_d[a.index] for a in atoms) > flexible_radius_angstrom:
            held += [a.index for a in atoms if a.element is not None and a.element.symbol != "H"]
    return held


def _runs(sorted_idx: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in sorted_idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _peptide_bonded(prev: app.Residue, nxt: app.Residue, pos: np.ndarray) -> bool:
    c = next((a for a in prev.atoms() if a.name == "C"), None)
    n = next((a for a in nxt.atoms() if a.name == "N"), None)
    return c is not None and n is not None and float(np.linalg.norm(pos[c.index] - pos[n.index])) < 0.2


def _add_cap(
    add_atom, cap: app.Residue, src: app.Residue, pos: np.ndarray, top: app.Topology, kind: str, extra
) -> None:
    """ACE from CA, C, O of the residue before a cut; NME from N, H, CA of the residue after.

    The methyl hydrogens point along CA's other bonds (to N/C, CB, HA), 1.09 A
    long, so the cap starts near a tetrahedral geometry; minimisation does the rest.
    """
    atoms = {a.name: a for a in src.atoms()}
    ca = atoms["CA"]
    ca_nbrs = [b for a, b in _bonded(top, ca)]
    h, c = app.element.hydrogen, app.element.carbon
    if kind == "ACE":
        methyl = add_atom(cap, "CH3", c, pos[ca.index], ca)
        add_atom(cap, "C", c, pos[atoms["C"].index], atoms["C"])
        add_atom(cap, "O", app.element.oxygen, pos[atoms["O"].index], atoms["O"])
        keep_dir = atoms["C"]
    else:
        n = atoms["N"]
        add_atom(cap, "N", app.element.nitrogen, pos[n.index], n)
        if "H" in atoms:
            add_atom(cap, "H", h, pos[atoms["H"].index], atoms["H"])
        else:  # proline: put the amide H where CD was
            u = pos[atoms["CD"].index] - pos[n.index]
            hn = add_atom(cap, "H", h, pos[n.index] + 0.101 * u / np.linalg.norm(u))
            extra.append((_new_atom_of(cap, "N"), hn))
        methyl = add_atom(cap, "C", c, pos[ca.index], ca)
        keep_dir = n
    k = 1
    for nb in ca_nbrs:
        if nb is keep_dir:
            continue
        u = pos[nb.index] - pos[ca.index]
        hx = add_atom(cap, f"H{k}", h, pos[ca.index] + 0.109 * u / np.linalg.norm(u))
        extra.append((methyl, hx))
        k += 1


def _new_atom_of(residue: app.Residue, name: str) -> app.Atom:
    return next(a for a in residue.atoms() if a.name == name)


def _bonded(top: app.Topology, atom: app.Atom) -> list[tuple[app.Atom, app.Atom]]:
    return [(a, b) if a is atom else (b, a) for a, b in top.bonds() if atom in (a, b)]
