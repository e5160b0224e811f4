"""The results page for picking hits: interactions, clusters, diverse picks, 3D viewer, live view.

A small finished run is made by hand around the shipped 4JSV receptor: the
co-crystal ADP (which H-bonds to the Val2240 hinge backbone) is one "docked
pose", small molecules placed at the site centre are the others.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from impeccable.cli import main
from impeccable.clusters import butina_clusters, diverse_pick
from impeccable.config import CampaignError, load_campaign
from impeccable.picks import hits_settings, md_spread
from impeccable.report import write_report
from impeccable.runtime.records import TaskRecord, TaskState
from impeccable.store import DockRow, Store
from impeccable.viewer import SCRIPT, ViewerUnavailable, viewer_script
from impeccable.watch import activity, hits, snapshot

ROOT = Path(__file__).resolve().parents[1]
RECEPTOR = ROOT / "data" / "receptors" / "4jsv"
SITE_CENTRE = np.array([-19.448, -31.629, -58.726])
SECTIONS = (
    "Poses in 3D",
    "Top compounds",
    "Interactions",
    "Diverse top",
    "Stages",
    "Surrogate",
    "Score distributions",
    "Where the time went",
)


def _at_site(smiles: str) -> str:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    conf = mol.GetConformer()
    shift = SITE_CENTRE - conf.GetPositions().mean(axis=0)
    for i in range(mol.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, (p.x + shift[0], p.y + shift[1], p.z + shift[2]))
    return Chem.MolToMolBlock(mol)


def finished_run(folder: Path, hits_meta: dict | None = None) -> Store:
    """A finished run: 5 docked compounds in the 4JSV site (two analogue pairs), one MD result, one session."""
    store = Store(folder / "campaign.db")
    store.set_meta("name", "small")
    store.set_meta("campaign", json.dumps({"receptor": {"path": str(RECEPTOR)}}))
    store.set_meta("hits", json.dumps(hits_meta or {"hinge_residues": ["VAL2240.B"]}))
    session = store.begin_session(2, {"executable": "local", "function": "local"})
    adp = Chem.MolFromMolFile(str(RECEPTOR / "ligand_ADP.sdf"), removeHs=False)
    rows = [DockRow("adp", Chem.MolToSmiles(Chem.RemoveHs(adp)), 0, "seed", -9.0, Chem.MolToMolBlock(adp), None)]
    for i, (cid, smi) in enumerate(
        [
            ("p1", "c1ccc2[nH]ccc2c1"),
            ("p2", "Cc1ccc2[nH]ccc2c1"),
            ("q1", "CC(=O)Nc1ccc(O)cc1"),
            ("q2", "CC(=O)Nc1ccc(OC)cc1"),
        ]
    ):
        rows.append(DockRow(cid, smi, 0, "seed", -8.0 + 0.5 * i, _at_site(smi), None))
    store.add_docking(rows, task="s1-r0-seed-0000")
    store.add_pose_checks({r.id: (True, []) for r in rows})  # PoseBusters is tested elsewhere
    store.add_md(
        "p1",
        0,
        -21.0,
        1.0,
        {"binding_energy_kcal_mol": -21.0, "replica_means_kcal_mol": [-22.0, -20.0], "ci95_kcal_mol": [-22.0, -20.0]},
        None,
    )
    now = time.time()
    store.add_task_records(
        session,
        [
            TaskRecord(
                uid=f"t{i}",
                name=f"dock {i}",
                kind="executable",
                cores=1,
                gpus=0,
                tags={"stage": "seed dock", "round": "0"},
                state=TaskState.DONE,
                submitted=now,
                scheduled=now,
                started=now + i,
                finished=now + i + 1,
                backend="local",
                slots=(i % 2,),
            )
            for i in range(3)
        ],
    )
    store.end_session(session, "done")
    return store


def test_adp_makes_the_hinge_hbond_and_it_is_listed_first():
    from impeccable.interactions import InteractionProfiler

    profiler = InteractionProfiler(RECEPTOR / "receptor.pdb", ["VAL2240.B"])
    found = profiler.profile("adp", (RECEPTOR / "ligand_ADP.sdf").read_text())
    first = found.contacts[0]
    assert found.hinge_hbond is True and first.residue == "VAL2240.B" and first.backbone and first.hinge
    assert first.kind == "HBAcceptor" and 2.5 < first.distance_angstrom < 3.6  # adenine N accepts from the N-H
    assert "VAL2240.B (bb)" in found.columns()["hbond_residues"] and "VAL2240.B" in found.pocket
    assert profiler.profile("broken", "not a molfile").error == "no readable pose"
    unnamed = InteractionProfiler(RECEPTOR / "receptor.pdb").profile("adp", (RECEPTOR / "ligand_ADP.sdf").read_text())
    assert unnamed.hinge_hbond is None and unnamed.columns()["hinge_hbond"] == ""


def test_butina_clusters_analogues_and_the_diverse_pick_takes_each_clusters_best():
    ranked = [
        ("a1", "c1ccc2[nH]ccc2c1"),
        ("b1", "CC(=O)Nc1ccc(O)cc1"),
        ("a2", "Cc1ccc2[nH]ccc2c1"),
        ("b2", "CC(=O)Nc1ccc(OC)cc1"),
        ("x", "not smiles"),
    ]
    clusters = butina_clusters(ranked, similarity=0.3)
    assert clusters["a1"].cluster == clusters["a2"].cluster == 1 and clusters["b1"].cluster == clusters["b2"].cluster
    assert clusters["a1"].representative and not clusters["a2"].representative and clusters["a1"].size == 2
    assert clusters["x"].size == 1  # an unparsable SMILES stands alone
    ids = [cid for cid, _ in ranked]
    assert diverse_pick(ids, clusters, 10) == ["a1", "b1", "x"]
    assert diverse_pick(ids, clusters, 10, keep={"a2", "b2"}) == ["a2", "b2"]  # best eligible member
    assert diverse_pick(ids, clusters, 1) == ["a1"]
    assert len({m.cluster for m in butina_clusters(ranked, similarity=1.0).values()}) == 5
    with pytest.raises(ValueError, match="cluster similarity"):
        butina_clusters(ranked, similarity=0)


def test_md_spread_gives_an_interval_only_from_three_replicas():
    assert (
        md_spread({"replica_means_kcal_mol": [-22.0, -20.0], "ci95_kcal_mol": [-22.0, -20.0]})
        == "replicas -22.0, -20.0"
    )
    assert (
        md_spread({"replica_means_kcal_mol": [-1.0, -2.0, -3.0], "ci95_kcal_mol": [-2.9, -1.1]})
        == "95 % CI [-2.9, -1.1] over 3 replicas"
    )
    assert md_spread({}) == ""


def test_hits_section_is_checked_and_changing_it_does_not_block_a_resume(tmp_path):
    text = (ROOT / "campaigns" / "demo.toml").read_text().replace('"../data/', f'"{ROOT}/data/')
    bad = tmp_path / "bad.toml"
    bad.write_text(
        text.replace('hinge_residues = ["VAL2240.B"]', "hinge_residues = []").replace(
            "require_hinge_hbond = false", "require_hinge_hbond = true"
        )
    )
    with pytest.raises(CampaignError, match="hits: .*require_hinge_hbond = true needs hinge_residues"):
        load_campaign(bad)
    bad.write_text(text.replace('["VAL2240.B"]', '["Val 2240"]'))
    with pytest.raises(CampaignError, match="hits.hinge_residues: .*'Val 2240'"):
        load_campaign(bad)
    from impeccable.inputs import check_same_campaign

    good = tmp_path / "good.toml"
    good.write_text(text)
    store = Store(tmp_path / "run" / "campaign.db")
    check_same_campaign(load_campaign(good), store, tmp_path / "run")
    store.add_docking([DockRow("a", "CCO", 0, "seed", -5.0, None, None)], task="t")
    good.write_text(text.replace("diverse_top = 10", "diverse_top = 3"))
    check_same_campaign(load_campaign(good), store, tmp_path / "run")  # presentation only: no refusal
    assert hits_settings(store).diverse_top == 3 and hits_settings(store, diverse_top=5).diverse_top == 5


def test_report_of_a_small_finished_run_has_every_section_and_a_local_viewer(tmp_path):
    try:
        viewer_script()
    except ViewerUnavailable as exc:
        pytest.skip(f"3Dmol.js not available here: {exc}")
    finished_run(tmp_path)
    page = write_report(tmp_path).read_text()
    for section in SECTIONS:
        assert f">{section}" in page, section
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert scripts == [SCRIPT] and (tmp_path / "report" / SCRIPT).stat().st_size > 100_000
    assert (tmp_path / "report" / "3Dmol-LICENSE.txt").is_file()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from the network
    data = json.loads(
        re.search(r'<script type="application/json" id="pose-data">(.*?)</script>', page, re.S)
        .group(1)
        .replace("<\\/", "</")
    )
    assert [h["label"].split()[1] for h in data["hits"]] == [
        "adp",
        "p1",
        "p2",
        "q1",
        "q2",
    ]  # by Vina: having MD never moves a compound up
    adp = data["hits"][0]
    assert adp["contacts"][0]["residue"] == "VAL2240.B" and adp["contacts"][0]["hinge"]
    assert "VAL2240.B" in adp["pocket"] and "ATOM" in data["receptor"]
    assert "VAL2240.B (bb)" in page and "<b>yes</b>" in page  # the interaction list and its hinge verdict
    assert "replicas -22.0, -20.0" in page  # MD spread of p1
    start = page.index(">Diverse top")
    diverse = page[start : page.index("<h2", start)]  # up to the next section, whichever follows
    assert diverse.count("<tr>") == 1 + 3  # header + adp, indole pair, acetanilide pair (Tanimoto >= 0.4)


def test_export_carries_interaction_and_cluster_columns_and_the_diverse_set(tmp_path):
    finished_run(tmp_path, {"hinge_residues": ["VAL2240.B"], "require_hinge_hbond": True})
    assert main(["export", str(tmp_path)]) == 0
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "export" / "hits.csv"))}
    assert rows["adp"]["hinge_hbond"] == "yes" and rows["adp"]["hbond_residues"].startswith("VAL2240.B (bb)")
    assert rows["p1"]["cluster"] == rows["p2"]["cluster"] and rows["p1"]["cluster_best"] == "yes"
    assert rows["p2"]["cluster_best"] == "no" and rows["p1"]["md_spread"] == "replicas -22.0, -20.0"
    diverse = list(csv.DictReader(open(tmp_path / "export" / "diverse.csv")))
    hinge_binders = [cid for cid, r in rows.items() if r["hinge_hbond"] == "yes"]
    assert [r["id"] for r in diverse][:1] == ["adp"] and all(r["hinge_hbond"] == "yes" for r in diverse)
    assert len(diverse) <= len(hinge_binders)
    sdf = [m for m in Chem.SDMolSupplier(str(tmp_path / "export" / "diverse.sdf"), removeHs=False)]
    assert [m.GetProp("_Name") for m in sdf] == [r["id"] for r in diverse]
    assert sdf[0].GetProp("hinge_hbond") == "yes" and sdf[0].GetNumAtoms() == 42  # the pose, hydrogens kept
    assert main(["export", str(tmp_path), "--hinge", "Val 2240"]) == 2  # a bad residue id is one clear error


def test_activity_counts_finished_tasks_inside_the_window():
    rows = [
        {"stage": "dock", "started": 90.0, "finished": 100.0, "cores": 1, "slots": [0]},
        {"stage": "dock", "started": 40.0, "finished": 50.0, "cores": 1, "slots": [1]},  # before the window
        {"stage": "md", "started": 30.0, "finished": 95.0, "cores": 2, "slots": [0, 1]},
        {"stage": "md", "started": 99.0, "finished": None, "cores": 1, "slots": []},
    ]  # still running
    a = activity(rows, now=100.0, window_s=40.0)
    assert a["per_stage"]["dock"] == {"finished": 1, "tasks_per_s": 1 / 40, "busy_cores": 10 / 40}
    assert a["per_stage"]["md"]["busy_cores"] == pytest.approx(2 * 35 / 40)  # clipped to the window
    assert a["tasks_per_s"] == 2 / 40 and a["busy_cores"] == pytest.approx((10 + 70) / 40)


def test_status_watch_and_hits_on_a_finished_run(tmp_path, capsys):
    store = finished_run(tmp_path)
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(snapshot(store, tmp_path, window_s=3600))
    text = console.export_text()
    assert "session 1 done" in text and "seed dock" in text and "of 2" in text
    assert main(["status", str(tmp_path), "--watch", "--every", "0.1"]) == 0  # not running: one view, then out
    assert "results per stage" in capsys.readouterr().out
    assert main(["status", str(tmp_path), "--watch", "--every", "0"]) == 2
    import impeccable

    frame = impeccable.hits(tmp_path)
    assert list(frame.index) == ["adp", "p1", "p2", "q1", "q2"] and frame.loc["p1", "mmgbsa"] == -21.0
    assert len(hits(tmp_path, top=2)) == 2


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.slow
def test_the_viewer_draws_the_pose_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        viewer_script()
    except ViewerUnavailable as exc:
        pytest.skip(f"3Dmol.js not available here: {exc}")
    finished_run(tmp_path)
    page = write_report(tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,1000",
            "--virtual-time-budget=10000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    ligand_green = (g > 150) & (r < 120) & (b < 120)  # 3Dmol's greenCarbon sticks; nothing else on the page is
    assert ligand_green.sum() > 300, "the 3D viewer drew no ligand"


def test_ligand_efficiency_is_shown_where_the_ranking_gives_it_and_never_computed_here():
    from types import SimpleNamespace

    from impeccable.picks import ligand_efficiency
    from impeccable.report_hits import le_cell

    assert ligand_efficiency(SimpleNamespace(ligand_efficiency=0.31)) == 0.31 and le_cell(SimpleNamespace()) == ""
    assert le_cell(SimpleNamespace(ligand_efficiency=0.312)) == "0.31"
