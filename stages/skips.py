"""Why a library compound was not scored, in the few categories a chemist acts on.

Every stage says in words why it left a compound out (the library reader, the
filters, ligand preparation, docking); this module sorts those words into
categories, so that a run can count its losses per category and a user can see
at once whether a library is mostly unparsable, mostly metal complexes or
mostly too large for the filters:

- ``empty``: a row with no id or no SMILES (the library reader skips it);
- ``parse``: RDKit cannot read the SMILES;
- ``valence``: RDKit reads it but cannot sanitise it (impossible valence, aromaticity);
- ``element``: a metal or another element outside the force fields, or no carbon at all;
- ``size``: more heavy atoms than any drug-like ligand (ligand preparation's limit);
- ``filter: <name>``: removed by one of ``[library.filters]`` (molecular weight, rotatable bonds,
  heavy atoms, PAINS);
- ``preparation``: standardisation, 3D embedding or force-field typing failed;
- ``docking``: meeko or Vina failed on every state;
- ``lost``: the docking task ended without a result for it (its stderr says why);
- ``other``: anything else (the reason itself is always kept beside the category).
"""

from __future__ import annotations

import re

__all__ = ["category", "is_filter", "FILTERS"]

# the first words of each filter's reason (stages.filters.check), and the category it gets
FILTERS = {
    "molecular weight ": "filter: molecular weight",
    "rotatable bonds ": "filter: rotatable bonds",
    "heavy atoms ": "filter: heavy atoms",
    "PAINS": "filter: PAINS",
}

_RULES = [  # (pattern searched in the reason, category), first match wins
    (re.compile(r"empty id|empty SMILES|no id after the SMILES"), "empty"),
    (re.compile(r"unparsable SMILES|SMILES has no atoms"), "parse"),
    (re.compile(r"valence|aromaticity|kekuli", re.IGNORECASE), "valence"),
    (re.compile(r"metal and other inorganic|not an organic ligand"), "element"),
    (re.compile(r"heavy atoms, more than the"), "size"),
    (re.compile(r"wrote no result"), "lost"),
    (re.compile(r"^docking failed|meeko|Vina", re.IGNORECASE), "docking"),
    (re.compile(r"standardisation|embedding|MMFF94|not a valid molecule|unexpected"), "preparation"),
]


def category(reason: str) -> str:
    """The category of a stage's reason for leaving a compound out (see the module doc)."""
    for start, name in FILTERS.items():
        if reason.startswith(start):
            return name
    for pattern, name in _RULES:
        if pattern.search(reason):
            return name
    return "other"


def is_filter(reason: str) -> bool:
    """A filter's decision (the compound is fine, the campaign does not want it), not a failure."""
    return category(reason).startswith("filter")
