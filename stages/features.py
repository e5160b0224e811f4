"""Molecular features for the surrogate: Morgan (ECFP4-like) count fingerprints as float32 arrays.

Counts, not bits, and ``log1p`` of them: the model sees how many of a
substructure a molecule has without large counts dominating. Unparsable
SMILES give a row of zeros and ``False`` in the validity mask, never an exception,
so one bad line cannot stop inference over a library.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdFingerprintGenerator

RADIUS = 2
N_BITS = 2048


@lru_cache(maxsize=4)
def _generator(radius: int, n_bits: int) -> rdFingerprintGenerator.FingerprintGenerator64:
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def featurize(smiles: Sequence[str], radius: int = RADIUS, n_bits: int = N_BITS) -> tuple[np.ndarray, np.ndarray]:
    """(features [n, n_bits] float32, valid [n] bool) for a batch of SMILES."""
    RDLogger.DisableLog("rdApp.*")
    gen = _generator(radius, n_bits)
    features = np.zeros((len(smiles), n_bits), dtype=np.float32)
    valid = np.zeros(len(smiles), dtype=bool)
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            continue
        features[i] = gen.GetCountFingerprintAsNumPy(mol)
        valid[i] = True
    np.log1p(features, out=features)
    return features, valid
