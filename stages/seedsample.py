"""The seed sample: the compounds docked before the surrogate's first training, drawn three ways.

- ``random``: a uniform sample of the whole library (reservoir sampling, as
  :func:`.library.sample_records`).
- ``diverse``: MaxMin picking (RDKit's ``MaxMinPicker.LazyBitVectorPick``) on
  ECFP4 (Morgan radius 2, 2048 bits) Tanimoto distances, over a uniform
  reservoir of ``max(20 n, 2000)`` compounds (at most 20,000): the seed spreads
  over chemical space instead of following the library's densest series.
- ``stratified``: the reservoir cut into 8 equal-width bins of heavy-atom count
  (Vina's score grows with size, so size is the property that most shapes the
  surrogate's first view of the scores), the same number drawn from each bin
  (a bin with too few gives all it has; the rest go to the others), so small
  and large compounds are seen as well as the common mid-sized ones.

All three are reproducible: the same records, n and seed give the same sample.
The functions on SMILES lists (``*_indices``) serve the offline retrieval
benchmark (stages/evaluate.py), which measures each strategy's recall.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np

from .library import LibraryRecord, sample_records

__all__ = ["STRATEGIES", "seed_sample", "pick_indices", "reservoir_size"]

STRATEGIES = ("random", "diverse", "stratified")
BINS = 8
R = TypeVar("R", bound=LibraryRecord)


def reservoir_size(n: int) -> int:
    return min(max(20 * n, 2000), 20_000)


def seed_sample(records: Iterable[R], n: int, *, seed: int, strategy: str = "random") -> list[R]:
    """``n`` records of the stream by ``strategy``, in stream order."""
    if strategy not in STRATEGIES:
        raise ValueError(f"seed strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if strategy == "random":
        return sample_records(records, n, seed=seed)  # type: ignore[return-value]
    pool = sample_records(records, reservoir_size(n), seed=seed)
    picked = pick_indices([rec.smiles for rec in pool], n, seed=seed, strategy=strategy)
    return [pool[i] for i in sorted(picked)]  # type: ignore[misc]


def pick_indices(
    smiles: Sequence[str], n: int, *, seed: int, strategy: str, among: Sequence[int] | None = None
) -> list[int]:
    """Indices of ``n`` of ``smiles`` (restricted to ``among`` if given) picked by ``strategy``."""
    candidates = list(range(len(smiles))) if among is None else list(among)
    if n >= len(candidates):
        return candidates
    if strategy == "random":
        return random.Random(seed).sample(candidates, n)
    if strategy == "diverse":
        return _maxmin(smiles, candidates, n, seed)
    if strategy == "stratified":
        return _stratified(smiles, candidates, n, seed)
    raise ValueError(f"seed strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")


def _maxmin(smiles: Sequence[str], candidates: list[int], n: int, seed: int) -> list[int]:
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator
    from rdkit.SimDivFilters import rdSimDivPickers

    from .quiet import quiet_rdkit

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps, index = [], []
    with quiet_rdkit():
        for i in candidates:
            mol = Chem.MolFromSmiles(smiles[i])
            if mol is not None:
                fps.append(generator.GetFingerprint(mol))
                index.append(i)
    if n >= len(index):
        return index
    picks = rdSimDivPickers.MaxMinPicker().LazyBitVectorPick(fps, len(fps), n, seed=seed)
    return [index[p] for p in picks]


def _stratified(smiles: Sequence[str], candidates: list[int], n: int, seed: int) -> list[int]:
    from rdkit import Chem

    from .quiet import quiet_rdkit

    sizes, index = [], []
    with quiet_rdkit():
        for i in candidates:
            mol = Chem.MolFromSmiles(smiles[i])
            if mol is not None:
                sizes.append(mol.GetNumHeavyAtoms())
                index.append(i)
    if n >= len(index):
        return index
    values = np.asarray(sizes, dtype=float)
    edges = np.linspace(values.min(), values.max() + 1e-9, BINS + 1)
    bins = [list(np.flatnonzero((values >= lo) & (values < hi))) for lo, hi in zip(edges[:-1], edges[1:])]
    rng = random.Random(seed)
    for members in bins:
        rng.shuffle(members)
    picked: list[int] = []
    while len(picked) < n:  # round-robin over the bins: equal shares, a short bin's rest to the others
        for members in bins:
            if members and len(picked) < n:
                picked.append(index[members.pop()])
    return picked
