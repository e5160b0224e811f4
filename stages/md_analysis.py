"""What an MD replica says about the pose besides its energy: does the ligand stay, does it keep the hinge H-bond?

- **Ligand RMSD** per production frame: heavy atoms against the minimised start, no fitting (the
  receptor is restrained beyond the pocket, so the frame is the receptor's). A ligand that drifts
  2-3 A or more from its docked pose in a few ps was not held there; its MM/GBSA scores another pose.
- **Hinge H-bond occupancy**: the fraction of production frames with an H-bond between the ligand and
  the hinge residue's backbone (``hinge``'s criterion), where the receptor folder's ``site.toml``
  names one (``hinge_residue = 2240`` for mTOR) and the trimmed pocket contains it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from .hinge import HingeResidue, LigandHBondAtoms, hinge_hbonds, ligand_hbond_atoms

__all__ = ["hinge_spec", "Observables"]


def hinge_spec(
    receptor_pdb: str | Path, receptor_top: Any, complex_top: Any, ligand: Any, n_receptor_atoms: int
) -> dict[str, Any] | None:
    """Atom indices (in the simulated complex) of the hinge backbone N, H, O and the ligand's H-bond atoms.

    None when the receptor's site.toml names no hinge residue or the simulated pocket lacks it.
    """
    site = Path(receptor_pdb).parent / "site.toml"
    try:
        number = tomllib.loads(site.read_text()).get("hinge_residue") if site.is_file() else None
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if number is None:
        return None
    index = next((i for i, r in enumerate(receptor_top.residues()) if r.id.strip() == str(number)), None)
    if index is None:
        return None
    residue = list(complex_top.residues())[index]
    names = {a.name: a.index for a in residue.atoms()}
    if "N" not in names or "O" not in names:
        return None
    atoms = ligand_hbond_atoms(ligand)
    return {
        "label": f"{residue.name}{number}",
        "n": names["N"],
        "h": names.get("H"),
        "o": names["O"],
        "acceptors": [n_receptor_atoms + a for a in atoms.acceptors],
        "donors": [[n_receptor_atoms + d, n_receptor_atoms + h] for d, h in atoms.donors],
    }


class Observables:
    """Per-frame ligand RMSD and hinge H-bond of one replica, summarised as ReplicaResult fields."""

    def __init__(
        self,
        start_nm: np.ndarray,
        n_receptor_atoms: int,
        n_solute: int,
        heavy_ligand: np.ndarray,
        hinge: dict[str, Any] | None,
    ) -> None:
        self.ligand = np.arange(n_receptor_atoms, n_solute)[heavy_ligand]
        self.start = start_nm[self.ligand] * 10.0
        self.hinge = hinge
        self.rmsd: list[float] = []
        self.hbond: list[bool] = []
        if hinge is not None:  # hinge_hbonds works on a ligand-only array: renumber its atoms
            lig = sorted({*hinge["acceptors"], *(i for pair in hinge["donors"] for i in pair)})
            self.lig_idx = np.array(lig, dtype=int)
            pos = {a: k for k, a in enumerate(lig)}
            self.atoms = LigandHBondAtoms(
                tuple(pos[a] for a in hinge["acceptors"]), tuple((pos[d], pos[h]) for d, h in hinge["donors"])
            )
            self.label = HingeResidue(hinge["label"], np.zeros(3), None, np.zeros(3))

    def add(self, solute_nm: np.ndarray) -> None:
        d = solute_nm[self.ligand] * 10.0 - self.start
        self.rmsd.append(float(np.sqrt(np.mean(np.sum(d * d, axis=1)))))
        if self.hinge is not None:
            h = self.hinge
            frame = (
                solute_nm[h["n"]] * 10.0,
                None if h["h"] is None else solute_nm[h["h"]] * 10.0,
                solute_nm[h["o"]] * 10.0,
            )
            self.hbond.append(bool(hinge_hbonds(solute_nm[self.lig_idx] * 10.0, self.atoms, self.label, frame)))

    def summary(self) -> dict[str, Any]:
        return {
            "ligand_rmsd_mean_angstrom": round(float(np.mean(self.rmsd)), 3) if self.rmsd else None,
            "ligand_rmsd_max_angstrom": round(float(np.max(self.rmsd)), 3) if self.rmsd else None,
            "hinge_hbond_occupancy": round(float(np.mean(self.hbond)), 3) if self.hbond else None,
            "hinge_residue": self.hinge["label"] if self.hinge is not None else None,
        }
