"""The HTML page of ``impeccable library inspect``: counts, rules, property histograms, scaffolds, a sample, cost.

One self-contained file like the campaign report (images inlined, depictions as SVG).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from . import plots
from .htmlparts import depiction, img, page, table


def write_html(report: dict[str, Any], path: Path, title: str) -> Path:
    """Write the page atomically; returns its path."""
    r = report
    parts = [
        f"<h1>Library {html.escape(title)}</h1>",
        f"<p class='note'>settings: <code>{html.escape(json.dumps(r['settings']))}</code></p>",
        "<h2>Counts</h2>",
        table(
            ["rows", "parsed", "failed", "duplicates", "filtered", "kept", "adds up", "molecules/s"],
            [
                [
                    r["rows"],
                    r["parsed"],
                    r["failed"],
                    r["duplicates"],
                    r["filtered"],
                    r["kept"],
                    "yes" if r["adds_up"] else "<b>no</b>",
                    f"{r['mol_per_s']:,.0f}",
                ]
            ],
        ),
    ]
    rules = [[html.escape(rule), n, r["filtered_by_rule"].get(rule, 0)] for rule, n in r["passing_each_rule"].items()]
    parts.append(
        "<h2>Rules</h2><p class='note'>passing: molecules (of those parsed) that pass the rule on its own; "
        "dropped: molecules for which it was the first rule broken (these add up to the filtered count). "
        f"Passing all rules: {r['passing_all_rules']}.</p>"
    )
    parts.append(table(["rule", "passing", "dropped"], rules, left=1))
    if r["failed_by_reason"]:
        parts.append(
            "<h2>Failures</h2>"
            + table(["reason", "records"], [[html.escape(k), v] for k, v in r["failed_by_reason"].items()], left=1)
        )
        parts.append("<p class='note'>" + "<br>".join(html.escape(f) for f in r["first_failures"]) + "</p>")
    parts.append(
        "<h2>Properties of the kept compounds</h2>"
        + img(plots.histogram_grid(r["histograms"], f"{r['kept']} kept compounds"), "histograms")
    )
    parts.append(
        f"<h2>Most common scaffolds</h2><p class='note'>Bemis-Murcko; {r['distinct_scaffolds']} distinct "
        "among the kept compounds (an empty scaffold: no ring).</p>"
    )
    parts.append(
        table(
            ["scaffold", "compounds", "SMILES"],
            [
                [
                    depiction(s["scaffold"]) if s["scaffold"] else "",
                    s["count"],
                    f"<code>{html.escape(s['scaffold'])}</code>",
                ]
                for s in r["top_scaffolds"]
            ],
            left=1,
        )
    )
    parts.append(
        "<h2>A sample of the kept compounds</h2>"
        + table(
            ["id", "depiction", "SMILES"],
            [
                [html.escape(s["id"]), depiction(s["smiles"]), f"<code>{html.escape(s['smiles'])}</code>"]
                for s in r["sample"]
            ],
            left=1,
        )
    )
    if r.get("cost"):
        c = r["cost"]
        parts.append(
            "<h2>Campaign cost (estimate)</h2>"
            + table(
                [
                    "compounds screened",
                    "compounds docked",
                    "docking tasks",
                    "docking core-hours",
                    "inference core-hours",
                ],
                [
                    [
                        c["compounds_screened"],
                        c["compounds_docked"],
                        c["docking_tasks"],
                        c["docking_core_hours"],
                        c["inference_core_hours"],
                    ]
                ],
            )
            + f"<p class='note'>{html.escape(c['basis'])}</p>"
        )
    steps = r["steps"]
    parts.append("<h2>Where the time went</h2><p class='note'>" + html.escape(json.dumps(steps)) + "</p>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page(title, "".join(parts)))
    os.replace(tmp, path)
    return path
