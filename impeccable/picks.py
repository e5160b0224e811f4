"""Picking compounds from the ranked hits: interactions, chemotype clusters, uncertainty, a diverse top N.

The ranking itself is :func:`impeccable.results.ranked_hits`; this module adds
what a chemist looks at before buying: each pose's contacts (hinge first,
:mod:`.interactions`), its Butina cluster (:mod:`.clusters`), the spread of its
MD estimate, and one compound per cluster, best-ranked first, optionally only
among poses that make the hinge H-bond. Settings come from the campaign's
``[hits]`` section as the run stored it (defaults for older runs).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clusters import Membership, butina_clusters, diverse_pick
from .config import HitsSection
from .interactions import COLUMNS as INTERACTION_COLUMNS
from .interactions import InteractionProfiler, PoseInteractions
from .results import Hit, _receptor_pdb, export, ranked_hits, spreadsheet_safe
from .store import Store, md_details

COLUMNS = (*INTERACTION_COLUMNS, "cluster", "cluster_size", "cluster_best", "diverse_pick", "md_spread")


def hits_settings(store: Store, **overrides: Any) -> HitsSection:
    """The run's ``[hits]`` settings (as its last session stored them), with the non-None ``overrides``."""
    stored = store.get_meta("hits")
    settings = HitsSection.model_validate_json(stored) if stored else HitsSection()
    update = {k: v for k, v in overrides.items() if v not in (None, [], ())}
    return HitsSection.model_validate({**settings.model_dump(), **update}) if update else settings


@dataclass
class HitPanel:
    """The ranked hits with what was computed to pick among them."""

    ranked: list[Hit]
    settings: HitsSection
    interactions: dict[str, PoseInteractions] = field(default_factory=dict)
    clusters: dict[str, Membership] = field(default_factory=dict)
    diverse: list[Hit] = field(default_factory=list)
    md_spread: dict[str, str] = field(default_factory=dict)
    receptor: Path | None = None
    notes: list[str] = field(default_factory=list)  # what could not be computed, and why

    def columns(self, cid: str) -> dict[str, str]:
        """The export's columns for one compound (empty where not computed)."""
        found = self.interactions.get(cid)
        member = self.clusters.get(cid)
        row = found.columns() if found else dict.fromkeys(INTERACTION_COLUMNS, "")
        row.update(
            {
                "cluster": str(member.cluster) if member else "",
                "cluster_size": str(member.size) if member else "",
                "cluster_best": ("yes" if member.representative else "no") if member else "",
                "diverse_pick": "yes" if cid in {h.id for h in self.diverse} else "",
                "md_spread": self.md_spread.get(cid, ""),
            }
        )
        return row


def hit_panel(store: Store, ranked: Sequence[Hit], settings: HitsSection) -> HitPanel:
    """Clusters of the first ``cluster_pool`` hits, interactions of the first ``interactions_top`` poses and of
    every diverse pick, and the diverse top N (hinge binders only if ``require_hinge_hbond``)."""
    panel = HitPanel(list(ranked), settings, receptor=_receptor_pdb(store))
    pool = panel.ranked[: settings.cluster_pool]
    panel.clusters = butina_clusters([(h.id, h.smiles) for h in pool], settings.cluster_similarity)
    panel.md_spread = {cid: md_spread(doc) for cid, doc in md_details(store).items()}
    profiler = _profiler(panel)
    if profiler is not None:
        for h in pool[: settings.interactions_top]:
            panel.interactions[h.id] = profiler.profile(h.id, store.pose(h.id))
    ids = [h.id for h in pool]
    if settings.require_hinge_hbond and profiler is not None:
        picked = _hinge_binders(store, panel, profiler, ids)
    elif settings.require_hinge_hbond:
        picked = []
    else:
        picked = diverse_pick(ids, panel.clusters, settings.diverse_top)
    if profiler is not None:
        for cid in picked:
            if cid not in panel.interactions:
                panel.interactions[cid] = profiler.profile(cid, store.pose(cid))
    by_id = {h.id: h for h in pool}
    panel.diverse = [by_id[cid] for cid in picked]
    return panel


def _profiler(panel: HitPanel) -> InteractionProfiler | None:
    if panel.receptor is None:
        panel.notes.append("interactions not computed: the campaign's receptor.pdb was not found")
        return None
    try:
        return InteractionProfiler(panel.receptor, panel.settings.hinge_residues)
    except ImportError as exc:
        panel.notes.append(f"interactions not computed: {exc} (pip install prolif, in the [science] extra)")
    return None


def _hinge_binders(store: Store, panel: HitPanel, profiler: InteractionProfiler, ids: list[str]) -> list[str]:
    """Walk the ranking, fingerprinting poses as needed, until ``diverse_top`` clusters have a hinge binder."""
    n, seen, picked = panel.settings.diverse_top, set(), []
    for cid in ids:
        member = panel.clusters[cid]
        if member.cluster in seen:
            continue
        if cid not in panel.interactions:
            panel.interactions[cid] = profiler.profile(cid, store.pose(cid))
        if panel.interactions[cid].hinge_hbond:
            seen.add(member.cluster)
            picked.append(cid)
            if len(picked) == n:
                break
    return picked


def md_spread(doc: dict[str, Any]) -> str:
    """How far an MD estimate can be trusted: its 95 % interval over replicas where there are 3 or more,
    else the replica means themselves (two values give no meaningful interval)."""
    means = doc.get("replica_means_kcal_mol") or []
    interval = doc.get("ci95_kcal_mol")
    if len(means) >= 3 and interval:
        return f"95 % CI [{interval[0]:.1f}, {interval[1]:.1f}] over {len(means)} replicas"
    if means:
        return f"replicas {', '.join(f'{m:.1f}' for m in means)}"
    return ""


def ligand_efficiency(hit: Hit) -> float | None:
    """The hit's ligand efficiency where the ranking provides one (issue 27's column); never computed here."""
    value = getattr(hit, "ligand_efficiency", None)
    return None if value is None else float(value)


def export_picks(
    store: Store, folder: Path, top: int | None, settings: HitsSection
) -> tuple[list[Path], int, HitPanel]:
    """``hits.csv``/``hits.sdf`` with the interaction and cluster columns, then ``diverse.csv``/``diverse.sdf``
    (the diverse picks among the exported hits); returns the four paths, the hits exported, and the panel."""
    ranked = ranked_hits(store)
    panel = hit_panel(store, ranked[:top] if top else ranked, settings)
    csv_path, sdf_path, n = export(store, folder, top, annotate=panel.columns)
    return [csv_path, sdf_path, *write_diverse(folder, panel)], n, panel


def write_diverse(folder: Path, panel: HitPanel) -> tuple[Path, Path]:
    """``diverse.csv`` and ``diverse.sdf``: the rows of ``hits.csv`` and ``hits.sdf`` (just written in
    ``folder``) of the diverse picks, in rank order."""
    from rdkit import Chem

    wanted = [h.id for h in panel.diverse]
    csv_path, sdf_path = folder / "diverse.csv", folder / "diverse.sdf"
    with open(folder / "hits.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    header, by_id = rows[0], {r[1]: r for r in rows[1:]}
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        # hits.csv holds each id as a spreadsheet shows it safely (results.spreadsheet_safe)
        writer.writerows(by_id[spreadsheet_safe(cid)] for cid in wanted if spreadsheet_safe(cid) in by_id)
    os.replace(tmp, csv_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open(folder / "hits.sdf", "rb") as fh:  # may be empty (no poses stored): no error then
            poses = {m.GetProp("_Name"): m for m in Chem.ForwardSDMolSupplier(fh, removeHs=False) if m is not None}
    tmp = sdf_path.with_suffix(".sdf.tmp")
    sdf = Chem.SDWriter(str(tmp))
    for cid in wanted:
        if cid in poses:
            sdf.write(poses[cid])
    sdf.close()
    os.replace(tmp, sdf_path)
    return csv_path, sdf_path
