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
from .htmlparts import img, stage_table, table
from .picks import hit_panel, hits_settings, ligand_efficiency
from .report_hits import diverse_html, hit_columns, interactions_html, le_cell, viewer_html
from .results import check_top_poses, ranked_hits, stage_counts
from .runtime.metrics import summarize
from .node_events import describe as describe_node, read_node_events
from .stalls import describe, read_stalls
from .store import Store


def write_report(run_dir: str | Path, out: str | Path | None = None, top: int = 20, *,
                 hinge: list[str] | None = None, require_hinge: bool | None = None) -> Path:
    """``RUN_DIR/report/index.html`` (and 3Dmol.js beside it); ``hinge``/``require_hinge`` override the
    run's ``[hits]`` settings."""
    run_dir = Path(run_dir)
    # Writable where the file system allows, so the PoseBusters verdicts (1-3 s per pose) are kept for the
    # next report and the export; a finished run on a read-only mount still gets its report.
    writable = os.access(run_dir / "campaign.db", os.W_OK) and os.access(run_dir, os.W_OK)
    store = Store.open_existing(run_dir, readonly=not writable)
    out = Path(out) if out else run_dir / "report" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        settings = hits_settings(store, hinge_residues=hinge, require_hinge_hbond=require_hinge)
        body = _body(store, run_dir, top, settings, out.parent)
    finally:
        store.close()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(run_dir.name)} report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td.l,th.l{{text-align:left}}img{{max-width:100%}}h2{{border-bottom:1px solid #ddd;margin-top:2em}}
.note{{color:#555;font-size:90%}}td code{{display:inline-block;min-width:14em;word-break:break-all;text-align:left}}.poses button{{margin:2px;font-size:85%}}</style></head><body>{body}</body></html>"""
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page)
    os.replace(tmp, out)
    return out


def _depiction(smiles: str) -> str:
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ""
    drawer = rdMolDraw2D.MolDraw2DSVG(220, 160)
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    return svg[svg.find("<svg"):]


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


def _body(store: Store, run_dir: Path, top: int, settings: HitsSection, report_dir: Path) -> str:
    parts = [f"<h1>Campaign {html.escape(store.get_meta('name') or run_dir.name)}</h1>",
             f'<p class="note">run directory {html.escape(str(run_dir.resolve()))}; report written '
             f'{time.strftime("%Y-%m-%d %H:%M")}</p>']
    # hits
    ranked = ranked_hits(store)
    panel = hit_panel(store, ranked, settings)
    parts.append(viewer_html(store, panel, report_dir))
    hits = check_top_poses(store, ranked[:top], top)
    has_le = any(ligand_efficiency(h) is not None for h in hits)
    rows = [[h.rank, html.escape(h.id), _depiction(h.state_smiles or h.smiles), f"{h.dock_score:.2f}",
             *([le_cell(h)] if has_le else []),
             "" if h.predicted is None else f"{h.predicted:.2f}",
             "" if h.mmgbsa is None else f"{h.mmgbsa:.1f} ± {h.mmgbsa_stderr or 0:.1f}", *hit_columns(panel, h),
             h.origin, _pose_cell(h.pose_check),
             f"<code>{html.escape(h.smiles)}</code><br>docked as <code>{html.escape(h.state_smiles or '?')}</code>"]
            for h in hits]
    n_bad, n_checked = sum(h.implausible for h in hits), sum(bool(h.pose_check) for h in hits)
    parts.append("<h2>Top compounds</h2><p class='note'>Ranked by MM/GBSA where it was computed (ensemble mean ± "
                 "standard error over replicas; single-trajectory, no entropy: a ranking score, not an absolute "
                 "free energy), then by Vina score. Each compound was docked as each of its states (stereoisomers "
                 "of unassigned centres, protonation states at the campaign pH) and scores as its best state, "
                 "which is drawn and named here. Pose: PoseBusters' <code>dock</code> checks (geometry, internal "
                 f"energy, clashes and overlap with the protein) on these poses: {n_bad} of the {n_checked} checked "
                 "failed one and are flagged as implausible.</p>")
    parts.append("<p class='note'>MD spread: the 95 % interval of the MD estimate over its replicas where there "
                 "are at least 3, else the replica means (too few for an interval). The surrogate is one network: "
                 "it gives no per-compound spread (its held-out error is under Surrogate). Cluster: the compound's "
                 "ECFP4 Butina cluster (see Diverse top N); hinge: whether the pose makes a hinge backbone H-bond "
                 "(see Interactions).</p>")
    parts.append(table(["rank", "id", "docked state", "Vina (kcal/mol)", *(["LE"] if has_le else []), "surrogate",
                        "MM/GBSA (kcal/mol)", "cluster", "hinge H-bond", "MD spread", "origin", "pose", "SMILES"],
                       rows, left=3))
    parts.append(interactions_html(panel))
    parts.append(diverse_html(panel, _depiction))
    # progress
    parts.append("<h2>Stages</h2>" + table(["stage", "done", "failed"],
                                             [[html.escape(s), d, f] for s, d, f, _ in stage_counts(store)], left=1))
    # surrogate
    dock = store.dock_score_map()
    parts.append("<h2>Surrogate</h2><p class='note'>val Spearman/RMSE are measured on the split that picked the "
                 "best epoch (early stopping), so they are optimistic. The parity plots show only compounds the "
                 "round's model was <b>not trained on</b>: those it nominated and that were docked afterwards. "
                 "They were chosen for their good predictions, so their range is narrow and the correlation is "
                 "lower than on a random sample; see the README for cross-validated figures.</p>")
    for r, report in store.models():
        after = [cid for cid in _docked_after_model(store, r) if cid in dock]
        preds = store.predictions_of(r, after)
        held_out = [cid for cid in after if cid in preds]
        summary = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()
                            if isinstance(v, (int, float)))
        parts.append(f"<p>round {r}: {html.escape(summary)}</p>")
        if held_out:
            from scipy.stats import spearmanr

            m = [dock[c] for c in held_out]
            p = [preds[c] for c in held_out]
            rho = spearmanr(m, p).statistic if len(held_out) > 2 else float("nan")
            parts.append(img(plots.parity(m, p, f"round {r}: not trained on, docked after prediction "
                                                 f"(n={len(held_out)}, Spearman {rho:.2f})"), "parity"))
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
        cores = session["cores"] or 1
        m = summarize(store.task_records(session["session"]), cores)
        routes = json.loads(session["routes"] or "{}")
        parts.append(f"<h3>Session {session['session']} ({session['status']}; {cores} cores; routes "
                     f"{html.escape(', '.join(f'{k}: {v}' for k, v in routes.items()))})</h3>")
        parts.append(f"<p>{m.tasks} tasks, makespan {m.makespan_s:.1f} s, utilisation {100 * m.utilization:.1f} %, "
                     f"throughput {m.throughput_tasks_per_s:.2f} tasks/s, median queue wait "
                     f"{m.queue_wait_median_s:.3f} s, median launch overhead {1e3 * m.launch_overhead_median_s:.1f} ms</p>")
        nodes = json.loads(session.get("nodes") or "[]")
        parts.append(img(plots.timeline(rows_s, cores, "task timeline per core", nodes), "timeline"))
        parts.append(img(plots.concurrency(rows_s, cores), "concurrency"))
        png, per_stage = plots.stage_throughput(rows_s)
        parts.append(img(png, "throughput per stage"))
        parts.append(stage_table(per_stage))
    node_events = read_node_events(run_dir)
    if node_events:
        rows_all = store.task_rows()
        parts.append(f"<h2>Nodes lost ({len(node_events)})</h2><p>The pilot's node watch found these nodes gone; "
                     "their slots left the pool and the tasks that ran there ran again on the other nodes (see "
                     "<code>nodes.jsonl</code>; nothing committed is lost):</p><ul>"
                     + "".join(f"<li>{html.escape(describe_node(e, rows_all))}</li>" for e in node_events) + "</ul>")
    stalls = read_stalls(run_dir)
    if stalls:
        parts.append(f"<h2>Stall events ({len(stalls)})</h2><p>The pilot's watchdog found a runtime with work "
                     "that fitted free slots while nothing happened (see <code>stalls.jsonl</code>):</p><ul>"
                     + "".join(f"<li>{html.escape(describe(e))}</li>" for e in stalls) + "</ul>")
    failures = store.failures()
    if failures:
        parts.append(f"<h2>Compounds that failed a stage ({len(failures)})</h2>")
        parts.append(table(["id", "stage", "reason"], [[html.escape(i), s, html.escape(r)] for i, s, r in failures[:200]],
                            left=3))
    return "\n".join(parts)
