"""A docking target: the prepared protein files and the binding site box.

A receptor folder (see ``data/receptors/4jsv/``) holds

- ``receptor.pdb``: the protein, fixed and hydrogenated (the MD stage loads it),
- ``receptor.pdbqt``: the same protein with Vina atom types (the docking stage),
- ``site.toml``: ``center = [x, y, z]`` and ``size = [x, y, z]`` in angstrom,
  plus provenance keys, and optionally ``reference_ligand`` (an SDF file name),
- optionally ``heterogens.toml`` (``stages/metals.py``): every heterogen of the
  source structure near the box and its fate under ``metals = auto|keep|remove``.
  ``receptor.pdb``/``.pdbqt`` hold the protein alone; the metal ions a mode
  keeps are added to the docking receptor at load time.

Loading validates what would otherwise fail late and obscurely inside Vina or
OpenMM: a file that is not a protein, or a box that does not touch the protein.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StageInputError
from .metals import Heterogen, kept_metals, metal_pdbqt_lines, read_provenance

__all__ = ["BindingSite", "Receptor", "load_receptor", "load_site", "read_protein_coordinates"]

MIN_RESIDUES = 20  # fewer amino acids than this is a peptide or a ligand, not a docking target
MAX_CENTRE_DISTANCE_ANGSTROM = 8.0  # a pocket centre lies within a few angstrom of protein atoms
MAX_BOX_SIDE_ANGSTROM = 126.0  # a docking box larger than this is a blind-docking mistake

AMINO_ACIDS = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL "
    "HID HIE HIP HSD HSE HSP CYX CYM ASH GLH LYN MSE SEC PYL".split()
)


@dataclass(frozen=True)
class BindingSite:
    """A docking box: centre and edge lengths in angstrom, and where it came from."""

    center_angstrom: tuple[float, float, float]
    size_angstrom: tuple[float, float, float]
    source: Path | None = None  # the site file, named in error messages
    metadata: dict[str, object] = field(default_factory=dict)  # pdb_id, chain, ligand ids, ...


@dataclass(frozen=True)
class Receptor:
    """A prepared protein target with its binding site."""

    name: str
    pdb_path: Path  # hydrogenated protein, for MD (OpenMM amber14)
    pdbqt_path: Path  # Vina-typed protein, for docking
    site: BindingSite
    reference_ligand_path: Path | None = None  # co-crystal ligand (SDF), for redocking checks
    metals: str = "auto"  # the metals mode the docking receptor was built with
    heterogens: tuple[Heterogen, ...] = ()  # everything near the box in the source structure (heterogens.toml)
    kept_metals: tuple[Heterogen, ...] = ()  # the metal ions in pdbqt_path under ``metals``


def load_receptor(
    directory: str | os.PathLike[str], *, site_file: str | os.PathLike[str] | None = None, metals: str = "auto"
) -> Receptor:
    """Load and validate a receptor folder; ``site_file`` overrides ``<directory>/site.toml``.

    ``metals`` picks the metal ions of ``heterogens.toml`` the docking receptor keeps; when it keeps
    any, ``pdbqt_path`` is a copy of ``receptor.pdbqt`` with them added (in the temporary folder).

    Raises StageInputError naming the file for a missing file, a PDB or PDBQT
    that is not a protein, or a box whose centre is far from every protein atom.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise StageInputError(f"{directory}: receptor folder not found")
    pdb, pdbqt = directory / "receptor.pdb", directory / "receptor.pdbqt"
    site = load_site(Path(site_file) if site_file is not None else directory / "site.toml")
    protein_xyz = read_protein_coordinates(pdbqt)
    read_protein_coordinates(pdb)
    _check_site_on_protein(site, protein_xyz)
    reference = site.metadata.get("reference_ligand")
    reference_path = directory / str(reference) if reference else None
    if reference_path is not None and not reference_path.is_file():
        raise StageInputError(f"{site.source}: reference_ligand {reference!r} not found in {directory}")
    heterogens = read_provenance(directory / "heterogens.toml")
    kept = kept_metals(heterogens, metals)
    if kept:
        pdbqt = _with_metals(pdbqt, kept)
    return Receptor(directory.name, pdb, pdbqt, site, reference_path, metals, tuple(heterogens), tuple(kept))


def _with_metals(pdbqt: Path, metals: list[Heterogen]) -> Path:
    """``receptor.pdbqt`` plus the kept metal ions, written once per content in the temporary folder."""
    text = pdbqt.read_text(encoding="utf-8").rstrip("\n")
    text = "\n".join([*[line for line in text.splitlines() if line.strip() != "END"], *metal_pdbqt_lines(metals)])
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / "impeccable-receptors" / f"{pdbqt.parent.name}-metals-{digest}.pdbqt"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, out)
    return out


def load_site(path: str | os.PathLike[str]) -> BindingSite:
    """Read a site TOML file: ``center`` and ``size`` (three numbers each, angstrom)."""
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"{path}: site file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StageInputError(f"{path}: not valid TOML: {exc}") from None
    center = _vector(data, "center", path)
    size = _vector(data, "size", path)
    for v in size:
        if not 0 < v <= MAX_BOX_SIDE_ANGSTROM:
            raise StageInputError(
                f"{path}: size {list(size)} angstrom: each side must be > 0 and <= {MAX_BOX_SIDE_ANGSTROM}"
            )
    metadata = {k: v for k, v in data.items() if k not in ("center", "size")}
    return BindingSite(center, size, path, metadata)


def read_protein_coordinates(path: str | os.PathLike[str]) -> np.ndarray:
    """Heavy-atom coordinates (N x 3, angstrom) of the amino-acid residues of a PDB or PDBQT file.

    Raises StageInputError naming the file when it is missing, unreadable or holds
    fewer than MIN_RESIDUES amino-acid residues (i.e. it is not a protein).
    """
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"{path}: receptor file not found")
    xyz: list[tuple[float, float, float]] = []
    residues: set[tuple[str, str]] = set()
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.startswith(("ATOM", "HETATM")) or len(line) < 54:
                    continue
                if line[17:20].strip() not in AMINO_ACIDS:
                    continue
                name = line[12:16].strip()
                if name.startswith("H") or (line[12] in "0123456789" and name[1:2] == "H"):
                    continue
                residues.add((line[21], line[22:27]))
                xyz.append((float(line[30:38]), float(line[38:46]), float(line[46:54])))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StageInputError(f"{path}: not a readable PDB/PDBQT file: {exc}") from None
    if len(residues) < MIN_RESIDUES:
        raise StageInputError(
            f"{path}: not a protein: {len(residues)} amino-acid residues in ATOM/HETATM records "
            f"(a receptor needs at least {MIN_RESIDUES})"
        )
    return np.asarray(xyz, dtype=float)


# --------------------------------------------------------------------------- helpers


def _vector(data: dict[str, object], key: str, path: Path) -> tuple[float, float, float]:
    value = data.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise StageInputError(f"{path}: {key!r} must be three numbers [x, y, z] in angstrom, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _check_site_on_protein(site: BindingSite, protein_xyz: np.ndarray) -> None:
    centre = np.asarray(site.center_angstrom)
    nearest = float(np.sqrt(((protein_xyz - centre) ** 2).sum(axis=1)).min())
    if nearest > MAX_CENTRE_DISTANCE_ANGSTROM:
        raise StageInputError(
            f"{site.source}: box centre {list(site.center_angstrom)} is {nearest:.1f} angstrom from the "
            f"nearest protein atom (at most {MAX_CENTRE_DISTANCE_ANGSTROM} allowed): the box is outside the protein"
        )
