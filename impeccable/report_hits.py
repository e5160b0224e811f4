"""The report's sections for picking compounds: poses in 3D, interactions per hit, the diverse top N."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

from .htmlparts import table
from .interactions import HBONDS, PoseInteractions
from .picks import HitPanel, ligand_efficiency
from .results import Hit
from .store import Store
from .viewer import ShownPose, ViewerUnavailable, install_script, viewer_section


def viewer_html(store: Store, panel: HitPanel, report_dir: Path) -> str:
    """The 3D viewer of the best ``viewer_top`` poses and the diverse picks, or a note saying why not."""
    head = "<h2 id='poses3d'>Poses in 3D</h2>"
    n = panel.settings.viewer_top
    if n == 0:
        return ""
    if panel.receptor is None:
        return head + "<p class='note'>No 3D viewer: the campaign's receptor.pdb was not found.</p>"
    try:
        script = install_script(report_dir)
    except ViewerUnavailable as exc:
        return head + f"<p class='note'>No 3D viewer: {html.escape(str(exc))}.</p>"
    shown = list(panel.ranked[:n]) + [h for h in panel.diverse if h not in panel.ranked[:n]]
    poses = [
        ShownPose(_label(h, h in panel.diverse), store.pose(h.id) or "", panel.interactions.get(h.id))
        for h in shown
        if store.pose(h.id)
    ]
    note = (
        "<p class='note'>Docked poses (Vina) in the receptor; the MD-refined structures are not kept by the MD "
        "stage, so none is shown. Green: ligand; thin sticks: pocket residues (any atom within 5 A), labelled "
        "in grey; dashed lines and coloured labels: the contacts ProLIF finds (blue H-bond, red salt bridge, "
        "purple pi, gold hydrophobic). Drag to rotate, scroll to zoom. 3Dmol.js is loaded from "
        f"<code>{html.escape(script)}</code> beside this page (no network).</p>"
    )
    return head + note + viewer_section(panel.receptor, poses, script)


def _label(h: Hit, diverse: bool) -> str:
    score = f"MM/GBSA {h.mmgbsa:.1f}" if h.mmgbsa is not None else f"Vina {h.dock_score:.1f}"
    return f"{h.rank} {h.id} ({score}){' diverse' if diverse else ''}"


def interactions_html(panel: HitPanel) -> str:
    """One row per fingerprinted hit: the hinge verdict, then residues per kind of contact."""
    hinge = ", ".join(panel.settings.hinge_residues) or "none named (set [hits] hinge_residues)"
    parts = [
        "<h2>Interactions</h2>",
        "<p class='note'>Protein-ligand contacts of each docked pose, perceived by "
        "ProLIF with its default geometric criteria (one structure: no occupancy over time). Hinge residues: "
        f"{html.escape(hinge)}; a hinge H-bond is one to their backbone N-H or C=O. (bb): backbone atoms. "
        f"Poses fingerprinted: the best {panel.settings.interactions_top} and the diverse picks.</p>",
    ]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in panel.notes]
    rows = [
        [
            h.rank,
            html.escape(h.id),
            _hinge_cell(found),
            _residues(found, HBONDS),
            _residues(found, ("Cationic", "Anionic")),
            _residues(found, ("PiStacking", "PiCation", "CationPi")),
            _residues(found, ("XBDonor",)),
            _residues(found, ("Hydrophobic",)),
        ]
        for h in panel.ranked
        if (found := panel.interactions.get(h.id)) is not None
    ]
    parts.append(
        table(
            ["rank", "id", "hinge H-bond", "H-bonds", "salt bridges", "pi", "halogen bonds", "hydrophobic"],
            rows,
            left=8,
        )
    )
    return "\n".join(parts)


def _hinge_cell(found: PoseInteractions) -> str:
    if found.error:
        return html.escape(found.error)
    if found.hinge_hbond is None:
        return ""
    return "<b>yes</b>" if found.hinge_hbond else "no"


def _residues(found: PoseInteractions, kinds: tuple[str, ...]) -> str:
    return html.escape(", ".join(found.residues(kinds)))


def diverse_html(panel: HitPanel, depict: Callable[[str], str]) -> str:
    """The diverse top N: one compound per ECFP4 Butina cluster, best-ranked first."""
    s = panel.settings
    rule = " among poses that make a hinge backbone H-bond" if s.require_hinge_hbond else ""
    parts = [
        f"<h2>Diverse top {s.diverse_top}</h2>",
        "<p class='note'>The best-ranked compound of each chemotype "
        f"cluster{rule}: Butina clustering of the best {min(s.cluster_pool, len(panel.ranked))} ranked "
        f"compounds on ECFP4 (Morgan radius 2, 2,048 bits), Tanimoto similarity &ge; {s.cluster_similarity:g} "
        f"joins a cluster. {len({m.cluster for m in panel.clusters.values()})} clusters. "
        "<code>impeccable export</code> writes these as <code>diverse.csv</code> and "
        "<code>diverse.sdf</code>.</p>",
    ]
    has_le = any(ligand_efficiency(h) is not None for h in panel.diverse)
    rows = []
    for h in panel.diverse:
        member, found = panel.clusters[h.id], panel.interactions.get(h.id)
        row = [h.rank, html.escape(h.id), depict(h.state_smiles or h.smiles), f"{h.dock_score:.2f}"]
        row += [le_cell(h)] if has_le else []
        row += [
            "" if h.mmgbsa is None else f"{h.mmgbsa:.1f}",
            html.escape(panel.md_spread.get(h.id, "")),
            f"{member.cluster} ({member.size})",
            "" if found is None else _hinge_cell(found),
        ]
        rows.append(row)
    headers = [
        "rank",
        "id",
        "docked state",
        "Vina (kcal/mol)",
        *(["LE"] if has_le else []),
        "MM/GBSA (kcal/mol)",
        "MD spread",
        "cluster (size)",
        "hinge H-bond",
    ]
    if not rows:
        parts.append("<p>No compound qualifies.</p>")
    else:
        parts.append(table(headers, rows, left=3))
    return "\n".join(parts)


def le_cell(h: Hit) -> str:
    le = ligand_efficiency(h)
    return "" if le is None else f"{le:.2f}"


def hit_columns(panel: HitPanel, h: Hit) -> list[str]:
    """Cells the top-compounds table adds per hit: cluster, hinge verdict (the MM/GBSA cell carries the spread)."""
    member, found = panel.clusters.get(h.id), panel.interactions.get(h.id)
    return [f"{member.cluster}" if member else "", "" if found is None else _hinge_cell(found)]
