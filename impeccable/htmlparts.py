"""Pieces of the self-contained HTML pages (report, comparison): inlined images and plain tables."""

from __future__ import annotations

import base64
import html
from typing import Any


def img(png: bytes, alt: str) -> str:
    """A PNG inlined as base64, so the page opens offline."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(headers: list[str], rows: list[list[Any]], left: int = 0) -> str:
    """A table whose first ``left`` columns are left-aligned; cells are inserted as given (escape them first)."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def stage_table(per_stage: list[dict[str, Any]]) -> str:
    """Throughput per stage, as :func:`impeccable.plots.stage_throughput` measures it."""
    return table(
        ["stage", "tasks", "span (s)", "tasks/s", "median runtime (s)", "core-seconds"],
        [
            [
                html.escape(t["stage"]),
                t["tasks"],
                f"{t['span_s']:.1f}",
                f"{t['tasks_per_s']:.2f}",
                f"{t['median_runtime_s']:.2f}",
                f"{t['core_s']:.0f}",
            ]
            for t in per_stage
        ],
        left=1,
    )


def page(title: str, body: str, extra_style: str = "") -> str:
    """A whole self-contained HTML page in the house style (the campaign report, the library profile)."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td.l,th.l{{text-align:left}}img{{max-width:100%}}h2{{border-bottom:1px solid #ddd;margin-top:2em}}
.note{{color:#555;font-size:90%}}{extra_style}</style></head><body>{body}</body></html>"""


def depiction(smiles: str) -> str:
    """An SVG drawing of a molecule (empty if RDKit cannot read the SMILES)."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ""
    drawer = rdMolDraw2D.MolDraw2DSVG(220, 160)
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    return svg[svg.find("<svg") :]
