"""Nothing lost at any instant: finished compounds are kept however their task ended, every skipped molecule is
accounted for with its reason, ids are safe as folder names, and the messages say what to do."""

from __future__ import annotations

import csv
import os
import sqlite3
import time

import numpy as np
import pytest
from test_campaign_run import tiny

from impeccable.config import load_campaign
from impeccable.events import InterruptGuard
from impeccable.inputs import size_warnings
from impeccable.leftout import skip_counts, skipped
from impeccable.results import export, spreadsheet_safe
from impeccable.runtime import executable_task
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.records import TaskState
from impeccable.stages.errors import StageInputError
from impeccable.stages.filters import FilterRules, check
from impeccable.stages.library import LibraryRecord
from impeccable.stages.rankfiles import RankLines, rank_file, read_rank_files
from impeccable.stages.skips import category
from impeccable.stagetasks import STORED, StageTasks, folder_name
from impeccable.store import DockRow, Store, StoreError
from impeccable.tasks import TaskLoop

# ------------------------------------------------------------------ finished means kept


def test_rank_lines_are_on_disk_one_by_one_and_a_cut_line_is_left_out(tmp_path):
    path = rank_file(tmp_path, 0)
    with RankLines(path) as sink:
        assert not path.exists()  # a rank that fails before its first molecule leaves no file
        sink.write({"id": "a", "score_kcal_mol": -7.0})
        assert [r["id"] for r in read_rank_files(tmp_path)] == ["a"]  # readable while the rank still runs
        sink.write({"id": "b", "error": "x"})
    with open(path, "a") as fh:
        fh.write('{"id": "c", "score_kc')  # the rank was killed while writing its third line
    assert [r["id"] for r in read_rank_files(tmp_path)] == ["a", "b"]
    path.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(StageInputError, match=r"dock.rank0.jsonl:2: not JSON"):
        list(read_rank_files(tmp_path))


def _batch(tmp_path, key="s3-r0-seed-00002"):
    campaign = load_campaign(tiny(tmp_path))
    stages = StageTasks(campaign, tmp_path / "run")
    records = [LibraryRecord(f"C{i}", "CCO") for i in range(3)]
    batch = stages.docking.batch(records, 3, 2, 0, "seed")
    assert batch.key == key
    stages.docking.task(batch)  # its folder: ligands.csv and an empty out/
    with RankLines(rank_file(batch.folder / "out", 0)) as sink:
        sink.write({"id": "C0", "smiles": "CCO", "score_kcal_mol": -6.5, "pose_sdf": "p", "state_smiles": "CCO"})
        sink.write({"id": "C1", "smiles": "CCO", "error": "embedding failed"})
    return stages, batch


def test_a_task_that_did_not_end_done_keeps_its_finished_compounds_and_only_those(tmp_path):
    stages, batch = _batch(tmp_path)
    partial = stages.docking.rows(batch, complete=False)
    assert [(r.id, r.score, r.error) for r in partial] == [("C0", -6.5, None), ("C1", None, "embedding failed")]
    done = stages.docking.rows(batch, complete=True)  # a task that ended DONE: the silent compound failed
    assert [r.id for r in done] == ["C0", "C1", "C2"] and "wrote no result" in done[2].error


def test_resume_stores_what_a_killed_session_left_on_disk_once(tmp_path):
    stages, batch = _batch(tmp_path)
    (found,) = stages.docking.unstored()
    assert (found.key, found.round, found.origin, found.index) == (batch.key, 0, "seed", 2)
    assert [r.id for r in found.records] == ["C0", "C1", "C2"]
    stages.docking.mark_stored(found)
    assert (batch.folder / STORED).exists() and not list(stages.docking.unstored())


def test_drain_hands_a_canceled_task_to_its_handler(tmp_path):
    """Ctrl-C while a docking task runs: its handler still sees it (and reads the lines it finished)."""
    pilot = Pilot(2, routes={"executable": "local", "function": "local"}).start()
    store = Store(tmp_path / "campaign.db")
    seen = []
    flag = tmp_path / "line"
    with InterruptGuard() as guard:
        loop = TaskLoop(pilot, store, store.begin_session(2, {}), guard)
        loop.submit(
            executable_task(["sh", "-c", f"echo done > {flag}; sleep 60"], name="dock x"),
            lambda future: seen.append(future.record.state),
        )
        loop.flush()  # handed to the pilot (run() does this first)
        while not flag.exists():
            time.sleep(0.01)
        loop.drain()
        loop.close()
    assert seen == [TaskState.CANCELED]
    assert store.task_rows()[0]["state"] == "CANCELED"


def test_nested_deferred_blocks_raise_once_when_the_outermost_ends():
    import signal

    done = []
    with InterruptGuard() as guard, pytest.raises(KeyboardInterrupt):
        with guard.deferred():
            with guard.deferred():
                os.kill(os.getpid(), signal.SIGINT)
            done.append("inner ended without raising")
    assert done == ["inner ended without raising"]


# ------------------------------------------------------------------ safe ids


def test_folder_names_from_hostile_ids_are_unique_and_contained(tmp_path):
    ids = [
        "..",
        ".",
        "a/b",
        "a_b",
        "a:b",
        "a\\b",
        "x" * 300,
        "x" * 301,
        "é",
        "e",
        "分子-1",
        ".hidden",
        "-dash",
        "MOSES-0000256",
        "CHEMBL25",
        "a.b",
        "~x",
        "a b",
        "/etc/passwd",
        "",
        " ",
    ]
    names = [folder_name(cid) for cid in ids]
    assert len(set(names)) == len(ids)  # unique
    for cid, name in zip(ids, names):
        assert name not in (".", "..", "") and "/" not in name and "\\0" not in name, (cid, name)
        assert len(name.encode()) <= 100 and name.isascii() and not name.startswith("."), (cid, name)
        folder = tmp_path / name
        folder.mkdir()
        assert folder.resolve().parent == tmp_path.resolve()  # contained
    for plain in ("MOSES-0000256", "CHEMBL25", "a_b", "a.b", "-dash"):
        assert folder_name(plain) == plain  # run directories made before keep their MD folders


def test_md_folders_of_hostile_ids_stay_inside_work_md(tmp_path):
    stages = StageTasks(load_campaign(tiny(tmp_path)), tmp_path / "run")
    folders = {cid: stages.md.job(0, cid, "pose").folder for cid in ("..", ".", "a/b", "a_b", "a:b")}
    assert len(set(folders.values())) == 5
    assert all(f.parent == tmp_path / "run" / "work" / "md" for f in folders.values()), folders


# ------------------------------------------------------------------ every molecule accounted for

BAD_ROWS = {  # id -> (SMILES, category of the reason it is left out)
    "unparsable": ("C1CC(", "parse"),
    "pentavalent": ("C(C)(C)(C)(C)C", "valence"),
    "aromatic-chain": ("c1cccc1", "valence"),
    "dimethylmercury-salt": ("C[Hg]C.[Na+].[Cl-]", "element"),
    "cisplatin": ("[Pt](Cl)(Cl)(N)N.Cl", "element"),
    "sodium-chloride": ("[Na+].[Cl-]", "element"),
    "huge-peptide": ("CC(N)C(=O)" + "NCC(=O)" * 40 + "O.Cl", "size"),
}


@pytest.mark.parametrize("cid", sorted(BAD_ROWS))
def test_check_names_each_unusable_molecule_s_reason(cid):
    smiles, expected = BAD_ROWS[cid]
    reason = check(smiles, FilterRules(max_molecular_weight=5000))
    assert reason is not None and category(reason) == expected, reason


def test_filter_reasons_and_stage_reasons_have_their_categories():
    assert category("molecular weight 512.3 > 450") == "filter: molecular weight"
    assert category("heavy atoms 60 > 50") == "filter: heavy atoms"
    assert category("120 heavy atoms, more than the 100 allowed for a drug-like ligand") == "size"
    assert category("PAINS: ene_one_ene_A(57)") == "filter: PAINS"
    assert category("lib.csv:7: empty SMILES for id 'x'") == "empty"
    assert category("3D embedding failed (ETKDGv3, also with random starting coordinates)") == "preparation"
    assert category("the docking task wrote no result for it (see x/stderr.log)") == "lost"


def test_the_store_counts_every_compound_left_out_by_stage_and_reason(tmp_path):
    store = Store(tmp_path / "campaign.db")
    store.add_failures("library", [("line 3", "lib.csv:3: empty SMILES for id 'x'")])
    store.add_predictions(
        0,
        0,
        ["a", "b", "c", "d"],
        np.array([-5, np.nan, np.nan, -6], dtype=np.float32),
        (4, 2, 1, 1),
        [("b", "unparsable SMILES 'C1CC('")],
        [],
        filtered=[("c", "molecular weight 600.1 > 450")],
    )
    store.add_docking(
        [
            DockRow(
                "d",
                "CC",
                0,
                "seed",
                None,
                None,
                "contains Fe: metal and other inorganic elements are outside the docking parameters",
            )
        ],
        "k",
    )
    assert skip_counts(store) == [
        ("filter", "filter: molecular weight", 1),
        ("library", "empty", 1),
        ("prepare", "parse", 1),
        ("seed dock", "element", 1),
    ]
    export(store, tmp_path / "export")
    rows = list(csv.DictReader(open(tmp_path / "export" / "skipped.csv")))
    assert {r["id"]: r["category"] for r in rows} == {
        "line 3": "empty",
        "b": "parse",
        "c": "filter: molecular weight",
        "d": "element",
    }


def test_a_store_made_before_categories_still_lists_its_failures(tmp_path):
    db = sqlite3.connect(tmp_path / "campaign.db")
    db.execute(
        "CREATE TABLE failures (id TEXT NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (id, stage))"
    )
    db.execute(
        "CREATE TABLE docking (id TEXT PRIMARY KEY, smiles TEXT, round INTEGER, origin TEXT, score REAL, "
        "pose_sdf TEXT, runtime_s REAL, error TEXT, task TEXT)"
    )
    db.execute("INSERT INTO failures VALUES ('x', 'prepare', 'unparsable SMILES ''Q''')")
    db.commit()
    db.close()
    old = Store(tmp_path / "campaign.db", readonly=True)
    assert list(skipped(old)) == [("x", "prepare", "parse", "unparsable SMILES 'Q'")]


# ------------------------------------------------------------------ messages a user can act on


def test_sizes_larger_than_the_library_are_warned_with_the_numbers(tmp_path):
    campaign = load_campaign(tiny(tmp_path))  # seed 10, top_k 3, top_m 1
    assert size_warnings(campaign, 120) == []
    text = " | ".join(size_warnings(campaign, 11))
    assert "redock.top_k = 3 but 1 compounds of" in text and "(11 - 10)" in text
    text = " | ".join(size_warnings(campaign, 6))
    assert "dock.seed_sample = 10 but" in text and "has 6 compounds" in text


def test_a_damaged_store_names_the_file_and_the_way_out(tmp_path):
    store = Store(tmp_path / "campaign.db")
    store.add_docking([DockRow(f"c{i}", "CCO" * 50, 0, "seed", -5.0, "x" * 3000, None) for i in range(500)], "k")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray((tmp_path / "campaign.db").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8192] = b"\x55" * 8192  # a damaged page deep in the file
    (tmp_path / "campaign.db").write_bytes(data)
    with pytest.raises(StoreError, match=r"campaign.db is damaged .*sqlite3 .*\.recover.*new run directory"):
        Store(tmp_path / "campaign.db")
    (tmp_path / "campaign.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"campaign.db is damaged \(file is not a database\)"):
        Store(tmp_path / "campaign.db", readonly=True)


def test_export_neutralises_cells_a_spreadsheet_would_run(tmp_path):
    assert spreadsheet_safe('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert [spreadsheet_safe(t) for t in ("+1", "-cmd", "@SUM(A1)", "\tx", "CCO", "MOSES-1")] == [
        "'+1",
        "'-cmd",
        "'@SUM(A1)",
        "'\tx",
        "CCO",
        "MOSES-1",
    ]
    store = Store(tmp_path / "campaign.db")
    store.add_docking([DockRow("=cmd|' /C calc'!A0", "CCO", 0, "seed", -7.25, None, None)], "k")
    export(store, tmp_path / "out")
    (row,) = list(csv.DictReader(open(tmp_path / "out" / "hits.csv")))
    assert row["id"] == "'=cmd|' /C calc'!A0" and row["dock_score_kcal_mol"] == "-7.250"  # numbers stay numbers


def test_counting_what_was_left_out_inside_a_group_leaves_the_group_open(tmp_path):
    """The too-few-to-train error counts the left-out compounds from a handler, inside the task loop's open
    group: reading the library stage's drops made its tables (executescript), which committed the group."""
    store = Store(tmp_path / "campaign.db")
    store.group()
    store.add_failures("filter", [("a", "PAINS: ene_one_ene")])
    assert [row[0] for row in skipped(store)] == ["a"]
    assert store.db.in_transaction
    store.commit_group()
