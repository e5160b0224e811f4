"""Medicinal-chemistry filters from maintained definitions: property ranges, presets, alert catalogues, SMARTS.

Every rule has a name that says what it demands (``lead-like: mw <= 350``,
``alerts: Brenk``, ``exclude: [N+](=O)[O-]``), and a molecule that fails comes
back with the first rule it broke and the detail (the value, or the alert's
description), so a report can say how many compounds each rule removed and why.

- **Properties** (RDKit): ``mw`` average molecular weight (Descriptors.MolWt),
  ``clogp`` Wildman-Crippen logP, ``tpsa`` topological polar surface area
  (Ertl), ``hbd``/``hba`` Lipinski's counts (N-H + O-H; N + O), ``rotatable_bonds``
  (RDKit's default definition), ``heavy_atoms``, ``formal_charge`` (net),
  ``rings``, ``aromatic_rings``, ``fsp3`` (fraction of sp3 carbons).
- **Presets**, each every one of its bounds (a molecule fails on the first):
  ``ro5`` Lipinski et al. 1997 (mw <= 500, clogp <= 5, hbd <= 5, hba <= 10;
  applied strictly, not "at most one violation"), ``veber`` Veber et al. 2002
  (rotatable_bonds <= 10, tpsa <= 140), ``lead-like`` Teague et al. 1999 as
  ZINC and MOSES define it (250 <= mw <= 350, clogp <= 3.5,
  rotatable_bonds <= 7), ``ro3`` Congreve et al. 2003 (mw <= 300, clogp <= 3,
  hbd <= 3, hba <= 3, rotatable_bonds <= 3, tpsa <= 60).
- **Alert catalogues**: RDKit's FilterCatalog, which ships and maintains them:
  PAINS (A, B, C: Baell & Holloway 2010), Brenk (Brenk et al. 2008), NIH
  (Jadhav et al. 2010), ZINC, and the ChEMBL structural-alert sets (Glaxo,
  Dundee, BMS, MLSMR, Inpharmatica, LINT, SureChEMBL; ``chembl`` is all of them).
- **SMARTS**: ``include_smarts`` keeps only molecules matching at least one
  pattern; each ``exclude_smarts`` pattern drops the molecules it matches.

Rules apply to the molecule they are given (the standardised parent, when the
library is standardised). Cheap rules run first: properties, SMARTS, alerts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

from .errors import StageInputError

__all__ = ["PROPERTIES", "PRESETS", "ALERT_SETS", "Rule", "RuleSet", "compile_rules", "properties"]

PROPERTIES: dict[str, Callable[[Chem.Mol], float]] = {
    "mw": Descriptors.MolWt,
    "clogp": Crippen.MolLogP,
    "tpsa": rdMolDescriptors.CalcTPSA,
    "hbd": rdMolDescriptors.CalcNumLipinskiHBD,
    "hba": rdMolDescriptors.CalcNumLipinskiHBA,
    "rotatable_bonds": rdMolDescriptors.CalcNumRotatableBonds,
    "heavy_atoms": lambda mol: mol.GetNumHeavyAtoms(),
    "formal_charge": Chem.GetFormalCharge,
    "rings": rdMolDescriptors.CalcNumRings,
    "aromatic_rings": rdMolDescriptors.CalcNumAromaticRings,
    "fsp3": rdMolDescriptors.CalcFractionCSP3,
}

# preset -> [(property, ">=" or "<=", bound)]
PRESETS: dict[str, list[tuple[str, str, float]]] = {
    "ro5": [("mw", "<=", 500), ("clogp", "<=", 5), ("hbd", "<=", 5), ("hba", "<=", 10)],
    "veber": [("rotatable_bonds", "<=", 10), ("tpsa", "<=", 140)],
    "lead-like": [("mw", ">=", 250), ("mw", "<=", 350), ("clogp", "<=", 3.5), ("rotatable_bonds", "<=", 7)],
    "ro3": [
        ("mw", "<=", 300),
        ("clogp", "<=", 3),
        ("hbd", "<=", 3),
        ("hba", "<=", 3),
        ("rotatable_bonds", "<=", 3),
        ("tpsa", "<=", 60),
    ],
}

_CATALOGS = FilterCatalogParams.FilterCatalogs
ALERT_SETS: dict[str, tuple[str, Any]] = {
    "pains": ("PAINS", _CATALOGS.PAINS),
    "pains_a": ("PAINS A", _CATALOGS.PAINS_A),
    "pains_b": ("PAINS B", _CATALOGS.PAINS_B),
    "pains_c": ("PAINS C", _CATALOGS.PAINS_C),
    "brenk": ("Brenk", _CATALOGS.BRENK),
    "nih": ("NIH", _CATALOGS.NIH),
    "zinc": ("ZINC", _CATALOGS.ZINC),
    "chembl": ("ChEMBL", _CATALOGS.CHEMBL),
    "chembl_glaxo": ("ChEMBL Glaxo", _CATALOGS.CHEMBL_Glaxo),
    "chembl_dundee": ("ChEMBL Dundee", _CATALOGS.CHEMBL_Dundee),
    "chembl_bms": ("ChEMBL BMS", _CATALOGS.CHEMBL_BMS),
    "chembl_mlsmr": ("ChEMBL MLSMR", _CATALOGS.CHEMBL_MLSMR),
    "chembl_inpharmatica": ("ChEMBL Inpharmatica", _CATALOGS.CHEMBL_Inpharmatica),
    "chembl_lint": ("ChEMBL LINT", _CATALOGS.CHEMBL_LINT),
    "chembl_surechembl": ("ChEMBL SureChEMBL", _CATALOGS.CHEMBL_SureChEMBL),
}


def properties(mol: Chem.Mol, names: Any = PROPERTIES) -> dict[str, float]:
    """The named properties of one molecule."""
    return {name: float(PROPERTIES[name](mol)) for name in names}


@dataclass(frozen=True)
class Rule:
    """One named demand on a molecule; ``test`` returns None (passes) or the detail of the failure."""

    name: str
    test: Callable[[Chem.Mol, dict[str, float]], str | None]


class RuleSet:
    """The campaign's rules in the order they are tried; property values are computed once per molecule."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def names(self) -> list[str]:
        return [rule.name for rule in self.rules]

    def first_failure(self, mol: Chem.Mol) -> tuple[str, str] | None:
        """(rule, detail) of the first rule the molecule breaks, or None if it passes them all."""
        cache: dict[str, float] = {}
        for rule in self.rules:
            detail = rule.test(mol, cache)
            if detail is not None:
                return rule.name, detail
        return None

    def failures(self, mol: Chem.Mol) -> list[tuple[str, str]]:
        """Every rule the molecule breaks, in order (for a library's profile: who passes each rule)."""
        cache: dict[str, float] = {}
        return [(rule.name, detail) for rule in self.rules if (detail := rule.test(mol, cache)) is not None]


def compile_rules(filters: Mapping[str, Any]) -> RuleSet:
    """The rules of a ``[library.filters]`` table (as plain data); cached per distinct table in a process.

    Raises StageInputError naming the key for an unknown preset, property, alert set or a bad SMARTS.
    """
    return _compile(json.dumps(dict(filters), sort_keys=True, default=list))


@lru_cache(maxsize=8)
def _compile(key: str) -> RuleSet:
    f: dict[str, Any] = json.loads(key)
    bounds: list[tuple[str, str, str, float]] = []  # (origin, property, op, bound)
    for name in f.get("presets") or []:
        if name not in PRESETS:
            raise StageInputError(f"filters.presets: unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        bounds += [(name, prop, op, value) for prop, op, value in PRESETS[name]]
    legacy = {"max_molecular_weight": "mw", "max_rotatable_bonds": "rotatable_bonds", "max_heavy_atoms": "heavy_atoms"}
    bounds += [("max", prop, "<=", f[key]) for key, prop in legacy.items() if f.get(key) is not None]
    for table, op in (("min", ">="), ("max", "<=")):
        for prop, value in (f.get(table) or {}).items():
            if prop not in PROPERTIES:
                raise StageInputError(f"filters.{table}.{prop}: unknown property (choose from {', '.join(PROPERTIES)})")
            bounds.append((table, prop, op, float(value)))
    rules = [_bound_rule(*b) for b in dict.fromkeys(bounds)]
    rules += _smarts_rules(f.get("include_smarts") or [], f.get("exclude_smarts") or [])
    alerts = list(f.get("alerts") or []) + (["pains"] if f.get("pains") else [])
    for name in dict.fromkeys(alerts):
        if name not in ALERT_SETS:
            raise StageInputError(f"filters.alerts: unknown alert set {name!r} (choose from {', '.join(ALERT_SETS)})")
        rules.append(_alert_rule(name))
    return RuleSet(rules)


def _bound_rule(origin: str, prop: str, op: str, bound: float) -> Rule:
    compute = PROPERTIES[prop]
    name = f"{origin}: {prop} {op} {bound:g}"

    def test(mol: Chem.Mol, cache: dict[str, float]) -> str | None:
        value = cache.get(prop)
        if value is None:
            value = cache[prop] = float(compute(mol))
        ok = value <= bound if op == "<=" else value >= bound
        return None if ok else f"{prop} {value:.4g}"

    return Rule(name, test)


def _smarts_rules(include: list[str], exclude: list[str]) -> list[Rule]:
    def parse(key: str, smarts: str) -> Chem.Mol:
        pattern = Chem.MolFromSmarts(smarts)
        if pattern is None:
            raise StageInputError(f"filters.{key}: {smarts!r} is not valid SMARTS")
        return pattern

    rules = []
    if include:
        patterns = [parse("include_smarts", s) for s in include]

        def matches_one(mol: Chem.Mol, _: dict[str, float]) -> str | None:
            return None if any(mol.HasSubstructMatch(p) for p in patterns) else "matches none of them"

        rules.append(Rule(f"include: one of {len(patterns)} SMARTS", matches_one))
    for smarts in exclude:
        pattern = parse("exclude_smarts", smarts)
        rules.append(
            Rule(f"exclude: {smarts}", lambda mol, _, p=pattern: "matches" if mol.HasSubstructMatch(p) else None)
        )
    return rules


def _alert_rule(name: str) -> Rule:
    label = ALERT_SETS[name][0]
    catalog = _catalog(name)

    def test(mol: Chem.Mol, _: dict[str, float]) -> str | None:
        match = catalog.GetFirstMatch(mol)
        return None if match is None else match.GetDescription()

    return Rule(f"alerts: {label}", test)


@cache
def _catalog(name: str) -> FilterCatalog:
    params = FilterCatalogParams()
    params.AddCatalog(ALERT_SETS[name][1])
    return FilterCatalog(params)
