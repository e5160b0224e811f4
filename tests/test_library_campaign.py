"""A campaign over two sources (an SDF and a CSV) with the lead-like preset, PAINS and Brenk, end to end:
the export carries each hit's source and source ids, and ``library inspect`` on the campaign adds up."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_campaign_run import ROOT, tiny
from test_library_prepare import TWO_SOURCES

from impeccable.campaign import CampaignRunner
from impeccable.cli import main
from impeccable.config import load_campaign
from impeccable.library_store import LibraryStore, compound_sources
from impeccable.results import export
from impeccable.stages.library import read_library
from impeccable.store import Store

pytestmark = pytest.mark.slow


def _write_sources(tmp_path: Path) -> str:
    """40 MOSES compounds as a vendor SDF, 40 more and three special rows as a house CSV: the hydrochloride of a
    vendor compound that passes the filters (a duplicate once standardised), a PAINS and an unparsable SMILES.
    Returns the vendor id of the compound the salt duplicates."""
    from rdkit import Chem

    from impeccable.stages.prepare import prepare_batch

    moses = [rec for _, rec in zip(range(80), read_library(ROOT / "data" / "library" / "moses_20k.csv"))]
    settings = {"standardize": True, "filters": {"presets": ["lead-like"], "alerts": ["pains", "brenk"]}}
    keeper = next(i for i, s in enumerate(prepare_batch([r.smiles for r in moses[:40]], settings)["smiles"]) if s)
    writer = Chem.SDWriter(str(tmp_path / "vendor.sdf"))
    for rec in moses[:40]:
        mol = Chem.MolFromSmiles(rec.smiles)
        mol.SetProp("_Name", f"V-{rec.id}")
        writer.write(mol)
    writer.close()
    rows = [(f"H-{rec.id}", rec.smiles) for rec in moses[40:]]
    rows += [
        ("H-dup-salt", moses[keeper].smiles + ".Cl"),
        ("H-rhodanine", "S=C1SC(=Cc2ccc(OC)c(OC)c2)C(=O)N1"),
        ("H-bad", "C1CC"),
    ]
    with open(tmp_path / "house.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "smiles"), *rows])
    return f"vendor:V-{moses[keeper].id}"


def test_two_sources_lead_like_pains_brenk_end_to_end(tmp_path):
    merged = _write_sources(tmp_path)
    text = tiny(tmp_path).read_text()  # the tiny campaign, its library replaced by the two sources, no MD
    library = text[text.index("[library]") : text.index("[dock]")]
    text = text.replace(library, TWO_SOURCES.format(batch_size=25, presets='"lead-like"'))
    (tmp_path / "c.toml").write_text(text.replace("top_m = 1", "top_m = 0"))
    campaign = load_campaign(tmp_path / "c.toml")
    summary = CampaignRunner(campaign, tmp_path / "run").run()
    assert summary["failed_tasks"] == []
    store = Store.open_existing(tmp_path / "run")
    counts = LibraryStore(store).counts()
    assert counts.rows == 83 and counts.failed == 1 and counts.duplicates == 1
    assert counts.rows == counts.failed + counts.duplicates + counts.filtered + counts.kept
    assert counts.filtered_by_rule.get("alerts: PAINS") == 1
    assert store.inference_counts(0)[1] + store.inference_counts(0)[2] + store.inference_counts(0)[3] == counts.kept
    csv_path, _, n = export(store, tmp_path / "export")
    with open(csv_path, newline="") as fh:
        hits = list(csv.DictReader(fh))
    assert n == len(hits) >= 8 and {h["source"] for h in hits} <= {"vendor", "house"}
    assert compound_sources(store, [merged])[merged] == ("vendor", f"{merged};house:H-dup-salt")
    assert all(h["source_ids"].startswith(h["id"]) for h in hits)
    with open(tmp_path / "export" / "library_dropped.csv", newline="") as fh:
        dropped = {row["id"]: row for row in csv.DictReader(fh)}
    assert len(dropped) == counts.rows - counts.kept and dropped["house:H-bad"]["dropped_as"] == "failed"
    assert dropped["house:H-rhodanine"]["reason"].startswith("alerts: PAINS (ene_rhod")
    out = tmp_path / "inspect.json"
    assert (
        main(
            [
                "library",
                "inspect",
                str(tmp_path / "c.toml"),
                "--json",
                str(out),
                "--html",
                str(tmp_path / "inspect.html"),
                "--cores",
                "2",
            ]
        )
        == 0
    )
    profile = json.loads(out.read_text())
    assert {"rows", "parsed", "failed", "duplicates", "filtered_by_rule", "kept", "mol_per_s"} <= set(profile)
    assert (profile["rows"], profile["failed"], profile["duplicates"], profile["kept"]) == (
        counts.rows,
        counts.failed,
        counts.duplicates,
        counts.kept,
    )
    assert (
        profile["rows"]
        == profile["failed"] + profile["duplicates"] + sum(profile["filtered_by_rule"].values()) + profile["kept"]
    )
    assert profile["cost"]["estimate"] is True and profile["cost"]["docking_tasks"] >= 2
