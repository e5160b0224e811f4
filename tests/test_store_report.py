"""Store, ranking, report and export on a hand-made run directory (no chemistry computed)."""

from __future__ import annotations

import csv
import sqlite3
import time
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

from impeccable.cli import main
from impeccable.report import write_report
from impeccable.results import export, ranked_hits
from impeccable.runtime.records import TaskRecord, TaskState
from impeccable.store import DockRow, Store


def pose(smiles: str) -> str:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    return Chem.MolToMolBlock(mol)


def make_run(tmp_path):
    store = Store(tmp_path / "campaign.db")
    store.set_meta("name", "synthetic")
    session = store.begin_session(2, {"executable": "local", "function": "local"})
    smiles = {"a": "CCO", "b": "c1ccccc1O", "c": "CC(=O)Nc1ccccc1", "d": "CCN"}
    states = {"d": "CC[NH3+]"}  # the docked state, where it differs from the library SMILES
    store.add_docking(
        [
            DockRow(c, s, 0, "seed", -5.0 - i, pose(s), None, states.get(c, s))
            for i, (c, s) in enumerate(smiles.items())
        ],
        task="s1-r0-seed-0000",
    )
    store.add_docking([DockRow("bad", "C1CC", 0, "seed", None, None, "unparsable")], task="s1-r0-seed-0001")
    store.add_model(0, str(tmp_path / "m.pt"), {"val_spearman": 0.6, "n_train": 3})
    store.add_predictions(
        0,
        0,
        ["a", "e", "f"],
        np.array([-5.5, -4.0, np.nan], dtype=np.float32),
        (3, 2, 0, 1),
        [("f", "unparsable")],
        [("e", "CCCC", -4.0)],
    )
    store.add_md("c", 0, -20.0, 1.5, {"binding_energy_kcal_mol": -20.0}, None)
    now = time.time()
    records = [
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
        for i in range(4)
    ]
    store.add_task_records(session, records)
    store.end_session(session, "done")
    return store


def test_ranking_is_by_vina_and_mmgbsa_never_outranks_by_presence(tmp_path):
    """The old order put every compound with MM/GBSA first, whatever its numbers (issue 27)."""
    hits = ranked_hits(make_run(tmp_path))
    assert [h.id for h in hits] == ["d", "c", "b", "a"]  # Vina -8, -7, -6, -5; c has MM/GBSA and stays second
    c = hits[1]
    assert c.mmgbsa == -20.0 and c.mmgbsa_stderr == 1.5 and hits[0].mmgbsa is None
    assert c.ranks == {"vina": 2, "ligand_efficiency": 4, "mmgbsa": 1}  # no prediction: no surrogate rank
    assert hits[3].predicted == -5.5 and hits[3].ranks["surrogate"] == 1
    # ligand efficiency: -score / heavy atoms of the docked state; ethylamine (3 heavy atoms) is the most efficient
    assert hits[0].ligand_efficiency == 8.0 / 3 and hits[0].ranks["ligand_efficiency"] == 1
    by_mmgbsa = ranked_hits(make_run(tmp_path / "again"), order="mmgbsa")
    assert [h.id for h in by_mmgbsa] == ["c", "d", "b", "a"]  # asked for: MM/GBSA first, the rest by Vina


def test_mmgbsa_shows_values_under_three_replicas_and_a_t_interval_from_three(tmp_path):
    store = make_run(tmp_path)
    store.add_md(
        "c",
        0,
        -25.7,
        0.0,
        {
            "binding_energy_kcal_mol": -25.7,
            "replica_means_kcal_mol": [-25.7, -25.7],
            "ligand_rmsd_mean_angstrom": 1.24,
            "hinge_hbond_occupancy": 0.5,
            "hinge_residue": "VAL2240",
        },
        None,
    )
    store.add_md(
        "d", 0, -20.0, 1.0, {"binding_energy_kcal_mol": -20.0, "replica_means_kcal_mol": [-21.0, -20.0, -19.0]}, None
    )
    hits = {h.id: h for h in ranked_hits(store)}
    assert "+/-" not in hits["c"].mmgbsa_text and "±" not in hits["c"].mmgbsa_text
    assert hits["c"].mmgbsa_text == "-25.7 (n=2: -25.7, -25.7; too few for an interval)"
    assert hits["c"].mmgbsa_ci95 is None
    assert hits["d"].mmgbsa_text == "-20.0 [-22.5, -17.5] (t 95%, n=3)"  # t(0.975, 2) = 4.30, s = 1
    export(store, tmp_path / "out")
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "out" / "hits.csv"))}
    assert rows["c"]["md_ligand_rmsd_angstrom"] == "1.240" and rows["c"]["md_hinge_hbond_occupancy"] == "0.500"
    assert rows["c"]["mmgbsa_ci95_low_kcal_mol"] == "" and rows["d"]["mmgbsa_ci95_low_kcal_mol"] == "-22.484"
    assert rows["c"]["rank_mmgbsa"] == "1" and rows["d"]["rank_vina"] == "1"


def test_redock_nominees_are_committed_with_their_batch(tmp_path):
    store = make_run(tmp_path)
    assert store.selected(0, "redock", batch=0) == {"e"} and store.done_batches(0) == {0}
    assert store.selected_compounds(0, "redock", 0) == [("e", "CCCC", -4.0)]  # all re-docking needs


def test_predictions_are_kept_per_batch_and_older_rounds_can_be_pruned(tmp_path):
    store = make_run(tmp_path)
    ids = [f"m{i}" for i in range(5000)]
    for r in (1, 2):
        for batch in range(4):
            scores = np.linspace(-9, -5, 5000, dtype=np.float32) + r
            store.add_predictions(r, batch, ids, scores, (5000, 5000, 0, 0), [], [(ids[0], "C", float(scores[0]))])
    assert len(store.prediction_scores(1)) == 20_000 and store.prediction_scores(2).min() == np.float32(-7)
    assert store.predictions_of(2, ["m0", "a", "zz"]) == {"m0": -7.0}
    assert store.first_predictions(["a", "e", "m4999", "f"]) == {"a": -5.5, "e": -4.0, "m4999": -4.0}
    store.vacuum()
    size = (tmp_path / "campaign.db").stat().st_size
    assert store.prune_predictions() == [0, 1]
    store.vacuum()
    assert (tmp_path / "campaign.db").stat().st_size < size
    assert len(store.prediction_scores(0)) == 0 and len(store.prediction_scores(2)) == 20_000
    assert store.selected_compounds(0, "redock", 0) == [("e", "CCCC", -4.0)]  # nominees outlive the prune
    assert store.first_predictions(["m4999"]) == {"m4999": -3.0}
    assert store.prune_predictions() == []


def test_a_store_with_per_compound_predictions_stays_readable_and_resumable(tmp_path):
    db = sqlite3.connect(tmp_path / "campaign.db")
    db.execute(
        "CREATE TABLE predictions (round INTEGER NOT NULL, id TEXT NOT NULL, smiles TEXT NOT NULL, "
        "score REAL NOT NULL, PRIMARY KEY (round, id))"
    )
    db.execute(
        "CREATE TABLE selections (round INTEGER NOT NULL, stage TEXT NOT NULL, id TEXT NOT NULL, "
        "batch INTEGER NOT NULL, PRIMARY KEY (round, stage, id))"
    )
    db.executemany("INSERT INTO predictions VALUES (0, ?, ?, ?)", [("x", "CCO", -6.0), ("y", "CCN", -5.0)])
    db.execute("INSERT INTO selections VALUES (0, 'redock', 'x', 3)")
    db.commit()
    db.close()
    store = Store(tmp_path / "campaign.db")
    assert store.selected_compounds(0, "redock", 3) == [("x", "CCO", -6.0)]
    assert store.first_predictions(["y"]) == {"y": -5.0} and list(store.prediction_scores(0)) == [-6.0, -5.0]
    store.add_predictions(1, 0, ["x", "y"], np.array([-7.0, -8.0], dtype=np.float32), (2, 2, 0, 0), [], [])
    assert store.prune_predictions() == [0]
    assert store.selected_compounds(0, "redock", 3) == [("x", "CCO", -6.0)]  # kept in selections
    assert store.first_predictions(["x", "y"]) == {"x": -7.0, "y": -8.0}


def test_report_and_export(tmp_path):
    store = make_run(tmp_path)
    page = write_report(tmp_path).read_text()
    assert page.count("data:image/png;base64") >= 4 and page.count("<svg") == 4 + 4  # top 4, and 4 diverse picks
    csv_path, sdf_path, n = export(store, tmp_path / "export")
    rows = list(csv.DictReader(open(csv_path)))
    assert n == 4 and rows[1]["id"] == "c" and rows[1]["mmgbsa_kcal_mol"] == "-20.000"
    assert rows[0]["id"] == "d" and rows[0]["state_smiles"] == "CC[NH3+]" and "CC[NH3+]" in page
    assert open(sdf_path).read().count("$$$$") == 4
    assert "<b>not trained on</b>" in page  # the parity plot says what it shows


def test_pose_checks_flag_implausible_poses_in_export_and_report(tmp_path):
    store = make_run(tmp_path)
    store.add_pose_checks({"c": (False, ["bond_lengths", "volume_overlap_with_protein"]), "d": (True, [])})
    hits = {h.id: h for h in ranked_hits(store)}
    assert hits["c"].implausible and hits["c"].pose_check == "failed: bond_lengths, volume_overlap_with_protein"
    assert not hits["d"].implausible and hits["b"].pose_check == ""  # not checked: no receptor known here
    rows = {r["id"]: r for r in csv.DictReader(open(export(store, tmp_path / "export")[0]))}
    assert rows["c"]["pose_check"].startswith("failed: bond_lengths") and rows["d"]["pose_check"] == "passed"
    assert "implausible" in write_report(tmp_path).read_text()


class _Loop:
    """What check_top_poses asks of the task loop: the submitted tasks, run at once by ``finish``."""

    draining = False

    def __init__(self, fail: bool = False):
        self.submitted, self.fail = [], fail
        self.pilot = type("P", (), {"allocation": type("A", (), {"cores": 2})()})()

    def submit(self, task, handler):
        self.submitted.append((task, handler))

    def failed_task(self, future, stage):
        return self.fail

    def finish(self):
        from impeccable.work import check_poses

        for task, handler in self.submitted:
            verdicts = [] if self.fail else check_poses(*task.args)
            handler(type("F", (), {"result": lambda self, v=verdicts: v})())


def test_the_run_checks_the_best_poses_once_and_the_report_only_reads(tmp_path):
    from impeccable.campaign import check_top_poses
    from impeccable.config import load_campaign
    from impeccable.progress import CampaignProgress
    from impeccable.stagetasks import StageTasks

    store = make_run(tmp_path)
    campaign = load_campaign(Path(__file__).resolve().parent.parent / "campaigns" / "demo.toml")
    campaign = campaign.model_copy(update={"hits": campaign.hits.model_copy(update={"check_poses": 3})})
    stage, failing = StageTasks(campaign, tmp_path).pose_checking, _Loop(fail=True)
    progress = CampaignProgress()
    assert check_top_poses(campaign, store, stage, failing, progress) == 2  # 3 poses over 2 cores
    failing.finish()  # both parts failed (a node lost, Ctrl-C): nothing stored, counted as failed
    assert store.pose_checks() == {} and progress.stages["pose check"].failed == 3
    loop = _Loop()
    assert check_top_poses(campaign, store, stage, loop, CampaignProgress()) == 2  # the next session: again
    loop.finish()
    best = [h.id for h in ranked_hits(store)[:3]]
    assert set(store.pose_checks()) == set(best)  # the best three, nothing beyond
    # these poses were embedded at the origin, far from the receptor: said so, not a crash of the batch
    assert all(failed == ["no_receptor_atom_within_12A"] for _, failed in store.pose_checks().values())
    assert all(h.pose_check for h in ranked_hits(store)[:3]) and not ranked_hits(store)[3].pose_check
    assert check_top_poses(campaign, store, stage, _Loop(), CampaignProgress()) == 0  # a resumed run: none again
    before = store.pose_checks()
    assert "checked here" in write_report(tmp_path).read_text()  # a report computes nothing
    assert store.pose_checks() == before


def test_a_store_written_before_ligand_states_gains_the_column(tmp_path):
    db = sqlite3.connect(tmp_path / "campaign.db")
    db.execute(
        "CREATE TABLE docking (id TEXT PRIMARY KEY, smiles TEXT NOT NULL, round INTEGER NOT NULL, "
        "origin TEXT NOT NULL, score REAL, pose_sdf TEXT, runtime_s REAL, error TEXT, task TEXT)"
    )
    db.execute("INSERT INTO docking VALUES ('old', 'CCO', 0, 'seed', -4.0, NULL, NULL, NULL, 't')")
    db.commit()
    db.close()
    store = Store(tmp_path / "campaign.db")
    store.add_docking([DockRow("new", "CCN", 0, "seed", -4.5, None, None, "CC[NH3+]")], task="t2")
    assert store.state_smiles() == {"new": "CC[NH3+]"} and store.dock_score_map() == {"old": -4.0, "new": -4.5}


def test_status_and_errors_from_the_cli(tmp_path, capsys):
    make_run(tmp_path)
    assert main(["status", str(tmp_path)]) == 0
    assert "seed dock" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "no campaign.db here" in capsys.readouterr().err
    assert main(["prune", str(tmp_path)]) == 0 and "nothing to prune" in capsys.readouterr().out
