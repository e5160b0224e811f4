"""Ligand preparation: SMILES to a standardised, protonated 3D molecule.

Steps, each chosen so that docking sees the molecule a chemist would expect:

1. Parse with RDKit (sanitised).
2. Standardise with ``rdkit.Chem.MolStandardize``: cleanup (normalise nitro,
   N-oxides, ...), keep the largest fragment (drops salts and solvents), then
   neutralise so every input form of a molecule becomes the same molecule.
3. Protonate for pH 7.4 with a few group rules -- an approximation, not a
   pKa prediction: carboxylic, sulfonic and phosphoric/phosphonic acids and
   tetrazoles lose their acidic H; aliphatic amines (every neighbour an sp3 carbon) and
   non-acylated amidines/guanidines gain one. Two basic centres within three
   bonds (piperazine, ethylenediamine) get one proton, not two. Anilines,
   amides, sulfonamides, aromatic N (pyridines, imidazoles) and phenols stay neutral.
4. Add hydrogens, embed with ETKDGv3 (fixed seed: the same input always gives
   the same conformer), optimise with MMFF94 (UFF where MMFF has no parameters).
   Unspecified stereocentres take whatever the seeded embedding gives.

A molecule that fails any step comes back as a :class:`LigandFailure` with its
id and the reason; the batch function never raises for one bad molecule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem
from rdkit.Chem.MolStandardize import rdMolStandardize

__all__ = [
    "PreparedLigand",
    "LigandFailure",
    "prepare_ligand",
    "prepare_ligands",
    "standardise",
    "protonate_ph74",
    "DEFAULT_SEED",
]

DEFAULT_SEED = 20_130_322
MAX_HEAVY_ATOMS = 100  # beyond drug-like; embedding and docking get slow and meaningless


@dataclass(frozen=True)
class PreparedLigand:
    """A ligand ready for docking: hydrogens explicit, one optimised 3D conformer."""

    id: str
    input_smiles: str
    smiles: str  # the prepared (standardised, protonated) molecule, canonical isomeric SMILES
    formal_charge: int
    mol: Chem.Mol  # with explicit H and one conformer; coordinates in angstrom

    def to_molblock(self) -> str:
        """MDL molblock (V2000) with the ligand id as its title."""
        return Chem.MolToMolBlock(self.mol)


@dataclass(frozen=True)
class LigandFailure:
    """A molecule that could not be prepared, and why, in words a chemist can act on."""

    id: str
    input_smiles: str
    reason: str


def prepare_ligand(
    id: str,
    smiles: str,
    *,
    seed: int = DEFAULT_SEED,
    protonate: bool = True,
    optimise: bool = True,
) -> PreparedLigand | LigandFailure:
    """Prepare one molecule for docking; never raises for a bad molecule."""
    with _quiet_rdkit():
        try:
            return _prepare(id, smiles, seed=seed, protonate=protonate, optimise=optimise)
        except _Failed as failure:
            return LigandFailure(id, smiles, str(failure))
        except Exception as exc:  # an RDKit corner case must not end a batch of thousands
            return LigandFailure(id, smiles, f"unexpected {type(exc).__name__}: {exc}")


def prepare_ligands(
    records: Iterable[tuple[str, str]], **options: object
) -> Iterator[PreparedLigand | LigandFailure]:
    """Prepare each (id, smiles) record in turn, yielding a result or a failure for each."""
    for cid, smiles in records:
        yield prepare_ligand(cid, smiles, **options)  # type: ignore[arg-type]


def standardise(mol: Chem.Mol) -> Chem.Mol:
    """Cleanup, largest fragment, neutralise (rdMolStandardize); returns a new molecule."""
    mol = rdMolStandardize.Cleanup(mol)
    mol = rdMolStandardize.LargestFragmentChooser(preferOrganic=True).choose(mol)
    return rdMolStandardize.Uncharger(canonicalOrder=True).uncharge(mol)


def protonate_ph74(mol: Chem.Mol) -> Chem.Mol:
    """Set charges of common acids and bases for pH 7.4 (rules in the module doc); a new molecule.

    Expects a neutral molecule without explicit hydrogen atoms (as from :func:`standardise`).
    """
    mol = Chem.RWMol(mol)
    for (idx,) in mol.GetSubstructMatches(_ACID_OH):
        _shift_proton(mol.GetAtomWithIdx(idx), -1)
    protonated: list[int] = []
    for (idx,) in mol.GetSubstructMatches(_BASIC_N):
        if all(len(Chem.GetShortestPath(mol, idx, other)) > 4 for other in protonated):
            _shift_proton(mol.GetAtomWithIdx(idx), +1)
            protonated.append(idx)
    Chem.SanitizeMol(mol)
    return mol.GetMol()


# --------------------------------------------------------------------------- rules and helpers

# The acidic OH of a carboxylic, sulfonic, sulfinic, phosphoric or phosphonic acid; a tetrazole NH.
_ACID_OH = Chem.MolFromSmarts(
    "[$([OX2H1;$(O-[CX3]=O),$(O-[SX4](=O)=O),$(O-[SX3]=O),$(O-[PX4]=O)]),$([nH1]1nnnc1),$([nH1]1nncn1)]"
)
# An aliphatic amine whose neighbours are all sp3 carbons (not N-aryl, amide, sulfonamide,
# enamine, N-heteroatom), or the imine N of an amidine/guanidine that is not acylated,
# sulfonylated, aromatic-ring-bound or N-hetero-substituted.
_BASIC_N = Chem.MolFromSmarts(
    "[$([NX3;H2,H1,H0;+0;!$(N~[!#6;!#1]);!$(N-[#6;!X4])]),"
    "$([NX2;+0;!$(N~[!#6]);!$(N-[#6]=[O,S,N]);!$(N-a)]=[CX3;!a;!$(C-[#6,#7]=[O,S]);!$(C-N-[C,S]=[O,S])]-[NX3;+0])]"
)


class _Failed(Exception):
    """A preparation step failed; the message is the reason reported to the user."""


def _prepare(cid: str, smiles: str, *, seed: int, protonate: bool, optimise: bool) -> PreparedLigand:
    if not smiles or not smiles.strip():
        raise _Failed("empty SMILES")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise _Failed(f"unparsable SMILES {smiles!r} (RDKit could not read or sanitise it)")
    if mol.GetNumAtoms() == 0:
        raise _Failed("SMILES has no atoms")
    try:
        mol = standardise(mol)
        if protonate:
            mol = protonate_ph74(mol)
    except Exception as exc:
        raise _Failed(f"standardisation failed: {exc}") from None
    heavy = mol.GetNumHeavyAtoms()
    if heavy > MAX_HEAVY_ATOMS:
        raise _Failed(f"{heavy} heavy atoms, more than the {MAX_HEAVY_ATOMS} allowed for a drug-like ligand")
    prepared_smiles = Chem.MolToSmiles(mol)
    mol = Chem.AddHs(mol)
    _embed(mol, seed)
    if optimise:
        _optimise(mol)
    mol.SetProp("_Name", cid)
    return PreparedLigand(cid, smiles, prepared_smiles, Chem.GetFormalCharge(mol), mol)


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


def _shift_proton(atom: Chem.Atom, charge: int) -> None:
    """Add (charge +1) or remove (charge -1) one hydrogen and set the formal charge."""
    atom.SetNumExplicitHs(max(0, atom.GetTotalNumHs() + charge))
    atom.SetNoImplicit(True)
    atom.SetFormalCharge(atom.GetFormalCharge() + charge)


class _quiet_rdkit:
    """Silence RDKit's stderr chatter for one call; failures are reported as values instead."""

    def __enter__(self) -> None:
        RDLogger.DisableLog("rdApp.*")

    def __exit__(self, *exc: object) -> None:
        RDLogger.EnableLog("rdApp.*")
