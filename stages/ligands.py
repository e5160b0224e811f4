"""Ligand states: a library SMILES to the 3D molecules a docking program should see.

A library entry names a compound, not the species that binds: it may carry a
counterion, leave stereocentres unassigned, and be written in its neutral form.
This module turns one entry into a small set of *states* and docks none of
them itself (``dock.Docker`` docks every state and keeps the best):

1. **Parent** (:func:`parent_molecule`): parse with RDKit, ``rdMolStandardize``
   cleanup, keep the largest organic fragment (salts, counterions and solvents
   go), neutralise. Filters and fingerprints use this parent too
   (:func:`strip_salts`), so a counterion never counts toward a weight limit.
2. **Stereoisomers** (:func:`stereoisomers`): RDKit's ``EnumerateStereoisomers``
   over *unassigned* tetrahedral centres and double bonds only (assigned ones
   are kept); at most ``max_stereoisomers``. Above the cap a seeded random
   subset is taken, so the same input always gives the same isomers.
3. **Protonation and tautomer** (:func:`scored_states`, ``stages/protonation.py``):
   pKasso (MolGpKa micro-pKa predictions, coupled into microstate populations
   at the campaign pH; its preprocessing picks the tautomer) plus four measured
   supplements. The dominant microstate is always docked (penalty 0); minor
   ones within ``window_ph`` follow, up to ``max_protomers`` per stereoisomer,
   each with its penalty 1.364 x |pH - pKa| kcal/mol per ionisation step
   (RT ln of its population against the dominant one), which the docking
   stage adds to the state's score.
4. **3D** (:func:`prepare_state`): explicit hydrogens, ETKDGv3 embedding with a
   fixed seed (the same state always gives the same conformer), MMFF94
   optimisation (UFF where MMFF has no parameters).

Tautomers: the tautomer pKasso's preprocessing picks (RDKit's enumerator, its
best-scored tautomers ranked by MMFF94 energy) is the one protonated; for the
MOSES set that is the input tautomer in all of the first 80 compounds. Tautomers
RDKit's rules cannot reach (MOSES-0852107 is written as a 4H-purine, a C-H to
N-H shift across the ring) stay as written. dimorphite-dl and pKasso alone were measured on the
25-drug panel; the README's ligand-state section says what each does.

A molecule that fails comes back as a :class:`LigandFailure` with its id and
the reason; a state that cannot be embedded is dropped and the others go on.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions
from rdkit.Chem.MolStandardize import rdMolStandardize

from .protonation import microstates
from .quiet import quiet_rdkit

__all__ = [
    "StateOptions",
    "PreparedLigand",
    "LigandFailure",
    "prepare_ligand",
    "prepare_ligands",
    "prepare_states",
    "prepare_state",
    "enumerate_states",
    "scored_states",
    "parent_molecule",
    "strip_salts",
    "unusable_reason",
    "stereoisomers",
    "protomers",
    "DEFAULT_SEED",
]

DEFAULT_SEED = 20_130_322
MAX_HEAVY_ATOMS = 100  # beyond drug-like; embedding and docking get slow and meaningless


@dataclass(frozen=True)
class StateOptions:
    """How many states of one compound are docked; the campaign file's ``[ligands]`` section."""

    ph: float = 7.4
    max_stereoisomers: int = 8  # per compound, over unassigned centres and double bonds
    max_protomers: int = 2  # per stereoisomer: the dominant one first
    seed: int = DEFAULT_SEED  # embedding, and the subset of stereoisomers above the cap
    window_ph: float = 2.0  # minor states whose penalty is at most this many pH units (1.364 kcal/mol each)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ph <= 14.0:
            raise ValueError(f"ph: must be between 0 and 14, got {self.ph}")
        if not 0.0 <= self.window_ph <= 14.0:
            raise ValueError(f"window_ph: must be between 0 and 14, got {self.window_ph}")
        for name in ("max_stereoisomers", "max_protomers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PreparedLigand:
    """One state of a ligand ready for docking: hydrogens explicit, one optimised 3D conformer."""

    id: str
    input_smiles: str
    smiles: str  # this state: canonical isomeric SMILES with stereo and charges
    formal_charge: int
    mol: Chem.Mol  # with explicit H and one conformer; coordinates in angstrom
    penalty_kcal_mol: float = 0.0  # cost of this microstate against the dominant one at the pH (0: dominant)

    def to_molblock(self) -> str:
        """MDL molblock (V2000) with the ligand id as its title."""
        return Chem.MolToMolBlock(self.mol)


@dataclass(frozen=True)
class LigandFailure:
    """A molecule that could not be prepared, and why, in words a chemist can act on."""

    id: str
    input_smiles: str
    reason: str


def prepare_states(
    id: str, smiles: str, options: StateOptions = StateOptions()
) -> list[PreparedLigand] | LigandFailure:
    """Every state of one compound in 3D, dominant protomer of each stereoisomer first; never raises.

    A state that cannot be embedded is left out; if none can, the failure names the first reason.
    """
    with quiet_rdkit():
        try:
            states = scored_states(smiles, options)
        except _Failed as failure:
            return LigandFailure(id, smiles, str(failure))
        except Exception as exc:  # an RDKit or dimorphite corner case must not end a batch of thousands
            return LigandFailure(id, smiles, f"unexpected {type(exc).__name__}: {exc}")
        prepared, reasons = [], []
        for state, penalty in states:
            result = prepare_state(id, smiles, state, seed=options.seed, penalty_kcal_mol=penalty)
            (prepared if isinstance(result, PreparedLigand) else reasons).append(result)
    if not prepared:
        return LigandFailure(id, smiles, reasons[0].reason)
    return prepared


def prepare_ligand(
    id: str, smiles: str, *, seed: int = DEFAULT_SEED, protonate: bool = True, optimise: bool = True, ph: float = 7.4
) -> PreparedLigand | LigandFailure:
    """One state: the dominant protomer of the first stereoisomer (or the neutral parent); never raises."""
    with quiet_rdkit():
        try:
            parent = parent_molecule(smiles)
            state = Chem.MolToSmiles(stereoisomers(parent, 1, seed=seed)[0])
            if protonate:
                state = microstates(state, ph=ph)[0].smiles
        except _Failed as failure:
            return LigandFailure(id, smiles, str(failure))
        except Exception as exc:
            return LigandFailure(id, smiles, f"unexpected {type(exc).__name__}: {exc}")
        return prepare_state(id, smiles, state, seed=seed, optimise=optimise)


def prepare_ligands(records: Iterable[tuple[str, str]], **options: object) -> Iterator[PreparedLigand | LigandFailure]:
    """Prepare each (id, smiles) record in turn (one state each), yielding a result or a failure."""
    for cid, smiles in records:
        yield prepare_ligand(cid, smiles, **options)  # type: ignore[arg-type]


def enumerate_states(smiles: str, options: StateOptions = StateOptions()) -> list[str]:
    """The states of one compound as canonical isomeric SMILES (stereo and charges), in a fixed order."""
    return [state for state, _ in scored_states(smiles, options)]


def scored_states(smiles: str, options: StateOptions = StateOptions()) -> list[tuple[str, float]]:
    """(state SMILES, penalty kcal/mol) of one compound, in a fixed order.

    Stereoisomer-major; within one stereoisomer the dominant microstate (penalty 0) first, then minor ones
    by rising penalty. Raises ``_Failed`` (a ValueError) with the reason for an unusable SMILES.
    """
    parent = parent_molecule(smiles)
    states: dict[str, float] = {}
    for isomer in stereoisomers(parent, options.max_stereoisomers, seed=options.seed):
        found = microstates(Chem.MolToSmiles(isomer), ph=options.ph, window_ph=options.window_ph)
        for state in found[: options.max_protomers]:
            states.setdefault(state.smiles, state.penalty_kcal_mol)
    return list(states.items())


def prepare_state(
    id: str,
    input_smiles: str,
    state: str,
    *,
    seed: int = DEFAULT_SEED,
    optimise: bool = True,
    penalty_kcal_mol: float = 0.0,
) -> PreparedLigand | LigandFailure:
    """One state SMILES (from :func:`enumerate_states`) in 3D; never raises."""
    with quiet_rdkit():
        try:
            mol = Chem.MolFromSmiles(state)
            if mol is None:
                raise _Failed(f"state {state!r} is not a valid molecule")
            mol = Chem.AddHs(mol)
            _embed(mol, seed)
            if optimise:
                _optimise(mol)
        except _Failed as failure:
            return LigandFailure(id, input_smiles, f"state {state}: {failure}")
        except Exception as exc:
            return LigandFailure(id, input_smiles, f"state {state}: unexpected {type(exc).__name__}: {exc}")
    mol.SetProp("_Name", id)
    return PreparedLigand(id, input_smiles, state, Chem.GetFormalCharge(mol), mol, penalty_kcal_mol)


def parent_molecule(smiles: str) -> Chem.Mol:
    """The neutral parent: cleanup, largest organic fragment, neutralise. Raises ValueError with the reason."""
    if not smiles or not smiles.strip():
        raise _Failed("empty SMILES")
    with quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise _Failed(_unreadable(smiles))
        if mol.GetNumAtoms() == 0:
            raise _Failed("SMILES has no atoms")
        try:
            mol = rdMolStandardize.Cleanup(mol)
            mol = _fragment_chooser().choose(mol)
            mol = _uncharger().uncharge(mol)
        except Exception as exc:
            raise _Failed(f"standardisation failed: {exc}") from None
    heavy = mol.GetNumHeavyAtoms()
    if heavy > MAX_HEAVY_ATOMS:
        raise _Failed(f"{heavy} heavy atoms, more than the {MAX_HEAVY_ATOMS} allowed for a drug-like ligand")
    _check_organic(mol)
    return mol


def unusable_reason(smiles: str) -> str | None:
    """Why :func:`parent_molecule` refuses ``smiles`` (unparsable, impossible valence, metal, too large ...),
    or None if it does not."""
    try:
        parent_molecule(smiles)
    except _Failed as failure:
        return str(failure)
    return None


def _unreadable(smiles: str) -> str:
    """Whether RDKit cannot read the SMILES at all, or reads it and cannot sanitise it (say which)."""
    raw = Chem.MolFromSmiles(smiles, sanitize=False)
    if raw is not None:
        try:
            Chem.SanitizeMol(raw)
        except Exception as exc:  # AtomValenceException, KekulizeException ...
            return f"impossible valence or aromaticity in SMILES {smiles!r} (RDKit cannot sanitise it: {exc})"
    return f"unparsable SMILES {smiles!r} (RDKit cannot read it)"


# elements of drug-like organic molecules that docking (Vina, meeko) and GAFF2 can type
ORGANIC_ELEMENTS = frozenset("H B C N O F Si P S Cl Se Br I".split())


def _check_organic(mol: Chem.Mol) -> None:
    """A bare ion, an inorganic fragment or a metal complex is not a ligand these stages can score."""
    symbols = {atom.GetSymbol() for atom in mol.GetAtoms()}
    if "C" not in symbols:
        what = "a bare ion or atom" if mol.GetNumHeavyAtoms() == 1 else "an inorganic fragment"
        raise _Failed(f"{what} ({Chem.MolToSmiles(mol)}), not an organic ligand: no carbon atom")
    others = sorted(symbols - ORGANIC_ELEMENTS)
    if others:
        raise _Failed(
            f"contains {', '.join(others)}: metal and other inorganic elements are outside the "
            "docking and force-field parameters"
        )


def strip_salts(smiles: str) -> Chem.Mol | None:
    """The parent molecule of a library entry (salts and counterions removed), or None if unusable."""
    try:
        return parent_molecule(smiles)
    except ValueError:
        return None


def stereoisomers(mol: Chem.Mol, max_isomers: int, *, seed: int = DEFAULT_SEED) -> list[Chem.Mol]:
    """Isomers over the unassigned stereocentres and double bonds; all of them up to ``max_isomers``.

    Above the cap a seeded random subset (RDKit's sampler), so the result is reproducible.
    Assigned stereo in the input is kept as written.
    """
    mol, pinned = _pin_resonance_centres(mol)
    total = _stereo_count(mol)
    opts = StereoEnumerationOptions(
        onlyUnassigned=True,
        unique=True,
        maxIsomers=max_isomers if total > max_isomers else 0,
        rand=random.Random(seed) if total > max_isomers else None,
    )
    isomers = list(EnumerateStereoisomers(mol, options=opts)) or [mol]
    for isomer in isomers:
        for idx in pinned:
            isomer.GetAtomWithIdx(idx).SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    return isomers


def protomers(smiles: str, *, ph: float = 7.4, max_protomers: int = 2) -> list[str]:
    """Protonation states of one stereoisomer at ``ph`` (``stages/protonation.py``), most probable first."""
    return [state.smiles for state in microstates(smiles, ph=ph)][:max_protomers]


# --------------------------------------------------------------------------- helpers


class _Failed(ValueError):
    """A preparation step failed; the message is the reason reported to the user."""


@lru_cache(maxsize=1)
def _fragment_chooser() -> rdMolStandardize.LargestFragmentChooser:
    return rdMolStandardize.LargestFragmentChooser(preferOrganic=True)


@lru_cache(maxsize=1)
def _uncharger() -> rdMolStandardize.Uncharger:
    return rdMolStandardize.Uncharger(canonicalOrder=True)


# A P or S whose "different" neighbours are a terminal =O and a terminal -OH/-O- (phosphates,
# phosphonates, sulfinic acids): the two oxygens exchange by resonance and proton transfer, so
# the atom is no stereocentre although RDKit's graph rules call it one.
_RESONANCE_CENTRE = Chem.MolFromSmarts("[P,S,As,Se;$(*=[OX1,SX1]);$(*-[OX1,SX1,OX2H1,SX2H1])]")


def _pin_resonance_centres(mol: Chem.Mol) -> tuple[Chem.Mol, list[int]]:
    """A copy whose resonance 'centres' are marked assigned (so not enumerated), and their indices.

    The caller clears them afterwards, also where the input assigned them (a SMILES from 3D does).
    """
    idxs = [idx for (idx,) in mol.GetSubstructMatches(_RESONANCE_CENTRE)]
    if not idxs:
        return mol, []
    mol = Chem.Mol(mol)
    for idx in idxs:
        mol.GetAtomWithIdx(idx).SetChiralTag(Chem.ChiralType.CHI_TETRAHEDRAL_CW)
    return mol, idxs


def _stereo_count(mol: Chem.Mol) -> int:
    from rdkit.Chem.EnumerateStereoisomers import GetStereoisomerCount

    return GetStereoisomerCount(mol, options=StereoEnumerationOptions(onlyUnassigned=True))


def _embed(mol: Chem.Mol, seed: int) -> None:
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) == 0:
        return
    params.useRandomCoords = True  # the fallback RDKit recommends for awkward ring systems
    params.maxIterations = 2000
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise _Failed("3D embedding failed (ETKDGv3, also with random starting coordinates)")


def _optimise(mol: Chem.Mol) -> None:
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    elif AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    else:
        raise _Failed("no MMFF94 or UFF parameters for some atom (unusual element or valence)")
