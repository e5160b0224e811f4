"""GAFF2 atom types and AM1-BCC charges for a ligand, by antechamber and parmchk2, cached per compound.

Why these tools: GAFF2/AM1-BCC is what MM/PBSA studies (ESMACS among them)
use for ligands, and antechamber is the program that defines it, so the
parameters are never re-implemented here. AM1-BCC costs tens of seconds of
CPU per drug-sized ligand (an AM1 geometry optimisation in sqm), so the result
is cached per compound: the key is the canonical isomeric SMILES with formal
charges, the net charge and the tool versions, never the pose, so a resumed
run, another round or another pose of the same compound reuses it.

The net charge is the sum of the prepared molecule's formal charges (docking
writes protonated poses with charges). A charge that leaves an odd number of
electrons, an atom GAFF2 cannot type, a parameter parmchk2 cannot estimate, or
an antechamber/sqm failure raises LigandParameterError naming the compound.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem

from . import amber
from .errors import StageInputError

__all__ = ["LigandParameterError", "LigandParameters", "parameterise", "net_charge", "cache_key", "mol2_for_pose"]

FORCEFIELD = "gaff2"
CHARGE_MODEL = "am1bcc"
RESIDUE = "LIG"
_RECIPE = 2  # bump when the way parameters are made changes: old cache entries are then ignored
_FILES = ("ligand.mol", "ligand.mol2", "ligand.frcmod", "info.json")


class LigandParameterError(StageInputError):
    """This compound cannot get GAFF2/AM1-BCC parameters; the message names it and the reason."""


@dataclass(frozen=True)
class LigandParameters:
    """One compound's GAFF2 parameters: files in ``folder``, atoms in ``ligand.mol``'s order."""

    name: str
    folder: Path
    key: str
    net_charge: int
    smiles: str
    from_cache: bool
    am1bcc_cpu_seconds: float  # antechamber + sqm CPU time when the entry was made
    am1bcc_wall_seconds: float

    @property
    def mol2(self) -> Path:
        return self.folder / "ligand.mol2"

    @property
    def frcmod(self) -> Path:
        return self.folder / "ligand.frcmod"

    @property
    def template(self) -> Chem.Mol:
        """The molecule antechamber saw (explicit H): defines the atom order of the mol2."""
        return Chem.MolFromMolFile(str(self.folder / "ligand.mol"), removeHs=False)


def net_charge(mol: Chem.Mol, name: str) -> int:
    """Sum of formal charges, checked to leave a closed shell (AM1-BCC needs an even electron count)."""
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        raise LigandParameterError(f"ligand {name}: has radical electrons; AM1-BCC needs a closed-shell molecule")
    if any(a.GetTotalNumHs(includeNeighbors=False) for a in mol.GetAtoms()):
        raise LigandParameterError(f"ligand {name}: hydrogens must be explicit atoms (a protonated pose)")
    charge = sum(a.GetFormalCharge() for a in mol.GetAtoms())
    electrons = sum(a.GetAtomicNum() for a in mol.GetAtoms()) - charge
    if electrons % 2:
        raise LigandParameterError(
            f"ligand {name}: net charge {charge:+d} (sum of formal charges) leaves {electrons} electrons, "
            "an odd number; the protonation state or the charges are wrong"
        )
    return charge


def cache_key(mol: Chem.Mol, charge: int) -> tuple[str, str]:
    """(key, canonical isomeric SMILES): what the parameters depend on, and nothing about the pose."""
    heavy = Chem.RemoveHs(mol)
    Chem.AssignStereochemistryFrom3D(heavy)
    smiles = Chem.MolToSmiles(heavy, isomericSmiles=True)
    return hashlib.sha256(json.dumps(_recipe(smiles, charge), sort_keys=True).encode()).hexdigest()[:24], smiles


def _recipe(smiles: str, charge: int) -> dict[str, object]:
    """Everything the parameters of a molecule depend on: hashed into its cache key, and kept in info.json."""
    return {
        "smiles": smiles,
        "net_charge": charge,
        "forcefield": FORCEFIELD,
        "charges": CHARGE_MODEL,
        "amber": amber.version(),
        "recipe": _RECIPE,
    }


def parameterise(mol: Chem.Mol, name: str, cache_dir: Path | None = None) -> LigandParameters:
    """GAFF2/AM1-BCC parameters of ``mol`` (explicit H, 3D), from ``cache_dir`` when made before.

    Without ``cache_dir`` the files go to a fresh temporary folder (left for the
    caller to read). Raises LigandParameterError naming ``name``.
    """
    charge = net_charge(mol, name)
    key, smiles = cache_key(mol, charge)
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        entry = cache_dir / key
        if all((entry / f).is_file() for f in _FILES):
            info = json.loads((entry / "info.json").read_text())
            return LigandParameters(
                name, entry, key, charge, smiles, True, info["am1bcc_cpu_seconds"], info["am1bcc_wall_seconds"]
            )
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
    try:
        cost = _make(mol, name, charge, work)
        (work / "info.json").write_text(
            json.dumps(
                {
                    **_recipe(smiles, charge),
                    "am1bcc_cpu_seconds": round(cost.cpu_seconds, 2),
                    "am1bcc_wall_seconds": round(cost.wall_seconds, 2),
                    "first_compound": name,
                },
                indent=1,
            )
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if cache_dir is None:
        return LigandParameters(name, work, key, charge, smiles, False, cost.cpu_seconds, cost.wall_seconds)
    try:
        os.rename(work, entry)  # atomic: a concurrent task sees all files or none
    except OSError:  # another task made the same entry meanwhile; theirs is as good
        shutil.rmtree(work, ignore_errors=True)
    return LigandParameters(name, entry, key, charge, smiles, False, cost.cpu_seconds, cost.wall_seconds)


def mol2_for_pose(params: LigandParameters, pose: Chem.Mol) -> str:
    """The cached mol2 with this pose's coordinates, atoms matched onto the cached order by graph."""
    template = params.template
    match = pose.GetSubstructMatch(template)
    if len(match) != template.GetNumAtoms() or pose.GetNumAtoms() != template.GetNumAtoms():
        raise LigandParameterError(
            f"ligand {params.name}: its atoms do not match the cached parameters {params.folder} "
            "(same SMILES, different hydrogens?)"
        )
    xyz = pose.GetConformer().GetPositions()[list(match)]
    return _rewrite_atoms(params.mol2.read_text(), xyz=xyz)


# --------------------------------------------------------------------------- making an entry


def _make(mol: Chem.Mol, name: str, charge: int, work: Path) -> amber.ToolRun:
    """antechamber (AM1-BCC, GAFF2 types) then parmchk2 in ``work``; return antechamber's run (its cost)."""
    try:
        return _run_tools(mol, name, charge, work)
    except amber.AmberToolError as exc:  # the tool's own words, as a failure of this compound
        raise LigandParameterError(str(exc)) from exc


def _run_tools(mol: Chem.Mol, name: str, charge: int, work: Path) -> amber.ToolRun:
    Chem.MolToMolFile(mol, str(work / "ligand.mol"), kekulize=True)
    what = f"ligand {name}"
    cost = amber.run(
        "antechamber",
        [
            "-i",
            "ligand.mol",
            "-fi",
            "mdl",
            "-o",
            "ligand.mol2",
            "-fo",
            "mol2",
            "-c",
            "bcc",
            "-at",
            FORCEFIELD,
            "-nc",
            str(charge),
            "-rn",
            RESIDUE,
            "-pf",
            "y",
        ],
        work,
        what,
        logs=("sqm.out",),
    )
    types, charges = _mol2_atoms(work / "ligand.mol2", what)
    if len(types) != mol.GetNumAtoms():
        raise LigandParameterError(f"{what}: antechamber wrote {len(types)} atoms for {mol.GetNumAtoms()}")
    untyped = [f"{mol.GetAtomWithIdx(i).GetSymbol()}{i + 1}" for i, t in enumerate(types) if t.upper() == "DU"]
    if untyped:
        raise LigandParameterError(f"{what}: GAFF2 has no atom type for {', '.join(untyped)} (antechamber typed DU)")
    residual = charge - sum(charges)
    if abs(residual) > 0.01:
        raise LigandParameterError(f"{what}: AM1-BCC charges sum to {sum(charges):.4f}, expected {charge:+d}")
    _set_mol2_charges(work / "ligand.mol2", [q + residual / len(charges) for q in charges])
    parmchk(work, what)
    for leftover in work.iterdir():
        if leftover.name not in _FILES:
            leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover, ignore_errors=True)
    return cost


def parmchk(folder: Path, what: str) -> None:
    """``ligand.frcmod``: the GAFF2 parameters ``ligand.mol2`` needs that gaff2.dat lacks.

    gaff2.dat is named with ``-p``: with ``-s gaff2``, parmchk2 of AmberTools
    26 (the PyPI build) sometimes ignores atom types such as ``ns`` and copies
    other types' parameters over gaff2's own: a different frcmod for the same
    input (9 of 13 ligands tried, in 1 to 5 runs of 10). With ``-p`` it was the
    same, right, file in every run.
    """
    gaff2_dat = amber.data_file(f"leap/parm/{FORCEFIELD}.dat")
    amber.run(
        "parmchk2", ["-i", "ligand.mol2", "-f", "mol2", "-o", "ligand.frcmod", "-p", str(gaff2_dat)], folder, what
    )
    missing = [ln.split("  ")[0] for ln in (folder / "ligand.frcmod").read_text().splitlines() if "ATTN" in ln]
    if missing:
        raise LigandParameterError(f"{what}: parmchk2 found no GAFF2 parameters for {', '.join(missing[:5])}")


def _mol2_atoms(path: Path, what: str) -> tuple[list[str], list[float]]:
    """GAFF2 atom types and charges from a mol2 file's ATOM rows."""
    if not path.is_file():
        raise LigandParameterError(f"{what}: antechamber wrote no mol2 file")
    rows = [f for _, f in _atom_rows(path.read_text().splitlines())]
    return [f[5] for f in rows], [float(f[8]) for f in rows]


def _set_mol2_charges(path: Path, charges: list[float]) -> None:
    """Rewrite the charge column: antechamber's AM1-BCC sums miss the net charge by ~1e-3 e."""
    path.write_text(_rewrite_atoms(path.read_text(), charges=charges))


def _atom_rows(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each row of a mol2 file's ATOM section."""
    rows, inside = [], False
    for n, line in enumerate(lines):
        if line.startswith("@<TRIPOS>"):
            inside = line.strip() == "@<TRIPOS>ATOM"
        elif inside and line.strip():
            rows.append((n, line.split()))
    return rows


def _rewrite_atoms(text: str, xyz=None, charges: list[float] | None = None) -> str:
    """A mol2 text with new coordinates (angstrom) and/or charges, everything else kept."""
    lines = text.splitlines()
    for i, (n, f) in enumerate(_atom_rows(lines)):
        x, y, z = (float(v) for v in f[2:5]) if xyz is None else xyz[i]
        q = float(f[8]) if charges is None else charges[i]
        lines[n] = f"{f[0]:>7} {f[1]:<8}{x:>11.4f}{y:>11.4f}{z:>11.4f} {f[5]:<6}{f[6]:>4} {f[7]:<6}{q:>13.9f}"
    return "\n".join(lines) + "\n"
