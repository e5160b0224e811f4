"""One page, and one paragraph, that put two runs of a campaign side by side (compare, emulate).

:func:`explain` splits a makespan ratio into a work factor and an idle factor from the task records;
:func:`write_side_by_side` draws both runs' figures, stage tables and timelines on one page.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .fileio import write_atomic


def write_side_by_side(
    path: Path, title: str, summary_html: str, sides: list[tuple[str, dict[str, Any], Any]], explanation: str
) -> Path:
    """One page: a summary, then for each side its figures, per-stage table, timeline and busy cores."""
    from . import plots
    from .htmlparts import img, stage_table

    parts = [f"<h1>{html.escape(title)}</h1>", summary_html]
    for label, fig, store in sides:
        session = store.sessions()[-1]
        rows = store.task_rows(session["session"])
        gpu_use = (
            f", GPU utilisation {100 * fig['gpu_utilization']:.1f} %" if fig.get("gpu_utilization") is not None else ""
        )
        parts.append(
            f"<h2>{html.escape(label)}: makespan {fig['makespan_s']:.1f} s, utilisation "
            f"{100 * fig['utilization']:.1f} %{gpu_use}</h2>"
        )
        parts.append(stage_table(fig["stages"]))
        parts.append(
            img(
                plots.timeline(rows, fig["cores"], f"{label}: task timeline", session["gpus"], fig.get("nodes", ())),
                "timeline",
            )
        )
        parts.append(img(plots.concurrency(rows, fig["cores"], f"{label}: busy cores"), "concurrency"))
    parts.append("<h2>Where the time goes</h2><p>" + html.escape(explanation) + "</p>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><style>body{font-family:sans-serif;"
        "max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;padding:4px 8px}table{border-collapse:"
        "collapse}img{max-width:100%}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
    return write_atomic(path, page)


def explain(result: dict[str, Any]) -> str:
    """Where the time goes, from the records: makespan = busy core-seconds / (cores x utilisation).

    So the ratio splits exactly into a *work* factor (how many core-seconds each run's tasks
    needed: process starts, imports, model loads) and an *idle* factor (how well each kept the
    cores busy: launch latency, serialisation behind the launcher), and the per-stage
    core-seconds say which stage makes the work factor.
    """
    base = result["baseline"]
    p, b = result["pilot"], result[base]
    work_p, work_b = busy_core_seconds(p), busy_core_seconds(b)
    lines = []
    if work_p and work_b and p["utilization"] and b["utilization"]:
        work_factor = (work_p / p["cores"]) / (work_b / b["cores"])
        idle_factor = b["utilization"] / p["utilization"]
        lines.append(
            f"Makespan is busy core-seconds / (cores x utilisation). The pilot's tasks kept the cores busy for "
            f"{work_p:.0f} core-s at {100 * p['utilization']:.1f} % utilisation, the {base} run's for {work_b:.0f} "
            f"core-s at {100 * b['utilization']:.1f} %. So the makespan ratio {result['makespan_ratio']:.2f} is a "
            f"work factor of {work_factor:.2f} times an idle factor of {idle_factor:.2f}."
        )
    stages_p = {s["stage"]: s for s in p["stages"]}
    stages_b = {s["stage"]: s for s in b["stages"]}
    rows = []
    for name in sorted(set(stages_p) | set(stages_b)):
        cp = stages_p.get(name, {}).get("core_s", 0.0)
        cb = stages_b.get(name, {}).get("core_s", 0.0)
        rp = stages_p.get(name, {}).get("median_runtime_s")
        rb = stages_b.get(name, {}).get("median_runtime_s")
        rows.append((cb - cp, name, cp, cb, rp, rb))
    rows.sort(reverse=True)
    if rows:
        parts = [
            f"{name} {cp:.0f} vs {cb:.0f} core-s (median task {rp or 0:.1f} s vs {rb or 0:.1f} s)"
            for _, name, cp, cb, rp, rb in rows
        ]
        lines.append(f"Per stage, pilot vs {base}: " + "; ".join(parts) + ".")
    lines.append(
        f"Function tasks (training, inference) run in the pilot's persistent workers but as one `python -m` "
        f"process each under {base}, which pays an interpreter start, the import of torch and RDKit and a model "
        f"load every time: that is the work the pilot saves. Docking and MD run the same programs in both runs, "
        f"so their core-seconds should match; a gap there means something else shared the machine. "
        f"Launch overhead, median: {1e3 * p['launch_overhead_median_s']:.1f} ms (pilot) vs "
        f"{1e3 * b['launch_overhead_median_s']:.0f} ms ({base}); it matters when tasks are short and many."
    )
    return " ".join(lines)


def busy_core_seconds(figures: dict[str, Any]) -> float:
    return float(sum(stage["core_s"] for stage in figures["stages"]))
