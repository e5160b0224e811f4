"""Library filters a medicinal chemist applies before screening: size, flexibility, PAINS.

Each compound either passes or comes back with the first rule it broke, so the
report can say how many compounds each filter removed and why. Rules apply to
the parent molecule: a library entry written as a salt (several fragments) is
judged without its counterions and solvents (``ligands.strip_salts``), since
they are not part of what binds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rdkit import Chem
from rdkit.Chem import Descriptors, rdMolDescriptors
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

from .ligands import strip_salts, unusable_reason
from .quiet import quiet_rdkit


@dataclass(frozen=True)
class FilterRules:
    max_molecular_weight: float | None = None
    max_rotatable_bonds: int | None = None
    max_heavy_atoms: int | None = None
    pains: bool = False

    @property
    def active(self) -> bool:
        return any(
            v not in (None, False)
            for v in (self.max_molecular_weight, self.max_rotatable_bonds, self.max_heavy_atoms, self.pains)
        )


@lru_cache(maxsize=1)
def _pains_catalog() -> FilterCatalog:
    params = FilterCatalogParams()
    params.AddCatalog(FilterCatalogParams.FilterCatalogs.PAINS)
    return FilterCatalog(params)


def check(smiles: str, rules: FilterRules, mol: Chem.Mol | None = None) -> str | None:
    """None if the compound passes, else the reason it is removed (unparsable SMILES included).

    ``mol``, when given, is used as is (it should already be the parent molecule).
    """
    if mol is None:
        with quiet_rdkit():
            mol = strip_salts(smiles) if "." in smiles else Chem.MolFromSmiles(smiles)
    if mol is None:  # unparsable, impossible valence, or (a salt's parent) metal or too large: say which
        return unusable_reason(smiles) or f"unparsable SMILES {smiles!r}"
    if rules.max_heavy_atoms is not None and mol.GetNumHeavyAtoms() > rules.max_heavy_atoms:
        return f"heavy atoms {mol.GetNumHeavyAtoms()} > {rules.max_heavy_atoms}"
    if rules.max_molecular_weight is not None:
        mw = Descriptors.MolWt(mol)
        if mw > rules.max_molecular_weight:
            return f"molecular weight {mw:.1f} > {rules.max_molecular_weight:g}"
    if rules.max_rotatable_bonds is not None:
        rot = rdMolDescriptors.CalcNumRotatableBonds(mol)
        if rot > rules.max_rotatable_bonds:
            return f"rotatable bonds {rot} > {rules.max_rotatable_bonds}"
    if rules.pains:
        match = _pains_catalog().GetFirstMatch(mol)
        if match is not None:
            return f"PAINS: {match.GetDescription()}"
    return None
