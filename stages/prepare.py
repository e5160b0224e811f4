"""Library preparation of one batch of SMILES: parse, standardise, filter, key for deduplication.

The function tasks of the campaign's library stage and of ``impeccable library
inspect`` both call :func:`prepare_batch`; it takes and returns plain data, so
any backend ships it. Steps, each timed in CPU seconds (``seconds``) for the per-step split:

1. **parse**: RDKit ``MolFromSmiles`` (CXSMILES extensions are read). A SMILES
   RDKit rejects is a *failure*, with the reason.
2. **standardise** (``standardize = true``), RDKit's MolStandardize as the
   ChEMBL structure pipeline does it: functional-group normalisation, the
   largest organic fragment (salts and solvents stripped), neutralisation
   (``Uncharger``), and the canonical tautomer if ``tautomer = true`` (slow: a
   tautomer enumeration per molecule). The canonical SMILES of the result is what
   the campaign screens.
3. **filters**: the campaign's rules (:mod:`.medfilters`); a molecule that fails
   is *filtered*, with the first rule it broke.
4. **key** (``deduplicate = true``): the standard InChIKey of the (standardised)
   molecule, computed for the molecules that passed the filters. Two records
   with one InChIKey are one compound (the same connectivity, stereo and
   charge layers: salts of one parent match once standardised; tautomers match
   where standard InChI's mobile-H layer makes them equal, or all of them with
   ``tautomer = true``). The manager keeps the first and notes the others' ids.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize
from rdkit.Chem.Scaffolds import MurckoScaffold

from .medfilters import compile_rules, properties
from .quiet import quiet_rdkit

__all__ = ["PROFILE_PROPERTIES", "prepare_batch", "Standardizer", "settings_need_preparation"]

PROFILE_PROPERTIES = ("mw", "clogp", "tpsa", "hbd", "hba", "rotatable_bonds", "heavy_atoms", "fsp3")
STEPS = ("parse", "standardize", "filters", "key", "profile")


def settings_need_preparation(settings: Mapping[str, Any]) -> bool:
    """Whether the library stage has anything to do (else the campaign streams the file as it is)."""
    return bool(settings.get("standardize") or settings.get("deduplicate") or len(compile_rules(settings["filters"])))


class Standardizer:
    """Normalise, keep the largest organic fragment, neutralise; optionally the canonical tautomer."""

    def __init__(self, tautomer: bool = False) -> None:
        self.normalizer = rdMolStandardize.Normalizer()
        self.chooser = rdMolStandardize.LargestFragmentChooser(preferOrganic=True)
        self.uncharger = rdMolStandardize.Uncharger(canonicalOrder=True)
        self.tautomers = rdMolStandardize.TautomerEnumerator() if tautomer else None

    def __call__(self, mol: Chem.Mol) -> Chem.Mol:
        mol = self.normalizer.normalize(mol)
        if len(Chem.GetMolFrags(mol)) > 1:
            mol = self.chooser.choose(mol)
        if any(atom.GetFormalCharge() for atom in mol.GetAtoms()):
            mol = self.uncharger.uncharge(mol)
        if self.tautomers is not None:
            mol = self.tautomers.Canonicalize(mol)
        return mol


@lru_cache(maxsize=2)
def _standardizer(tautomer: bool) -> Standardizer:
    return Standardizer(tautomer)


def prepare_batch(smiles: Sequence[str], settings: Mapping[str, Any], *, profile: bool = False) -> dict[str, Any]:
    """Prepare one batch; every position ends as exactly one of failed, filtered or kept.

    ``settings``: ``standardize``, ``tautomer``, ``deduplicate`` (bools) and ``filters`` (the
    ``[library.filters]`` table). Returns ``smiles`` (per position: what to screen, "" unless kept),
    ``keys`` (InChIKey per kept position when deduplicating, else ""), ``failed`` [(position, reason)],
    ``filtered`` [(position, rule, detail)] and ``seconds`` per step. With ``profile`` (for ``inspect``)
    every rule is tried on every parsed molecule: ``rule_passes`` {rule: molecules passing it}, and for
    the kept ones ``properties`` {name: [values]} and ``scaffolds`` (Bemis-Murcko SMILES).
    """
    batch = _Batch(len(smiles), settings, profile)
    with quiet_rdkit():  # InChI's warnings too
        for i, text in enumerate(smiles):
            try:
                batch.prepare(i, text)
            except Exception as exc:  # noqa: BLE001 - an RDKit error fails its molecule, not the batch
                batch.failed.append((i, f"RDKit error: {type(exc).__name__}: {exc}"))
    return batch.result()


class _Batch:
    """The outcome of one batch, filled one molecule at a time (outputs written only once a molecule is done)."""

    def __init__(self, n: int, settings: Mapping[str, Any], profile: bool) -> None:
        self.rules = compile_rules(settings["filters"])
        self.standardize = _standardizer(bool(settings.get("tautomer"))) if settings.get("standardize") else None
        self.dedupe = bool(settings.get("deduplicate"))
        self.profile = profile
        self.smiles, self.keys = [""] * n, [""] * n
        self.failed: list[tuple[int, str]] = []
        self.filtered: list[tuple[int, str, str]] = []
        self.seconds = dict.fromkeys(STEPS, 0.0)
        self.passes = dict.fromkeys(self.rules.names, 0)
        self.props: dict[str, list[float]] = {name: [] for name in PROFILE_PROPERTIES} if profile else {}
        self.scaffolds: list[str] = []

    def prepare(self, i: int, text: str) -> None:
        clock, seconds = time.process_time, self.seconds  # CPU seconds: the split stays true on a busy machine
        t0 = clock()
        mol = Chem.MolFromSmiles(text)
        t1 = clock()
        seconds["parse"] += t1 - t0
        if mol is None:
            self.failed.append((i, f"unparsable SMILES {text!r}"))
            return
        if self.standardize is not None:
            mol = self.standardize(mol)
            if mol is None or mol.GetNumAtoms() == 0:
                self.failed.append((i, "standardisation left no molecule"))
                return
        t2 = clock()
        seconds["standardize"] += t2 - t1
        failure = self._check(mol)
        t3 = clock()
        seconds["filters"] += t3 - t2
        if failure is not None:
            self.filtered.append((i, *failure))
            return
        screened = Chem.MolToSmiles(mol) if self.standardize is not None else text
        key = Chem.MolToInchiKey(mol) if self.dedupe else ""
        t4 = clock()
        seconds["key"] += t4 - t3
        if self.profile:
            values = properties(mol, PROFILE_PROPERTIES)
            scaffold = _scaffold(mol)
            for name, value in values.items():
                self.props[name].append(value)
            self.scaffolds.append(scaffold)
            seconds["profile"] += clock() - t4
        self.smiles[i], self.keys[i] = screened, key

    def _check(self, mol: Chem.Mol) -> tuple[str, str] | None:
        if not self.profile:
            return self.rules.first_failure(mol)
        broken = self.rules.failures(mol)
        for name in self.passes:
            self.passes[name] += 1
        for name, _ in broken:
            self.passes[name] -= 1
        return broken[0] if broken else None

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "smiles": self.smiles,
            "keys": self.keys,
            "failed": self.failed,
            "filtered": self.filtered,
            "seconds": self.seconds,
        }
        if self.profile:
            out.update(rule_passes=self.passes, properties=self.props, scaffolds=self.scaffolds)
        return out


def _scaffold(mol: Chem.Mol) -> str:
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol)
    except (RuntimeError, ValueError):
        return ""
