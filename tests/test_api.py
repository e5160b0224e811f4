"""The Python API: load a campaign (file or dict), run it, open a run directory and read it back."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from test_report_hits import finished_run

import impeccable
from impeccable.cli import main
from impeccable.runtime.records import TaskRecord, TaskState

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "campaigns" / "demo.toml"


def test_import_impeccable_loads_nothing_heavy_and_names_the_api():
    code = (
        "import impeccable, sys; heavy = [m for m in ('pydantic', 'numpy', 'pandas', 'rich', 'impeccable.api') "
        "if m in sys.modules]; print(heavy, sorted(dir(impeccable)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] ") and all(name in out for name in ("load_campaign", "run_campaign", "open_run", "hits"))


def test_load_campaign_from_a_file_a_dict_or_a_campaign(tmp_path):
    from_file = impeccable.load_campaign(str(DEMO))
    data = tomllib.loads(DEMO.read_text())
    from_dict = impeccable.load_campaign(data, base_dir=DEMO.parent)  # relative paths: to base_dir
    assert from_dict.library.path == from_file.library.path == ROOT / "data" / "library" / "moses_20k.csv"
    assert from_dict.model_dump(exclude={"source"}) == from_file.model_dump(exclude={"source"})
    assert impeccable.load_campaign(from_file) is from_file
    with pytest.raises(impeccable.CampaignError, match=r"^campaign: dock.exhaustiveness: .*less than or equal to 64"):
        impeccable.load_campaign({**data, "dock": {"exhaustiveness": 100}}, base_dir=DEMO.parent)
    with pytest.raises(impeccable.CampaignError, match=r"^campaign: library.path: file .* not found"):
        impeccable.load_campaign(data, base_dir=tmp_path)  # the relative paths do not resolve from there
    with pytest.raises(impeccable.CampaignError, match="campaign file not found"):
        impeccable.load_campaign(tmp_path / "missing.toml")


def test_open_run_reads_status_hits_report_and_export(tmp_path):
    finished_run(tmp_path)
    run = impeccable.open_run(tmp_path)
    status = run.status()
    assert status.name == "small" and status.state == "done" and status.failed_tasks == []
    assert {s.stage: (s.done, s.failed) for s in status.stages}["seed dock (compounds)"] == (5, 0)
    assert ("seed dock", "DONE", 3) in status.task_states
    frame = run.hits()
    assert list(frame.index) == ["adp", "p1", "p2", "q1", "q2"]  # by Vina; MD never moves a compound up
    assert frame.equals(impeccable.hits(tmp_path)) and len(run.hits(top=2)) == 2
    assert [h.id for h in run.ranked(3)] == ["adp", "p1", "p2"]
    done = run.export(tmp_path / "out", top=4)
    assert done.n_hits == 4 and done.hits_csv == tmp_path / "out" / "hits.csv" and done.diverse_sdf.is_file()
    assert len(done.hits_csv.read_text().splitlines()) == 5
    with pytest.raises(ValueError, match=r"^\[hits\] settings: "):
        run.export(tmp_path / "out", hinge=["Val 2240"])  # a bad residue id is refused before any work


def test_the_issues_one_liner_after_a_run(tmp_path):
    finished_run(tmp_path)
    code = (
        "import impeccable; c = impeccable.load_campaign('campaigns/demo.toml'); "
        f"print(impeccable.open_run({str(tmp_path)!r}).hits().head())"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "rank" and "p1" in proc.stdout and "q1" in proc.stdout


def test_failed_tasks_of_the_last_session_are_listed_and_run_exits_non_zero(tmp_path, capsys):
    store = finished_run(tmp_path)
    session = store.begin_session(2, {"executable": "local", "function": "local"})
    now = time.time()
    store.add_task_records(
        session,
        [
            TaskRecord(
                uid="f1",
                name="md replica 0 p2",
                kind="executable",
                cores=1,
                gpus=0,
                tags={"stage": "md", "round": "0"},
                state=TaskState.FAILED,
                submitted=now,
                scheduled=now,
                started=now,
                finished=now + 1,
                backend="local",
                error="exit code 1: sqm failed",
            )
        ],
    )
    store.end_session(session, "done-with-failures")
    status = impeccable.open_run(tmp_path).status()
    assert status.failed_tasks == ["md md replica 0 p2: exit code 1: sqm failed"]
    assert status.state == "done-with-failures" and len(status.sessions) == 2
    assert main(["status", str(tmp_path)]) == 0
    assert "done-with-failures" in capsys.readouterr().out


def test_open_run_of_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError):
        impeccable.open_run(tmp_path)
    assert main(["status", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_run_campaign_hands_its_pilot_and_progress_to_the_runner(tmp_path, monkeypatch):
    import impeccable.campaign

    seen = {}

    class Runner:
        def __init__(self, campaign, run_dir, *, progress=None, pilot=None):
            seen.update(campaign=campaign, run_dir=run_dir, progress=progress, pilot=pilot)

        def run(self):
            seen["ran"] = True
            return {}

    class Sink:
        entered = False

        def update(self, stage, p):
            pass

        def __enter__(self):
            Sink.entered = True

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(impeccable.campaign, "CampaignRunner", Runner)
    pilot, sink = object(), Sink()
    run = impeccable.run_campaign(DEMO, tmp_path / "r", pilot=pilot, progress=sink)
    assert seen["ran"] and seen["pilot"] is pilot and seen["progress"] is sink and Sink.entered
    assert seen["campaign"].name == "demo" and run.run_dir == tmp_path / "r"
    impeccable.run_campaign(DEMO)  # no run_dir: the campaign's own (runs/demo)
    assert seen["run_dir"] == Path("runs/demo") and seen["progress"] is None


def test_run_prints_the_top_table_from_the_ranked_hits(tmp_path, capsys):
    """`impeccable run` prints `print_top(run.ranked(10))`; the merge of issue 27 left print_top taking a
    store, and every finished `impeccable run` ended with "'list' object has no attribute 'md_results'"."""
    from impeccable.results import print_top

    finished_run(tmp_path)
    print_top(impeccable.open_run(tmp_path).ranked(3))
    out = capsys.readouterr().out
    assert "top 3 compounds" in out and "adp" in out
