"""Physical plausibility of docked poses with PoseBusters (Buttenschoen et al. 2024; MIT licence).

A Vina score says nothing about whether its pose is chemically sane: bond
lengths and angles, planarity of aromatic rings and double bonds, internal
clashes, an internal energy far above the ligand's relaxed conformers, atoms
too close to the protein or overlapping it. PoseBusters' ``dock`` checks test
all of these; a campaign runs them on its top poses only (about 1-3 s of CPU per
pose, most of it PoseBusters' reference conformers for the energy check), and
the report and export flag any pose that fails one.

The protein is cut to the residues with an atom within ``pocket_angstrom`` of
any pose atom (once for all poses), which changes no verdict -- every
protein-ligand check looks at close contacts only -- and makes the overlap
checks several times faster than on the whole receptor.

    python -m impeccable.stages.posecheck --receptor data/receptors/4jsv/receptor.pdb --poses hits.sdf
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem

from .errors import StageInputError, exit_code
from .quiet import quiet_rdkit

__all__ = ["PoseCheck", "check_poses", "main"]


@dataclass(frozen=True)
class PoseCheck:
    """PoseBusters' verdict on one pose: passed every check, or the names of those it failed."""

    id: str
    passed: bool
    failed: tuple[str, ...]


def check_poses(
    receptor_pdb: str | Path, poses: Sequence[tuple[str, str]], *, pocket_angstrom: float = 12.0
) -> list[PoseCheck]:
    """Run PoseBusters' ``dock`` checks on (id, molblock) poses against the receptor PDB; one verdict each.

    A pose that cannot be read fails with the check name ``unreadable``. Where PoseBusters itself fails on
    the batch, each pose is checked alone, and one it still fails on gets ``could_not_check_<Error>``: one odd
    pose never costs the others their verdicts, and a run does not retry it forever.
    """
    receptor_pdb = Path(receptor_pdb)
    if not receptor_pdb.is_file():
        raise StageInputError(f"{receptor_pdb}: receptor PDB not found")
    try:
        return _check_together(receptor_pdb, poses, pocket_angstrom)
    except StageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - PoseBusters' own failure, said per pose
        if len(poses) > 1:
            return [
                check for pose in poses for check in check_poses(receptor_pdb, [pose], pocket_angstrom=pocket_angstrom)
            ]
        return [PoseCheck(cid, False, (f"could_not_check_{type(exc).__name__}",)) for cid, _ in poses]


def _check_together(receptor_pdb: Path, poses: Sequence[tuple[str, str]], pocket_angstrom: float) -> list[PoseCheck]:
    mols: list[tuple[str, Chem.Mol | None]] = []
    with quiet_rdkit():
        for cid, block in poses:
            mol = Chem.MolFromMolBlock(block, removeHs=False) if block else None
            mols.append((cid, mol))
        readable = [m for _, m in mols if m is not None]
        if not readable:
            return [PoseCheck(cid, False, ("unreadable",)) for cid, _ in mols]
        pocket = _pocket(receptor_pdb, np.vstack([m.GetConformer().GetPositions() for m in readable]), pocket_angstrom)
        if pocket.GetNumAtoms() == 0:  # PoseBusters fails on an empty protein: say where the poses are instead
            far = f"no_receptor_atom_within_{pocket_angstrom:g}A"
            return [PoseCheck(cid, False, (far,) if mol is not None else ("unreadable",)) for cid, mol in mols]
        from posebusters import PoseBusters  # imports pandas: about 1.5 s, so only here

        table = PoseBusters(config="dock").bust(readable, None, pocket)
    checks = [c for c in table.columns if table[c].dtype == bool]
    verdicts = iter(table[checks].to_dict("records"))
    out = []
    for cid, mol in mols:
        if mol is None:
            out.append(PoseCheck(cid, False, ("unreadable",)))
            continue
        row = next(verdicts)
        failed = tuple(name for name, ok in row.items() if not ok)
        out.append(PoseCheck(cid, not failed, failed))
    return out


def _pocket(receptor_pdb: Path, ligand_xyz: np.ndarray, cutoff: float) -> Chem.Mol:
    """Whole residues with any atom within ``cutoff`` angstrom of the ligand atoms, as one molecule."""
    protein = Chem.MolFromPDBFile(str(receptor_pdb), removeHs=False)
    if protein is None:
        raise StageInputError(f"{receptor_pdb}: RDKit cannot read this PDB file")
    xyz = protein.GetConformer().GetPositions()
    lo, hi = ligand_xyz.min(axis=0) - cutoff, ligand_xyz.max(axis=0) + cutoff
    near = np.where(np.all((xyz >= lo) & (xyz <= hi), axis=1))[0]
    d = np.linalg.norm(xyz[near, None, :] - ligand_xyz[None, :, :], axis=2).min(axis=1)
    keep_res = {_residue(protein.GetAtomWithIdx(int(i))) for i in near[d <= cutoff]}
    drop = [a.GetIdx() for a in protein.GetAtoms() if _residue(a) not in keep_res]
    pocket = Chem.RWMol(protein)
    for idx in sorted(drop, reverse=True):
        pocket.RemoveAtom(idx)
    mol = pocket.GetMol()
    mol.UpdatePropertyCache(strict=False)
    return mol


def _residue(atom: Chem.Atom) -> tuple[str, int, str]:
    info = atom.GetPDBResidueInfo()
    return (info.GetChainId(), info.GetResidueNumber(), info.GetInsertionCode())


def main(argv: list[str] | None = None) -> int:
    """Check every pose of an SDF file; print one JSON object per pose; exit 2 for bad inputs."""
    p = argparse.ArgumentParser(prog="python -m impeccable.stages.posecheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--receptor", required=True, type=Path, help="receptor PDB with hydrogens")
    p.add_argument("--poses", required=True, type=Path, help="SDF of docked poses (their titles are the ids)")
    a = p.parse_args(argv)

    def body() -> None:
        if not a.poses.is_file():
            raise StageInputError(f"{a.poses}: poses file not found")
        supplier = Chem.SDMolSupplier(str(a.poses), removeHs=False)
        poses = [
            (
                (m.GetProp("_Name") if m is not None else f"record {i + 1}"),
                Chem.MolToMolBlock(m) if m is not None else "",
            )
            for i, m in enumerate(supplier)
        ]
        for check in check_poses(a.receptor, poses):
            print(json.dumps({"id": check.id, "passed": check.passed, "failed": list(check.failed)}))

    return exit_code(body)


if __name__ == "__main__":
    raise SystemExit(main())
