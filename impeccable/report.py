"""The HTML report of a run directory: hits with depictions, model quality, scores, and where the time went.

One self-contained file (images inlined as base64 PNG, depictions as SVG), so
it opens offline and can be mailed or archived with the run.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

from . import plots
from .config import HitsSection
from .htmlparts import depiction as _depiction
from .htmlparts import img, page, stage_table, table
from .library_store import compound_sources
from .node_events import describe as describe_node
from .node_events import read_node_events
from .picks import hit_panel, hits_settings, ligand_efficiency
from .report_hits import diverse_html, hit_columns, interactions_html, le_cell, viewer_html
from .results import ORDER_NOTE, md_cell, ranked_hits, stage_counts
from .runtime.metrics import summarize
from .stalls import describe, read_stalls
from .store import Store


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    top: int = 20,
    *,
    hinge: list[str] | None = None,
    require_hinge: bool | None = None,
) -> Path:
    """``RUN_DIR/report/index.html`` (and 3Dmol.js beside it); ``hinge``/``require_hinge`` override the
    run's ``[hits]`` settings."""
    run_dir = Path(run_dir)
    # A report computes nothing (analysis belongs to the run); the store is opened writable where the file
    # system allows only so that a run directory written by an older version gains its newer columns.
    writable = os.access(run_dir / "campaign.db", os.W_OK) and os.access(run_dir, os.W_OK)
    store = Store.open_existing(run_dir, readonly=not writable)
    out = Path(out) if out else run_dir / "report" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        settings = hits_settings(store, hinge_residues=hinge, require_hinge_hbond=require_hinge)
        body = _body(store, run_dir, top, settings, out.parent)
    finally:
        store.close()
    tmp = out.with_suffix(".tmp")
    tmp.write_text(
        page(
            f"{run_dir.name} report",
            body,
            extra_style="td code{display:inline-block;min-width:14em;"
            "word-break:break-all;text-align:left}.poses button{margin:2px;font-size:85%}",
        )
    )
    os.replace(tmp, out)
    return out


def _pose_cell(verdict: str) -> str:
    if not verdict:
        return "not checked"
    if verdict == "passed":
        return "passed"
    return f'<b style="color:#b00">implausible</b><br><span class="note">{html.escape(verdict)}</span>'


def _docked_after_model(store: Store, r: int) -> list[str]:
    """Compounds the round-r model never trained on: re-docked in round r or later (model r trained on
    everything docked before it: the seed sample and the re-docks of earlier rounds)."""
    return store.redocked_since(r)


def _receptor_section(store: Store) -> str:
    """Every heterogen near the docking box, and whether the campaign's receptor kept it (heterogens.toml)."""
    from .stages.metals import read_provenance

    receptor = json.loads(store.get_meta("campaign") or "{}").get("receptor") or {}
    if not receptor.get("path"):
        return ""
    mode = receptor.get("metals", "auto")
    found = read_provenance(Path(receptor["path"]) / "heterogens.toml")
    if not found:
        return (
            f"<h2>Receptor</h2><p class='note'>{html.escape(receptor['path'])}: no heterogens.toml, so no record "
            "of the heterogens its source structure had near the box.</p>"
        )
    rows = [
        [
            html.escape(h.label),
            f"{h.distance_to_box_angstrom:.1f}",
            "kept" if h.kept(mode) else "removed",
            html.escape(h.reason(mode)),
        ]
        for h in found
    ]
    return (
        f"<h2>Receptor</h2><p class='note'>{html.escape(receptor['path'])}, metals = {html.escape(mode)}: every "
        "heterogen of the source structure within 8 A of the docking box, and why it was kept or removed "
        "(auto keeps a metal ion held by at least two protein residues within 2.8 A).</p>"
        + table(["heterogen", "A from box", "receptor", "why"], rows, left=4)
    )


def _library_section(store: Store) -> str:
    """What the library stage kept and dropped, by rule (nothing for a library screened as it is)."""
    from .library_store import LibraryStore, summary

    counts = LibraryStore(store).counts()
    if not counts.batches:
        return ""
    s = summary(counts)
    return (
        "<h2>Library</h2><p class='note'>Prepared by function tasks before the seed docking (standardisation, "
        "filters, InChIKey deduplication as the campaign file says); each dropped compound keeps the rule that "
        "dropped it (<code>impeccable library inspect</code> profiles a library before a campaign).</p>"
        + table(
            ["rows", "failed", "duplicates", "filtered", "kept"],
            [[s["rows"], s["failed"], s["duplicates"], s["filtered"], s["kept"]]],
        )
        + table(
            ["rule", "compounds it dropped"], [[html.escape(k), v] for k, v in s["filtered_by_rule"].items()], left=1
        )
    )


def _body(store: Store, run_dir: Path, top: int, settings: HitsSection, report_dir: Path) -> str:
    parts = [
        f"<h1>Campaign {html.escape(store.get_meta('name') or run_dir.name)}</h1>",
        f'<p class="note">run directory {html.escape(str(run_dir.resolve()))}; report written '
        f"{time.strftime('%Y-%m-%d %H:%M')}</p>",
    ]
    # hits
    ranked = ranked_hits(store)
    panel = hit_panel(store, ranked, settings)
    parts.append(viewer_html(store, panel, report_dir))
    hits = ranked[:top]
    sources = compound_sources(store, [h.id for h in hits])
    has_le = any(ligand_efficiency(h) is not None for h in hits)
    rows = [
        [
            h.rank,
            html.escape(h.id),
            _depiction(h.state_smiles or h.smiles),
            f"{h.dock_score:.2f}",
            *([le_cell(h)] if has_le else []),
            "" if h.predicted is None else f"{h.predicted:.2f}",
            html.escape(h.mmgbsa_text),
            *hit_columns(panel, h),
            md_cell(h),
            h.origin,
            _pose_cell(h.pose_check),
            html.escape(sources[h.id][1]).replace(";", "<br>"),
            f"<code>{html.escape(h.smiles)}</code><br>docked as <code>{html.escape(h.state_smiles or '?')}</code>",
        ]
        for h in hits
    ]
    n_bad, n_checked = sum(h.implausible for h in hits), sum(bool(h.pose_check) for h in hits)
    parts.append(
        f"<h2>Top compounds</h2><p class='note'>{ORDER_NOTE} LE: ligand efficiency, -Vina score per heavy "
        "atom (kcal/mol). MM/GBSA: ensemble mean with its Student-t 95% interval over replicas from 3 "
        "replicas on, else the replica values (single-trajectory, no entropy: a ranking score, not an "
        "absolute free energy). MD: the ligand's mean heavy-atom RMSD from its docked pose over the "
        "frames, and the fraction of frames with the hinge H-bond. Each compound was docked as each of its states (stereoisomers "
        "of unassigned centres, protonation states at the campaign pH) and scores as its best state, "
        "which is drawn and named here. Pose: PoseBusters' <code>dock</code> checks (geometry, internal "
        f"energy, clashes and overlap with the protein) on the best poses, made by the run ([hits] check_poses): {n_bad} of the {n_checked} "
        "checked here failed one and are flagged as implausible.</p>"
    )
    parts.append(
        "<p class='note'>The surrogate is one network: it gives no per-compound spread (its held-out "
        "error is under Surrogate). Cluster: the compound's ECFP4 Butina cluster (see Diverse top N); hinge: "
        "whether the pose makes a hinge backbone H-bond (see Interactions).</p>"
    )
    parts.append(
        table(
            [
                "rank",
                "id",
                "docked state",
                "Vina (kcal/mol)",
                *(["LE"] if has_le else []),
                "surrogate",
                "MM/GBSA (kcal/mol)",
                "cluster",
                "hinge H-bond",
                "MD",
                "origin",
                "pose",
                "source ids",
                "SMILES",
            ],
            rows,
            left=3,
        )
    )
    parts.append(interactions_html(panel))
    parts.append(diverse_html(panel, _depiction))
    parts.append(_receptor_section(store))
    # progress
    parts.append(
        "<h2>Stages</h2>"
        + table(["stage", "done", "failed"], [[html.escape(s), d, f] for s, d, f, _ in stage_counts(store)], left=1)
    )
    parts.append(_library_section(store))
    # surrogate
    dock = store.dock_score_map()
    parts.append(
        "<h2>Surrogate</h2><p class='note'>val Spearman/RMSE are measured on the split that picked the "
        "best epoch (early stopping), so they are optimistic. The parity plots show only compounds the "
        "round's model was <b>not trained on</b>: those it nominated and that were docked afterwards. "
        "They were chosen for their good predictions, so their range is narrow and the correlation is "
        "lower than on a random sample; see the README for cross-validated figures.</p>"
    )
    for r, report in store.models():
        after = [cid for cid in _docked_after_model(store, r) if cid in dock]
        preds = store.predictions_of(r, after)
        held_out = [cid for cid in after if cid in preds]
        summary = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in report.items()
            if isinstance(v, (int, float))
        )
        parts.append(f"<p>round {r}: {html.escape(summary)}</p>")
        if held_out:
            from scipy.stats import spearmanr

            m = [dock[c] for c in held_out]
            p = [preds[c] for c in held_out]
            rho = spearmanr(m, p).statistic if len(held_out) > 2 else float("nan")
            parts.append(
                img(
                    plots.parity(
                        m,
                        p,
                        f"round {r}: not trained on, docked after prediction (n={len(held_out)}, Spearman {rho:.2f})",
                    ),
                    "parity",
                )
            )
    series = {"seed docking": store.origin_scores("seed"), "re-docking": store.origin_scores("redock")}
    models = store.models()
    if models:
        series["surrogate, whole library"] = store.prediction_scores(models[-1][0])
    parts.append("<h2>Score distributions</h2>" + img(plots.distributions(series), "distributions"))
    # runtime
    parts.append("<h2>Where the time went</h2>")
    for session in store.sessions():
        rows_s = store.task_rows(session["session"])
        if not rows_s:
            continue
        cores, gpus = session["cores"] or 1, session["gpus"]
        m = summarize(store.task_records(session["session"]), cores, gpus, session["gpu_shares"])
        routes = json.loads(session["routes"] or "{}")
        devices = f"; {m.gpus:g} GPUs ({session['gpu_shares']} slots each)" if gpus else ""
        parts.append(
            f"<h3>Session {session['session']} ({session['status']}; {cores} cores{devices}; routes "
            f"{html.escape(', '.join(f'{k}: {v}' for k, v in routes.items()))})</h3>"
        )
        gpu_use = f", GPU utilisation {100 * m.gpu_utilization:.1f} %" if m.gpu_utilization is not None else ""
        parts.append(
            f"<p>{m.tasks} tasks, makespan {m.makespan_s:.1f} s, utilisation {100 * m.utilization:.1f} %{gpu_use}, "
            f"throughput {m.throughput_tasks_per_s:.2f} tasks/s, median queue wait "
            f"{m.queue_wait_median_s:.3f} s, median launch overhead {1e3 * m.launch_overhead_median_s:.1f} ms</p>"
        )
        nodes = json.loads(session.get("nodes") or "[]")
        parts.append(
            img(
                plots.timeline(
                    rows_s,
                    cores,
                    "task timeline per core and GPU slot" if gpus else "task timeline per core",
                    gpus,
                    nodes,
                ),
                "timeline",
            )
        )
        parts.append(img(plots.concurrency(rows_s, cores), "concurrency"))
        png, per_stage = plots.stage_throughput(rows_s)
        parts.append(img(png, "throughput per stage"))
        parts.append(stage_table(per_stage))
    node_events = read_node_events(run_dir)
    if node_events:
        rows_all = store.task_rows()
        parts.append(
            f"<h2>Nodes lost ({len(node_events)})</h2><p>The pilot's node watch found these nodes gone; "
            "their slots left the pool and the tasks that ran there ran again on the other nodes (see "
            "<code>nodes.jsonl</code>; nothing committed is lost):</p><ul>"
            + "".join(f"<li>{html.escape(describe_node(e, rows_all))}</li>" for e in node_events)
            + "</ul>"
        )
    parts.append(_devices_html(store))
    stalls = read_stalls(run_dir)
    if stalls:
        parts.append(
            f"<h2>Stall events ({len(stalls)})</h2><p>The pilot's watchdog found a runtime with work "
            "that fitted free slots while nothing happened (see <code>stalls.jsonl</code>):</p><ul>"
            + "".join(f"<li>{html.escape(describe(e))}</li>" for e in stalls)
            + "</ul>"
        )
    failures = store.failures()
    if failures:
        parts.append(f"<h2>Compounds that failed a stage ({len(failures)})</h2>")
        parts.append(
            table(
                ["id", "stage", "reason"], [[html.escape(i), s, html.escape(r)] for i, s, r in failures[:200]], left=3
            )
        )
    return "\n".join(parts)


def _devices_html(store: Store) -> str:
    """What the GPU stages ran on: the plan (each stage's GPUs per task) and every fallback reason, once."""
    plan = json.loads(store.get_meta("gpu_plan") or "null")
    notes = json.loads(store.get_meta("device_notes") or "[]")
    if plan is None:
        return ""
    asked = ", ".join(
        f"{stage} {wanted} GPU per task ({plan['slots'].get(stage, 0)} of {plan['shares']} slots per GPU)"
        for stage, wanted in plan["wanted"].items()
    )
    rows = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        f"<h2>Devices</h2><p>{plan['devices']} GPU(s) ({html.escape(plan['source'] or 'none')}); asked: "
        f"{html.escape(asked)}.</p>" + (f"<ul>{rows}</ul>" if rows else "")
    )
