"""Protein-ligand interactions of docked poses, from ProLIF's interaction fingerprints.

A chemist checks a kinase pose first for the hinge: an H-bond between the
ligand and the backbone N-H or C=O of a hinge residue (Val2240 in mTOR). So the
contacts of each pose are listed hinge backbone H-bonds first, then the other
H-bonds, salt bridges, pi interactions and hydrophobic contacts.

ProLIF (Bouysset & Fiorucci 2021) perceives the interactions from geometry with
its default distance and angle criteria; the receptor's bond orders and charges
come from ProLIF's amino-acid templates (``MoleculeStandardizer``), the pose
is read with its hydrogens as docked. Contacts are measured on the docked
pose only: a single structure, not an occupancy over a trajectory.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ProLIF's interaction classes, named for a chemist; VdWContact is left out (every pocket atom touches).
KINDS = {
    "HBAcceptor": "H-bond (ligand accepts)",
    "HBDonor": "H-bond (ligand donates)",
    "XBDonor": "halogen bond",
    "Cationic": "salt bridge (ligand +)",
    "Anionic": "salt bridge (ligand -)",
    "PiStacking": "pi stacking",
    "PiCation": "pi-cation (ligand ring)",
    "CationPi": "cation-pi (ligand cation)",
    "Hydrophobic": "hydrophobic",
}
HBONDS = ("HBAcceptor", "HBDonor")
BACKBONE_ATOMS = frozenset({"N", "H", "O", "OXT", "H1", "H2", "H3"})
RESIDUE_ID = re.compile(r"^[A-Z0-9]{1,4}-?\d+(\.[A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class Contact:
    """One interaction of a pose with one residue, as ProLIF found it."""

    residue: str  # ProLIF residue id: VAL2240.B
    kind: str  # ProLIF interaction class: HBAcceptor, PiStacking, ...
    distance_angstrom: float
    backbone: bool  # an H-bond made with backbone atoms (N-H or C=O)
    hinge: bool  # a backbone H-bond with one of the hinge residues
    ligand_xyz: tuple[float, float, float]  # the ligand atom (or ring centre) involved, for the 3D viewer
    protein_xyz: tuple[float, float, float]

    @property
    def label(self) -> str:
        where = " backbone" if self.backbone else ""
        return f"{self.residue}{where}: {KINDS.get(self.kind, self.kind)} {self.distance_angstrom:.1f} A"


@dataclass(frozen=True)
class PoseInteractions:
    """The interactions of one compound's docked pose; ``hinge_hbond`` is None where no hinge was named."""

    id: str
    contacts: tuple[Contact, ...] = ()
    hinge_hbond: bool | None = None
    error: str = ""  # why no fingerprint (unreadable pose), else empty
    pocket: tuple[str, ...] = field(default=())  # residues within 5 A of the pose, for the viewer

    def residues(self, kinds: Iterable[str]) -> list[str]:
        """Residues making any of ``kinds``, each once, in the order the contacts are listed."""
        wanted = set(kinds)
        return list(
            dict.fromkeys(c.residue + (" (bb)" if c.backbone else "") for c in self.contacts if c.kind in wanted)
        )

    def columns(self) -> dict[str, str]:
        """The export's interaction columns (residue lists, ';'-separated; bb = backbone)."""
        return {
            "hinge_hbond": "" if self.hinge_hbond is None else ("yes" if self.hinge_hbond else "no"),
            "hbond_residues": ";".join(self.residues(HBONDS)),
            "salt_bridge_residues": ";".join(self.residues(("Cationic", "Anionic"))),
            "pi_residues": ";".join(self.residues(("PiStacking", "PiCation", "CationPi"))),
            "halogen_bond_residues": ";".join(self.residues(("XBDonor",))),
            "hydrophobic_residues": ";".join(self.residues(("Hydrophobic",))),
        }


COLUMNS = tuple(PoseInteractions("").columns())


def check_residue_ids(ids: Sequence[str]) -> list[str]:
    """Residue ids as ProLIF writes them (``VAL2240`` or ``VAL2240.B``); a ValueError names a bad one."""
    for rid in ids:
        if not RESIDUE_ID.match(rid):
            raise ValueError(f"residue {rid!r}: write it as RESNAME + number, optionally .CHAIN, e.g. VAL2240.B")
    return list(ids)


class InteractionProfiler:
    """ProLIF fingerprints of poses against one receptor (read once, ~2 s for 8,000 atoms)."""

    def __init__(self, receptor_pdb: str | Path, hinge: Sequence[str] = ()) -> None:
        with warnings.catch_warnings():  # MDAnalysis, imported by ProLIF, warns about its own modules
            warnings.simplefilter("ignore")
            import MDAnalysis  # noqa: F401 - its import turns its deprecation warnings on: ignore them after it

            warnings.simplefilter("ignore")
            import prolif as plf
            from prolif.io import MoleculeStandardizer

            self.protein = MoleculeStandardizer()(str(receptor_pdb))
            self.fingerprint = plf.Fingerprint(list(KINDS))
        self._plf = plf
        self.hinge = check_residue_ids(hinge)

    def profile(self, cid: str, pose_sdf: str | None) -> PoseInteractions:
        """The contacts of one pose (an SDF block with hydrogens, in the receptor's frame)."""
        from rdkit import Chem

        mol = Chem.MolFromMolBlock(pose_sdf, removeHs=False) if pose_sdf else None
        if mol is None:
            return PoseInteractions(cid, error="no readable pose")
        ligand = self._plf.Molecule.from_rdkit(mol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fingerprint.run_from_iterable([ligand], self.protein, n_jobs=1, progress=False)
        contacts = [
            self._contact(str(pres), kind, meta, mol)
            for (_, pres), found in self.fingerprint.ifp[0].items()
            for kind, metas in found.items()
            for meta in metas
        ]
        contacts.sort(key=_order)
        hinge = None if not self.hinge else any(c.hinge for c in contacts)
        return PoseInteractions(cid, tuple(contacts), hinge, pocket=tuple(self._pocket(mol)))

    def _contact(self, residue: str, kind: str, meta: dict[str, Any], mol: Any) -> Contact:
        prot_atoms = meta["parent_indices"]["protein"]
        lig_atoms = meta["parent_indices"]["ligand"]
        backbone = kind in HBONDS and self._atom_name(prot_atoms[0]) in BACKBONE_ATOMS
        return Contact(
            residue,
            kind,
            round(float(meta["distance"]), 2),
            backbone,
            backbone and _matches(residue, self.hinge),
            _centre(mol, lig_atoms),
            _centre(self.protein, prot_atoms),
        )

    def _atom_name(self, index: int) -> str:
        return self.protein.GetAtomWithIdx(int(index)).GetPDBResidueInfo().GetName().strip()

    def _pocket(self, mol: Any, cutoff: float = 5.0) -> list[str]:
        """Residues with any atom within ``cutoff`` angstrom of the pose."""
        import numpy as np

        lig = mol.GetConformer().GetPositions()
        prot = self.protein.GetConformer().GetPositions()
        near = np.zeros(len(prot), dtype=bool)
        for start in range(0, len(lig), 16):  # bounded memory: 16 ligand atoms x all protein atoms at a time
            d = np.linalg.norm(prot[None, :, :] - lig[start : start + 16, None, :], axis=2)
            near |= (d <= cutoff).any(axis=0)
        residues: dict[str, None] = {}
        for i in np.flatnonzero(near):
            info = self.protein.GetAtomWithIdx(int(i)).GetPDBResidueInfo()
            residues[f"{info.GetResidueName()}{info.GetResidueNumber()}.{info.GetChainId()}"] = None
        return list(residues)


def profile_poses(
    receptor_pdb: str | Path, poses: Iterable[tuple[str, str | None]], hinge: Sequence[str] = ()
) -> dict[str, PoseInteractions]:
    """id -> interactions for each (id, pose SDF)."""
    profiler = InteractionProfiler(receptor_pdb, hinge)
    return {cid: profiler.profile(cid, sdf) for cid, sdf in poses}


def _matches(residue: str, hinge: Sequence[str]) -> bool:
    """``VAL2240.B`` matches ``VAL2240.B`` and ``VAL2240`` (any chain)."""
    return any(residue == h or residue.split(".")[0] == h for h in hinge)


def _order(c: Contact) -> tuple[int, int, str]:
    """Hinge backbone H-bonds, other H-bonds, then the rest in KINDS order; within a kind by residue."""
    rank = list(KINDS).index(c.kind) if c.kind in KINDS else len(KINDS)
    return (0 if c.hinge else 1 if c.kind in HBONDS else 2, rank, c.residue)


def _centre(mol: Any, atoms: Sequence[int]) -> tuple[float, float, float]:
    """Centre of the heavy atoms among ``atoms`` (the donor, not its hydrogen), or of all of them."""
    conf = mol.GetConformer()
    heavy = [i for i in atoms if mol.GetAtomWithIdx(int(i)).GetAtomicNum() > 1] or list(atoms)
    pts = [conf.GetAtomPosition(int(i)) for i in heavy]
    return (
        round(sum(p.x for p in pts) / len(pts), 3),
        round(sum(p.y for p in pts) / len(pts), 3),
        round(sum(p.z for p in pts) / len(pts), 3),
    )
