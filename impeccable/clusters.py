"""Chemotype clusters of ranked hits, and a diverse top N with one compound per cluster.

Fingerprints are ECFP4 (RDKit Morgan, radius 2, 2,048 bits); clusters come
from Butina's sphere-exclusion algorithm (Butina 1999, RDKit's implementation)
on Tanimoto distances. Two compounds are neighbours when their Tanimoto
similarity is at least ``DEFAULT_SIMILARITY`` = 0.4 (distance cutoff 0.6):
a common choice for ECFP4, below which pairs rarely share a scaffold; it is a
setting (``[hits] cluster_similarity``), not a law. A cluster's
representative in the diverse table is its best-ranked member, not Butina's
centroid: for picking compounds to buy, the best-scored member of each
chemotype is the one to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_SIMILARITY = 0.4
RADIUS, BITS = 2, 2048  # ECFP4


@dataclass(frozen=True)
class Membership:
    cluster: int  # 1 is the cluster of the best-ranked compound, 2 the next new one, ...
    size: int
    representative: bool  # the best-ranked member of its cluster


def butina_clusters(ranked: Sequence[tuple[str, str]], similarity: float = DEFAULT_SIMILARITY) -> dict[str, Membership]:
    """id -> cluster for each (id, SMILES), given best first; unparsable SMILES get a cluster of their own."""
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator
    from rdkit.ML.Cluster import Butina

    if not 0 < similarity <= 1:
        raise ValueError(f"cluster similarity {similarity!r}: must be > 0 and <= 1")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=RADIUS, fpSize=BITS)
    fps = []
    for _, smiles in ranked:
        mol = Chem.MolFromSmiles(smiles)
        fps.append(generator.GetFingerprint(mol) if mol is not None else None)
    valid = [i for i, fp in enumerate(fps) if fp is not None]
    distances: list[float] = []  # lower triangle, as Butina.ClusterData wants it
    for n in range(1, len(valid)):
        sims = DataStructs.BulkTanimotoSimilarity(fps[valid[n]], [fps[valid[m]] for m in range(n)])
        distances.extend(1.0 - s for s in sims)
    groups = [
        [valid[i] for i in g]
        for g in Butina.ClusterData(distances, len(valid), 1.0 - similarity, isDistData=True, reordering=True)
    ]
    groups += [[i] for i, fp in enumerate(fps) if fp is None]
    groups.sort(key=min)  # numbered by their best-ranked member
    out: dict[str, Membership] = {}
    for number, members in enumerate(groups, start=1):
        best = min(members)
        for i in members:
            out[ranked[i][0]] = Membership(number, len(members), i == best)
    return out


def diverse_pick(
    ranked_ids: Sequence[str], clusters: dict[str, Membership], n: int, keep: set[str] | None = None
) -> list[str]:
    """The best-ranked compound of each cluster, in rank order, at most ``n``; with ``keep``, only those
    ids are eligible (e.g. poses that make the hinge H-bond), so a cluster is represented by its best
    eligible member."""
    seen: set[int] = set()
    picked: list[str] = []
    for cid in ranked_ids:
        member = clusters.get(cid)
        if member is None or member.cluster in seen or (keep is not None and cid not in keep):
            continue
        seen.add(member.cluster)
        picked.append(cid)
        if len(picked) == n:
            break
    return picked
