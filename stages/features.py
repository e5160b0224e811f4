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

**Sparse rows for screening.** A count fingerprint has ~40 non-zero entries of
2,048, so :func:`featurise_sparse` returns them in CSR form (what RDKit's sparse
count vector gives, without filling a dense row per molecule), and the surrogate
applies its first layer as a weighted sum of 40 weight rows instead of a
2,048-wide product. :func:`featurise` is the same rows made dense (training), so
there is one definition of the features.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from .quiet import quiet_rdkit

__all__ = ["FingerprintSettings", "SparseFeatures", "featurise", "featurise_sparse", "parse_smiles", "RADIUS", "N_BITS"]

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


@dataclass(frozen=True)
class SparseFeatures:
    """Fingerprint rows in CSR form: row i holds ``values[indptr[i]:indptr[i+1]]`` at columns ``indices[...]``."""

    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int64 [nnz], column of each value
    values: np.ndarray  # float32 [nnz], counts capped at 255 (or 1.0 for bits)
    valid: np.ndarray  # bool [n]: False where the SMILES could not be parsed (an empty row)
    n_bits: int

    def dense(self) -> np.ndarray:
        """The rows as a float32 [n, n_bits] matrix."""
        x = np.zeros((len(self.valid), self.n_bits), dtype=np.float32)
        rows = np.repeat(np.arange(len(self.valid)), np.diff(self.indptr))
        x[rows, self.indices] = self.values
        return x


def featurise(
    smiles: Sequence[str], settings: FingerprintSettings = FingerprintSettings()
) -> tuple[np.ndarray, np.ndarray]:
    """Return (X float32 [n, n_bits], valid bool [n]); invalid SMILES give zero rows and valid=False."""
    features = featurise_sparse(smiles, settings)
    return features.dense(), features.valid


def featurise_sparse(smiles: Sequence[str], settings: FingerprintSettings = FingerprintSettings()) -> SparseFeatures:
    """The fingerprint rows of ``smiles`` in CSR form (see :class:`SparseFeatures`); never raises for a SMILES."""
    if settings.sanitize not in ("fast", "full"):
        raise ValueError(f"FingerprintSettings.sanitize: 'fast' or 'full', got {settings.sanitize!r}")
    generator = _generator(settings.radius, settings.n_bits, settings.bond_types)
    count_fp, bit_fp = generator.GetCountFingerprint, generator.GetFingerprint
    counts, full = settings.counts, settings.sanitize == "full"
    indptr, indices, values = array("q", [0]), array("q"), array("f")
    valid = np.zeros(len(smiles), dtype=bool)
    with quiet_rdkit():
        for i, s in enumerate(smiles):
            mol = parse_smiles(s, full=full)
            if mol is not None:
                if counts:
                    nonzero = count_fp(mol).GetNonzeroElements()  # {column: count}, already folded to n_bits
                    indices.extend(nonzero.keys())
                    values.extend(nonzero.values())
                else:
                    on = bit_fp(mol).GetOnBits()
                    indices.extend(on)
                    values.extend([1.0] * len(on))
                valid[i] = True
            indptr.append(len(indices))
    out = np.frombuffer(values, dtype=np.float32).copy() if values else np.zeros(0, dtype=np.float32)
    if counts:
        np.minimum(out, 255.0, out=out)
    return SparseFeatures(
        np.frombuffer(indptr, dtype=np.int64).copy(),
        np.frombuffer(indices, dtype=np.int64).copy() if indices else np.zeros(0, dtype=np.int64),
        out,
        valid,
        settings.n_bits,
    )


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
