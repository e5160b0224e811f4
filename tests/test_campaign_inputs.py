"""Campaign inputs are checked before any task runs, and a failed start leaves the run directory usable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from impeccable.campaign import CampaignInputError, CampaignRunner
from impeccable.config import load_campaign
from impeccable.inputs import check_same_campaign, make_pilot, validate_inputs
from impeccable.store import DockRow, Store

ROOT = Path(__file__).resolve().parent.parent
RECEPTOR = ROOT / "data" / "receptors" / "4jsv"
CAMPAIGN = """
[campaign]
name = "inputs"
[receptor]
path = "{receptor}"
[library]
path = "{library}"
[dock]
seed_sample = 8
[redock]
top_k = 2
[pilot]
cores = 1
"""


def campaign_file(tmp_path: Path, library: Path, receptor: Path = RECEPTOR) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(CAMPAIGN.format(receptor=receptor, library=library))
    return path


def library(tmp_path: Path, text: str, name: str = "lib.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_box_far_from_the_protein_is_reported_before_any_task(tmp_path):
    receptor = tmp_path / "receptor"
    shutil.copytree(RECEPTOR, receptor)
    site = receptor / "site.toml"
    site.write_text(site.read_text().replace("center = [-19.448", "center = [41.552"))  # 61 A along x
    lib = library(tmp_path, "id,smiles\n" + "".join(f"c{i},CCO\n" for i in range(10)))
    runner = CampaignRunner(load_campaign(campaign_file(tmp_path, lib, receptor)), tmp_path / "run")
    with pytest.raises(CampaignInputError, match=r"receptor: .*site\.toml: box centre .* is \d+\.\d angstrom from"):
        runner.run()
    assert Store.open_existing(tmp_path / "run").sessions() == []  # nothing was started


def test_duplicate_ids_refuse_the_library_naming_both_lines(tmp_path):
    lib = library(tmp_path, "id,smiles\na,CCO\nb,CCN\na,c1ccccc1\n")
    runner = CampaignRunner(load_campaign(campaign_file(tmp_path, lib)), tmp_path / "run")
    with pytest.raises(CampaignInputError, match=r"lib\.csv:4: id 'a' is also on line 2"):
        runner.run()


def test_failed_start_does_not_poison_the_run_directory(tmp_path):
    empty = library(tmp_path, "id,smiles\n", "empty.csv")
    with pytest.raises(CampaignInputError, match="library is empty"):
        CampaignRunner(load_campaign(campaign_file(tmp_path, empty)), tmp_path / "run").run()
    fixed = library(tmp_path, "id,smiles\n" + "".join(f"c{i},CCO\n" for i in range(10)))
    campaign = load_campaign(campaign_file(tmp_path, fixed))
    store = Store(tmp_path / "run" / "campaign.db")
    validate_inputs(campaign, store)
    check_same_campaign(campaign, store, tmp_path / "run")  # the first attempt computed nothing: new settings taken
    assert str(fixed) in store.get_meta("campaign")


def test_changed_settings_are_refused_once_results_exist(tmp_path):
    lib = library(tmp_path, "id,smiles\n" + "".join(f"c{i},CCO\n" for i in range(10)))
    store = Store(tmp_path / "run" / "campaign.db")
    check_same_campaign(load_campaign(campaign_file(tmp_path, lib)), store, tmp_path / "run")
    store.add_docking([DockRow("c1", "CCO", 0, "seed", -4.0, None, None)], "t")
    other = tmp_path / "other"
    other.mkdir()
    text = campaign_file(other, lib).read_text().replace("top_k = 2", "top_k = 3")
    (other / "c.toml").write_text(text)
    with pytest.raises(CampaignInputError, match=r"other settings \(redock\.top_k\)"):
        check_same_campaign(load_campaign(other / "c.toml"), store, tmp_path / "run")


def test_skipped_rows_are_recorded_with_their_reason(tmp_path, capsys):
    lib = library(tmp_path, "id,smiles\na,CCO\nb,\n,CCC\n" + "".join(f"c{i},CCO\n" for i in range(10)))
    store = Store(tmp_path / "run" / "campaign.db")
    assert validate_inputs(load_campaign(campaign_file(tmp_path, lib)), store).count == 11
    assert store.failures() == [
        ("b", "library", "lib.csv:3: empty SMILES for id 'b'"),
        ("line 4", "library", "lib.csv:4: empty id (SMILES 'CCC')"),
    ]
    assert "2 library row(s) skipped" in capsys.readouterr().err


def test_a_resumed_run_reuses_the_scan_of_an_unchanged_library(tmp_path, capsys, monkeypatch):
    import os

    import impeccable.stages.library_sources as library_module

    lib = library(tmp_path, "id,smiles\na,CCO\nb,\n" + "".join(f"c{i},CCO\n" for i in range(10)))
    campaign = load_campaign(campaign_file(tmp_path, lib))
    store = Store(tmp_path / "run" / "campaign.db")
    assert validate_inputs(campaign, store).count == 11
    scans = []
    real_scan = library_module.scan_sources
    monkeypatch.setattr(library_module, "scan_sources", lambda *a, **k: scans.append(a) or real_scan(*a, **k))
    again = validate_inputs(campaign, store)
    assert (again.count, again.skipped_count, scans) == (11, 1, [])  # no second pass over the file
    assert capsys.readouterr().err.count("1 library row(s) skipped (first: lib.csv:3: empty SMILES") == 2
    lib.write_text(lib.read_text() + "z,CCN\n")
    os.utime(lib, ns=(1, 1))
    assert validate_inputs(campaign, store).count == 12 and len(scans) == 1  # a changed file is read again


def test_an_id_with_a_line_break_is_refused_naming_the_line(tmp_path):
    lib = library(tmp_path, 'id,smiles\na,CCO\n"b\nc",CCN\n')
    with pytest.raises(CampaignInputError, match=r"lib\.csv:4: id 'b\\nc' holds a line break"):
        validate_inputs(load_campaign(campaign_file(tmp_path, lib)), Store(tmp_path / "run" / "campaign.db"))


def test_more_cores_than_the_machine_needs_oversubscribe(tmp_path):
    lib = library(tmp_path, "id,smiles\n" + "".join(f"c{i},CCO\n" for i in range(10)))
    text = campaign_file(tmp_path, lib).read_text().replace("cores = 1", "cores = 256")
    (tmp_path / "c.toml").write_text(text)
    runner = CampaignRunner(load_campaign(tmp_path / "c.toml"), tmp_path / "run")
    with pytest.raises(CampaignInputError, match=r"pilot\.cores = 256 but this machine .* has \d+: .*oversubscribe"):
        runner.run()
    (tmp_path / "c.toml").write_text(text.replace("cores = 256", "cores = 256\noversubscribe = true"))
    assert make_pilot(load_campaign(tmp_path / "c.toml")).allocation.cores == 256


def test_local_function_workers_start_with_torch_imported(tmp_path):
    """The surrogate imports torch on first use: without the forkserver preloading it, every worker paid
    the import (1.3 s here) on its first inference call."""
    from impeccable.runtime import function_task

    lib = library(tmp_path, "id,smiles\n" + "".join(f"c{i},CCO\n" for i in range(10)))
    path = campaign_file(tmp_path, lib)
    path.write_text(path.read_text() + '[pilot.routes]\nexecutable = "local"\nfunction = "local"\n')
    pilot = make_pilot(load_campaign(path))
    pilot.start()
    try:
        assert pilot.submit(function_task("impeccable.runtime.probes:imported", "torch")).result(timeout=120)
    finally:
        pilot.shutdown()
