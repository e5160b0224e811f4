"""Morgan fingerprints as float32 matrices: the same molecule gives the same row however it is written.

Two choices make fingerprints independent of how a SMILES is written while
keeping the fast parse that screening millions of molecules needs:

- **No bond types in the atom environments** (``bond_types=False``, the
  default). With the fast parse (the SMILES as written, valences checked, rings
  found, no aromaticity perception) a Kekule SMILES has single and double ring
  bonds where an aromatic one has aromatic bonds, so fingerprints with bond
  types differ for 98% of molecules between the two spellings. Morgan's atom
  invariants (element, heavy degree, hydrogens, charge, isotope, ring
  membership) do not depend on the spelling, and the hydrogen counts still
  separate single from double bonds in almost every drug-like environment.
  Re-perceiving aromaticity instead costs 2-3x the fingerprint (full
  sanitisation), and a cheaper perception on fast-found rings was itself
  order-dependent (453 of 2,000 MOSES molecules).
- **Salts and counterions stripped**: a SMILES with several fragments goes
  through ``ligands.parent_molecule`` (largest organic fragment, neutralised),
  the same parent the filters and docking use. Single-fragment SMILES (almost
  every library entry) skip it.

Measured on 2,000 MOSES molecules written eight ways each (canonical aromatic,
canonical Kekule, three random aromatic and three random Kekule orders): every
molecule gets one fingerprint (tests/test_stage_surrogate.py checks three
writings). ``sanitize="full"`` (RDKit's full sanitisation) remains available;
``bond_types=True`` with ``sanitize="full"`` gives the classic ECFP-like count
fingerprint. A model file records its settings, and inference uses them.

An invalid SMILES never raises: its row is all zeros and ``valid`` is False.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from .quiet import quiet_rdkit

__all__ = ["FingerprintSettings", "featurise", "parse_smiles", "RADIUS", "N_BITS"]

RADIUS = 2
N_BITS = 2048


@dataclass(frozen=True)
class FingerprintSettings:
    """What a fingerprint row means; stored with a model so inference matches training."""

    radius: int = RADIUS
    n_bits: int = N_BITS
    counts: bool = True  # counts (capped at 255) rather than on/off bits
    sanitize: str = "fast"  # "fast" or "full", see module doc
    bond_types: bool = False  # bond orders in the environments (writing-dependent with "fast")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FingerprintSettings:
        """Settings saved with a model; files from before ``bond_types`` existed used bond types."""
        return cls(**{"bond_types": True, **data})  # type: ignore[arg-type]


def featurise(
    smiles: Sequence[str], settings: FingerprintSettings = FingerprintSettings()
) -> tuple[np.ndarray, np.ndarray]:
    """Return (X float32 [n, n_bits], valid bool [n]); invalid SMILES give zero rows and valid=False."""
    if settings.sanitize not in ("fast", "full"):
        raise ValueError(f"FingerprintSettings.sanitize: 'fast' or 'full', got {settings.sanitize!r}")
    generator = _generator(settings.radius, settings.n_bits, settings.bond_types)
    as_numpy = generator.GetCountFingerprintAsNumPy if settings.counts else generator.GetFingerprintAsNumPy
    x = np.zeros((len(smiles), settings.n_bits), dtype=np.float32)
    valid = np.zeros(len(smiles), dtype=bool)
    full = settings.sanitize == "full"
    with quiet_rdkit():
        for i, s in enumerate(smiles):
            mol = parse_smiles(s, full=full)
            if mol is not None:
                x[i] = as_numpy(mol)
                valid[i] = True
    if settings.counts:
        np.minimum(x, 255.0, out=x)
    return x, valid


def parse_smiles(smiles: str, *, full: bool = False) -> Chem.Mol | None:
    """A molecule ready for Morgan fingerprints (salts stripped), or None if unusable (never raises)."""
    if not smiles:
        return None
    if "." in smiles:  # several fragments: the parent, as filters and docking see it
        from .ligands import strip_salts

        parent = strip_salts(smiles)
        return None if parent is None else parse_smiles(Chem.MolToSmiles(parent), full=full)
    if full:
        return Chem.MolFromSmiles(smiles)
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    try:
        mol.UpdatePropertyCache(strict=True)  # implicit H counts; rejects impossible valences
    except Exception:
        return None
    Chem.FastFindRings(mol)
    return mol


@lru_cache(maxsize=8)
def _generator(radius: int, n_bits: int, bond_types: bool) -> rdFingerprintGenerator.FingerprintGenerator64:
    bonds = rdFingerprintGenerator.GetMorganBondInvGen(useBondTypes=bond_types)
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits, bondInvariantsGenerator=bonds)
