"""Protonation microstates at a pH, each with the free-energy penalty of being that state.

Why a predictor and a penalty: a docking score compares states of one compound
only if each state pays what it costs to exist in water. A microstate with
population p against the dominant one's p0 costs RT ln(p0/p) = 1.364 log10(p0/p)
kcal/mol at 298 K; for a state one ionisation step away from the dominant one
that is 1.364 |pH - pKa|. The dominant state costs nothing, so it is always
docked, and a minor state that Vina likes wins only by more than its penalty.

**Predictor**: pKasso (Bind Research, MIT; PyPI ``pkasso``), which predicts the
micro-pKa of every site with MolGpKa's graph neural network (weights shipped in
the wheel, MIT), couples the sites and turns the result into microstate
populations at the pH. Its preprocessing also picks the tautomer: RDKit's
tautomer enumerator, the best-scored tautomers by RDKit's rules, ranked by
MMFF94 energy. pKasso writes SMILES without stereo, so each state's charges,
hydrogen counts and bond orders are copied onto the caller's stereoisomer
(atoms matched by element and connectivity): every state keeps the stereo it
was asked for and the caller's atom order.

**Supplements** (:data:`RULES`): four groups the predictor gets wrong on the
25-drug panel (``data/state_panel.csv``), each with its measured pKa. A rule sets
a floor under the penalty of any state that contradicts it and adds the state
the rule calls dominant where the predictor did not list it.

Where pKasso fails on a molecule, dimorphite-dl's most probable variant is the
one state (penalty 0) and the reason is not lost: :func:`microstates` returns it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cache, lru_cache

from rdkit import Chem

__all__ = ["KCAL_PER_PH_UNIT", "Microstate", "GroupRule", "RULES", "microstates"]

KCAL_PER_PH_UNIT = 1.364  # RT ln 10 at 298.15 K, kcal/mol: the cost of one pH unit between pH and pKa
_MIN_POPULATION = 1e-6  # pKasso states below this fraction of the dominant one are not read
_State = tuple[Chem.Mol, float]  # a state in the parent's atom order, and its penalty in kcal/mol


@dataclass(frozen=True)
class Microstate:
    """One protonation state: canonical isomeric SMILES and its penalty (kcal/mol, 0 for the dominant)."""

    smiles: str
    penalty_kcal_mol: float
    source: str  # "pkasso", "pkasso+rules" or "dimorphite-dl (pkasso failed: ...)"


@dataclass(frozen=True)
class GroupRule:
    """A measured pKa for a group: the group carries ``charge`` only on the right side of ``pka``.

    ``charge`` +1/+2 is the n-th protonation of a base, -1 the deprotonation of an acid.
    The group's charge in a state is the sum of the formal charges of the atoms ``smarts`` matches.
    """

    name: str
    smarts: str
    charge: int
    pka: float
    source: str

    def wrong_by(self, group_charge: int, ph: float) -> float:
        """pH units by which a state with this group charge contradicts the rule (0 if it agrees)."""
        charged = group_charge >= self.charge if self.charge > 0 else group_charge <= self.charge
        should_be = self.pka > ph if self.charge > 0 else self.pka < ph
        return abs(ph - self.pka) if charged != should_be else 0.0


RULES: tuple[GroupRule, ...] = (
    GroupRule(
        "biguanide, second proton",
        "[#7]~[#6](~[#7])~[#7]~[#6](~[#7])~[#7]",
        +2,
        2.9,
        "metformin pKa 12.4 (Glucophage label); biguanide second pKa 2.9 (Ray P (1961) Chem Rev 61:313): "
        "pKasso gives metformin and cycloguanil as dications",
    ),
    GroupRule(
        "uracil N-H",
        "[#7;H1;R;$([#7]1-,:[#6](=O)-,:[#7]-,:[#6](=O)-,:[#6]=,:[#6]1),"
        "$([#7]1-,:[#6](=O)-,:[#7]-,:[#6]=,:[#6]-,:[#6]1=O)]",
        -1,
        8.0,
        "5-fluorouracil 8.0 (Rudy BC, Senkowski BZ (1973) Anal Profiles Drug Subst 2:221), the most acidic "
        "common uracil (uracil 9.5, thymine 9.9): pKasso gives 5-FU as its N1 anion",
    ),
    GroupRule(
        "4-aminopyridine ring N",
        "[n;X2;$(n1:c:c:c(-[NX3;$([NH2]),$([NH1]-[CX4]),$([NH0](-[CX4])-[CX4])]):c:c1)]",
        +1,
        9.2,
        "4-aminopyridine 9.17 (Albert A, Goldacre R, Phillips J (1948) J Chem Soc 2240): pKasso leaves it neutral",
    ),
    GroupRule(
        "N-cyanoguanidine/amidine",
        "[#7]~[#6](~[#6,#7])~[#7]-C#N",
        +1,
        0.0,
        "cimetidine titrates with one basic pKa, 6.8, its imidazole (Jantratid E et al. (2006) J Pharm Sci "
        "95:974), so its cyanoguanidine is not protonated above pH 1: pKasso protonates it",
    ),
)


def microstates(smiles: str, *, ph: float = 7.4, window_ph: float = 2.0) -> list[Microstate]:
    """States of one stereoisomer (canonical isomeric SMILES of a neutral parent) within ``window_ph``.

    The dominant state first (penalty 0), then by rising penalty; a state is kept when its penalty is
    at most ``window_ph`` pH units (1.364 kcal/mol each). Never raises for a molecule pKasso cannot handle.
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"state SMILES {smiles!r} is not a valid molecule")
    flat = Chem.MolToSmiles(mol, isomericSmiles=False)
    try:
        predicted = _pkasso(flat, round(ph, 2))
    except Exception as exc:  # a model corner case must not lose the compound
        first = (_dimorphite(smiles, ph, 1) or [Chem.CanonSmiles(smiles)])[0]
        return [Microstate(first, 0.0, f"dimorphite-dl (pkasso failed: {type(exc).__name__}: {exc})")]
    states: dict[str, _State] = {}
    for state_smiles, penalty in predicted:
        state = _onto(mol, Chem.MolFromSmiles(state_smiles))
        if state is not None:
            key = Chem.MolToSmiles(state)
            if key not in states or penalty < states[key][1]:
                states[key] = (state, penalty)
    if not states:  # nothing mapped back (pKasso changed the skeleton): the parent as written
        states = {Chem.MolToSmiles(mol): (mol, 0.0)}
    ruled, changed = _apply_rules(mol, states, ph)
    best = min(p for _, p in ruled.values())
    ranked = sorted(((p - best, s) for s, (_, p) in ruled.items()), key=lambda x: (x[0], x[1]))
    limit = window_ph * KCAL_PER_PH_UNIT + 1e-9
    source = "pkasso+rules" if changed else "pkasso"
    return [Microstate(s, round(p, 3), source) for p, s in ranked if p <= limit]


# --------------------------------------------------------------------------- pKasso


@lru_cache(maxsize=4096)
def _pkasso(flat_smiles: str, ph: float) -> tuple[tuple[str, float], ...]:
    """(state SMILES without stereo, penalty kcal/mol) for every state pKasso lists at ``ph``."""
    _load_pkasso()
    from pkasso.main import pKasso

    result = pKasso(flat_smiles, nthreads=1, cutoff_export=_MIN_POPULATION).run_single(pH=ph)
    top = max(result.freqs)
    return tuple((s, KCAL_PER_PH_UNIT * math.log10(top / f)) for s, f in zip(result.smiles, result.freqs) if f > 0)


@lru_cache(maxsize=1)
def _load_pkasso() -> None:
    """Import pKasso once (about 5 s: torch and MolGpKa's weights) and quiet its per-molecule logging."""
    import pkasso.main  # noqa: F401

    for name in ("pkasso", "torch_geometric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _dimorphite(smiles: str, ph: float, max_variants: int) -> list[str]:
    """dimorphite-dl's variants at ``ph`` (substructure pKa rules): the fallback where pKasso fails."""
    from dimorphite_dl import protonate_smiles

    return list(protonate_smiles(smiles, ph_min=ph, ph_max=ph, precision=1.0, max_variants=max_variants))


# --------------------------------------------------------------------------- states on the caller's atoms


def _skeleton(mol: Chem.Mol) -> Chem.Mol:
    """Heavy atoms and connectivity only: single bonds, no charges, no aromaticity, no hydrogens."""
    m = Chem.RWMol(Chem.RemoveHs(mol, sanitize=False))
    for atom in m.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
        atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    for bond in m.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    m.UpdatePropertyCache(strict=False)
    return m.GetMol()


def _onto(parent: Chem.Mol, state: Chem.Mol | None) -> Chem.Mol | None:
    """The parent (with its stereo and atom order) carrying the state's charges, H counts and bond orders."""
    if state is None or state.GetNumHeavyAtoms() != parent.GetNumHeavyAtoms():
        return None
    state = Chem.RemoveHs(state)
    match = _skeleton(state).GetSubstructMatch(_skeleton(parent))  # match[i]: state atom of parent atom i
    if len(match) != parent.GetNumAtoms():
        return None
    Chem.Kekulize(state, clearAromaticFlags=True)
    out = Chem.RWMol(parent)
    Chem.Kekulize(out, clearAromaticFlags=True)
    for atom in out.GetAtoms():
        source = state.GetAtomWithIdx(match[atom.GetIdx()])
        atom.SetFormalCharge(source.GetFormalCharge())
        atom.SetNumExplicitHs(source.GetTotalNumHs())
        atom.SetNoImplicit(True)
    for bond in out.GetBonds():
        other = state.GetBondBetweenAtoms(match[bond.GetBeginAtomIdx()], match[bond.GetEndAtomIdx()])
        bond.SetBondType(other.GetBondType())
    try:
        Chem.SanitizeMol(out)
    except Exception:
        return None
    Chem.AssignStereochemistry(out, cleanIt=True, force=True)  # a double bond a tautomer moved loses its stereo
    return out.GetMol()


# --------------------------------------------------------------------------- supplements


@cache
def _rule_query(smarts: str) -> Chem.Mol:
    query = Chem.MolFromSmarts(smarts)
    if query is None:
        raise RuntimeError(f"invalid rule SMARTS {smarts!r}")
    return query


def _apply_rules(parent: Chem.Mol, states: dict[str, _State], ph: float) -> tuple[dict[str, _State], bool]:
    """Penalties with each rule's floor; a rule's dominant form added where missing. (states, changed?)"""
    groups = [(rule, match) for rule in RULES for match in parent.GetSubstructMatches(_rule_query(rule.smarts))]
    if not groups:
        return states, False
    out = dict(states)
    dominant, dominant_penalty = min(states.values(), key=lambda st: st[1])
    for rule, atoms in groups:  # add the form the rule calls dominant, from the predictor's dominant state
        if all(rule.wrong_by(_charge(m, atoms), ph) > 0 for m, _ in out.values()):
            step = (1 if rule.charge > 0 else -1) * (1 if rule.wrong_by(0, ph) else -1)  # toward the rule's form
            fixed = _step_group_charge(dominant, atoms, step)
            if fixed is not None and Chem.MolToSmiles(fixed) not in out:
                out[Chem.MolToSmiles(fixed)] = (fixed, dominant_penalty)
    changed = out.keys() != states.keys()
    for key, (m, penalty) in list(out.items()):
        floor = KCAL_PER_PH_UNIT * sum(rule.wrong_by(_charge(m, atoms), ph) for rule, atoms in groups)
        if floor > penalty:
            out[key], changed = (m, floor), True
    return out, changed


def _charge(mol: Chem.Mol, atoms: tuple[int, ...]) -> int:
    return sum(mol.GetAtomWithIdx(i).GetFormalCharge() for i in atoms)


def _step_group_charge(mol: Chem.Mol, atoms: tuple[int, ...], step: int) -> Chem.Mol | None:
    """The state with one proton more (step +1) or fewer (-1) on the group: a charged atom is neutralised
    first (N- or O- takes a proton, N+ gives one), else a neutral N or O is charged."""
    order = sorted(atoms, key=lambda i: mol.GetAtomWithIdx(i).GetFormalCharge() != -step)
    for idx in order:
        rw = Chem.RWMol(mol)
        atom = rw.GetAtomWithIdx(idx)
        charge, hydrogens = atom.GetFormalCharge(), atom.GetTotalNumHs()
        if atom.GetSymbol() not in ("N", "O") or charge not in (0, -step) or hydrogens + step < 0:
            continue
        atom.SetNumExplicitHs(hydrogens + step)
        atom.SetFormalCharge(charge + step)
        atom.SetNoImplicit(True)
        try:
            Chem.SanitizeMol(rw)
        except Exception:
            continue
        return rw.GetMol()
    return None
