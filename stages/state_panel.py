"""The drug panel: does the ligand-state stage put each drug's dominant microstate at pH 7.4 first?

``data/state_panel.csv`` lists 25 drugs, one or more per ionisable class (carboxylic
acids, aliphatic amines, amidines and guanidines, phenols, imides, sulfonamides, a
tetrazole, pyridines, imidazoles, purines, zwitterions), each with its literature
pKa values, the source, and the microstate(s) those values make dominant at pH
7.4. A drug counts as correct when the first state :func:`ligands.scored_states`
returns is one of them, compared as non-standard InChI with fixed hydrogens
(resonance forms are the same state; another tautomer or protonation site is not;
stereo is compared only where the expected state names it).

    python -m impeccable.stages.state_panel        # prints each drug and the count
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from rdkit import Chem

from .ligands import StateOptions, scored_states
from .quiet import quiet_rdkit

__all__ = ["DEFAULT_PANEL", "run_state_panel", "same_state"]

DEFAULT_PANEL = Path(__file__).resolve().parents[1] / "data" / "state_panel.csv"
PANEL_PH = 7.4


def same_state(smiles: str, expected: str) -> bool:
    """Whether two SMILES name the same microstate (stereo ignored unless ``expected`` has it)."""
    with quiet_rdkit():
        a, b = Chem.MolFromSmiles(smiles), Chem.MolFromSmiles(expected)
        if a is None or b is None:
            return False
        if "@" not in expected and "/" not in expected and "\\" not in expected:
            Chem.RemoveStereochemistry(a)
        return Chem.MolToInchi(a, options="/FixedH") == Chem.MolToInchi(b, options="/FixedH")


def run_state_panel(path: Path = DEFAULT_PANEL, options: StateOptions = StateOptions(ph=PANEL_PH)) -> dict[str, Any]:
    """Score the panel: ``{"correct", "size", "failures": [{name, top_state, expected}], "drugs": [...]}``."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    drugs = []
    for row in rows:
        states = scored_states(row["smiles"], options)
        top = states[0][0]
        expected = row["expected_at_7_4"].split()
        drugs.append(
            {
                "name": row["name"],
                "class": row["class"],
                "top_state": top,
                "states": [[s, p] for s, p in states],
                "expected": expected,
                "pka_literature": row["pka_literature"],
                "source": row["source"],
                "correct": any(same_state(top, e) for e in expected),
            }
        )
    return {
        "correct": sum(d["correct"] for d in drugs),
        "size": len(drugs),
        "ph": options.ph,
        "failures": [{k: d[k] for k in ("name", "top_state", "expected")} for d in drugs if not d["correct"]],
        "drugs": drugs,
        "panel": str(path),
    }


def main(argv: list[str] | None = None) -> int:
    result = run_state_panel(Path(argv[0]) if argv else DEFAULT_PANEL)
    for d in result["drugs"]:
        print(f"{'ok ' if d['correct'] else 'BAD'} {d['name']:18s} {d['top_state']}")
    print(f"{result['correct']}/{result['size']} drugs with the literature's dominant state first at pH {result['ph']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
