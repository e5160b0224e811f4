"""Property-matched decoys for a set of actives, by the DUD-E protocol (Mysinger et al., J. Med. Chem. 2012, 55, 6582).

Why: a user with only actives cannot measure enrichment, and random library compounds as decoys
make it too easy (actives are bigger and more polar than the average library compound, and Vina
rewards size). DUD-E's answer, followed here: for each active pick decoys from a compound pool that

1. match its physico-chemical properties -- molecular weight, Crippen logP, rotatable bonds, H-bond
   donors and acceptors (Lipinski's definitions, RDKit) and net charge at pH 7.4 (the dominant
   protomer of :func:`ligands.protomers`) -- inside windows that start narrow (MW +/- 20 Da, logP
   +/- 0.4, rotatable bonds, donors and acceptors +/- 1, charge equal) and widen step by step
   (x1.5 per step, integer windows + 1, charge never) until enough candidates remain, as DUD-E does;
2. are topologically unlike *every* active: ECFP4 (Morgan radius 2, 2048 bits) Tanimoto < 0.3,
   so that a decoy is unlikely to be an unknown active.

Among the candidates, the closest in scaled property distance are taken; no decoy serves two actives.
Deterministic: ties in distance go to the pool's file order.

    python -m impeccable.stages.decoys --actives actives.smi --pool data/library/moses_20k.csv \\
        --per-active 20 --out decoys.smi
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StageInputError, exit_code
from .library import LibraryRecord, read_library

__all__ = ["PROPERTIES", "DecoySet", "properties", "make_decoys", "main"]

PROPERTIES = ("mw", "logp", "rotatable_bonds", "hbd", "hba", "net_charge")
WINDOWS = np.array([20.0, 0.4, 1, 1, 1, 0])  # first window, per property (charge must be equal)
SCALE = np.array([20.0, 0.4, 1, 1, 1])  # the distance is Euclidean over the five fast properties in these units
WIDEN = 1.5
MAX_TC = 0.3


@dataclass(frozen=True)
class DecoySet:
    """Decoys per active and how well they match; ``unmatched`` lists actives that got fewer than asked."""

    decoys: dict[str, list[LibraryRecord]]  # active id -> its decoys
    active_properties: dict[str, tuple[float, ...]]
    decoy_properties: dict[str, tuple[float, ...]]
    unmatched: dict[str, int]  # active id -> how many decoys it got, where fewer than asked
    max_tanimoto: float  # the highest ECFP4 Tanimoto of any decoy to any active

    def summary(self) -> dict[str, object]:
        """Median absolute property difference between each decoy and its active, and the counts."""
        diffs = [
            np.abs(np.array(self.decoy_properties[d.id]) - np.array(self.active_properties[a]))
            for a, ds in self.decoys.items()
            for d in ds
        ]
        med = np.median(diffs, axis=0) if diffs else np.full(len(PROPERTIES), np.nan)
        return {
            "actives": len(self.decoys),
            "decoys": sum(len(d) for d in self.decoys.values()),
            "median_abs_difference": dict(zip(PROPERTIES, (round(float(x), 3) for x in med))),
            "max_ecfp4_tanimoto_to_any_active": round(self.max_tanimoto, 3),
            "actives_with_fewer_decoys": self.unmatched,
        }


def properties(smiles: str) -> tuple[tuple[float, ...], object] | None:
    """(the six matched properties, ECFP4 fingerprint) of a compound's parent at pH 7.4; None if unusable."""
    got = _neutral_properties(smiles)
    if got is None:
        return None
    values, fp, mol = got
    return (*values, float(net_charge(mol))), fp


def _neutral_properties(smiles: str) -> tuple[tuple[float, ...], object, object] | None:
    """The five properties that need no protonation (fast), the ECFP4 fingerprint and the parent molecule."""
    from rdkit.Chem import Crippen, Descriptors, Lipinski, rdFingerprintGenerator

    from .ligands import strip_salts

    mol = strip_salts(smiles)
    if mol is None:
        return None
    values = (
        Descriptors.MolWt(mol),
        Crippen.MolLogP(mol),
        Lipinski.NumRotatableBonds(mol),
        Lipinski.NumHDonors(mol),
        Lipinski.NumHAcceptors(mol),
    )
    fp = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048).GetFingerprint(mol)
    return tuple(float(v) for v in values), fp, mol


def net_charge(mol: object) -> int:
    """Formal charge of the dominant protomer at pH 7.4 (dimorphite-dl, ~50 ms: computed only where needed)."""
    from rdkit import Chem

    from .ligands import protomers

    try:
        charged = Chem.MolFromSmiles(protomers(Chem.MolToSmiles(mol), max_protomers=1)[0])
    except Exception:  # noqa: BLE001 -- dimorphite failing on one compound: its neutral form counts
        charged = None
    return Chem.GetFormalCharge(charged if charged is not None else mol)


def make_decoys(
    actives: Sequence[LibraryRecord], pool: Sequence[LibraryRecord], *, per_active: int = 50, max_widening: int = 4
) -> DecoySet:
    """Pick up to ``per_active`` property-matched, dissimilar decoys for every active from ``pool``.

    The pool's net charges (the slow property) are computed only for the compounds a search visits.
    """
    from rdkit import DataStructs

    act_props, act_fps = {}, []
    for rec in actives:
        got = properties(rec.smiles)
        if got is None:
            raise StageInputError(f"active {rec.id}: SMILES {rec.smiles!r} cannot be parsed or standardised")
        act_props[rec.id] = got[0]
        act_fps.append(got[1])
    active_ids = set(act_props)
    cand_recs, cand_props, cand_tc, cand_mols = [], [], [], []
    for rec in pool:
        got = None if rec.id in active_ids else _neutral_properties(rec.smiles)
        if got is None:
            continue
        tc = max(DataStructs.BulkTanimotoSimilarity(got[1], act_fps))
        if tc < MAX_TC:
            cand_recs.append(rec)
            cand_props.append((*got[0], np.nan))  # net charge: filled in below where it can matter
            cand_tc.append(tc)
            cand_mols.append(got[2])
    props = np.array(cand_props).reshape(-1, len(PROPERTIES))
    charged = np.zeros(len(cand_recs), dtype=bool)  # net charge computed yet
    used = np.zeros(len(cand_recs), dtype=bool)
    chosen: dict[str, list[LibraryRecord]] = {}
    unmatched: dict[str, int] = {}
    for rec in actives:
        target = np.array(act_props[rec.id])
        picks: list[int] = []
        for step in range(max_widening + 1):
            picks = _closest_with_charge(props, charged, cand_mols, target, _window(step), used, per_active)
            if len(picks) >= per_active:
                break
        used[picks] = True
        chosen[rec.id] = [cand_recs[i] for i in picks]
        if len(picks) < per_active:
            unmatched[rec.id] = len(picks)
    decoy_props = {cand_recs[i].id: tuple(props[i]) for i in np.flatnonzero(used)}
    max_tc = max((cand_tc[i] for i in np.flatnonzero(used)), default=0.0)
    return DecoySet(chosen, act_props, decoy_props, unmatched, max_tc)


def _closest_with_charge(
    props: np.ndarray,
    charged: np.ndarray,
    mols: list[Any],
    target: np.ndarray,
    window: np.ndarray,
    used: np.ndarray,
    wanted: int,
) -> list[int]:
    """The ``wanted`` unused candidates inside ``window`` closest to ``target`` with its net charge.

    Candidates are visited by distance on the five fast properties and their net charge (the slow one,
    ~0.3 s each) computed only on the way, so the search stops at the ``wanted``-th match instead of
    charging every compound in the window; ``props``/``charged`` keep what was computed for later actives.
    """
    near = np.flatnonzero(np.all(np.abs(props[:, :-1] - target[:-1]) <= window[:-1] + 1e-9, axis=1) & ~used)
    dist = np.sqrt(np.sum(((props[near, :-1] - target[:-1]) / SCALE) ** 2, axis=1))
    picks: list[int] = []
    for i in near[np.argsort(dist, kind="stable")]:
        if not charged[i]:
            props[i, -1], charged[i] = net_charge(mols[i]), True
        if abs(props[i, -1] - target[-1]) <= window[-1]:
            picks.append(int(i))
            if len(picks) == wanted:
                break
    return picks


def _window(step: int) -> np.ndarray:
    """Allowed absolute differences at widening ``step``: continuous ones x1.5 per step, counts +1, charge 0."""
    window = np.where(np.arange(len(WINDOWS)) >= 2, WINDOWS + step, WINDOWS * WIDEN**step)
    window[-1] = 0
    return window


def write_decoys(decoys: DecoySet, out: Path) -> int:
    """SMILES and id per line (the LIT-PCBA/DUD-E .smi layout), actives' decoys in active order."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{d.smiles} {d.id}" for ds in decoys.decoys.values() for d in ds]
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(out)
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m impeccable.stages.decoys", description=__doc__.split("\n\n")[0])
    p.add_argument("--actives", required=True, type=Path, help="actives (.smi: SMILES id, or a CSV with id,smiles)")
    p.add_argument("--pool", required=True, type=Path, help="the compounds decoys are drawn from (a library file)")
    p.add_argument("--per-active", type=int, default=50, help="decoys per active (DUD-E: 50)")
    p.add_argument("--out", required=True, type=Path, help="decoys as .smi")
    a = p.parse_args(argv)

    def body() -> None:
        if a.per_active < 1:
            raise StageInputError(f"--per-active: must be >= 1, got {a.per_active}")
        result = make_decoys(list(read_library(a.actives)), list(read_library(a.pool)), per_active=a.per_active)
        n = write_decoys(result, a.out)
        print(json.dumps({"out": str(a.out), "written": n, **result.summary()}, indent=1))

    return exit_code(body)


if __name__ == "__main__":
    raise SystemExit(main())
