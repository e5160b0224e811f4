"""Library preparation: each filter family on hand-picked molecules, standardisation of a salt, deduplication
across sources keeping every id (through the pilot, as the campaign runs it), and inspect's counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from impeccable.stages.errors import StageInputError
from impeccable.stages.medfilters import compile_rules
from impeccable.stages.prepare import prepare_batch

RHODANINE = "S=C1SC(=Cc2ccccc2)C(=O)N1"  # PAINS ene_rhod (and a Brenk alert)
ALDEHYDE = "O=Cc1ccc(O)cc1"  # Brenk: aldehyde
GREASE = "CCCCCCCCCCCCCCCCCCCCCC(=O)OCCCCCCCCCCCCCCCCCC"  # rule-of-five violator (MW 593, clogP 14.6)
IBUPROFEN_NA = "CC(C)Cc1ccc(cc1)C(C)C(=O)[O-].[Na+]"  # a salt: its parent is ibuprofen
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"
CLEAN = ["CN1CCN(CC1)C(=O)c1ccc(F)cc1", "O=C(NCc1ccccc1)c1ccc2[nH]ccc2c1"]


def _first_rule(smiles: str, **filters: object) -> str | None:
    from rdkit import Chem

    failure = compile_rules(filters).first_failure(Chem.MolFromSmiles(smiles))
    return None if failure is None else failure[0]


def test_each_filter_family_on_hand_picked_molecules():
    assert _first_rule(RHODANINE, alerts=["pains"]) == "alerts: PAINS"
    assert _first_rule(ALDEHYDE, alerts=["pains", "brenk"]) == "alerts: Brenk"
    assert _first_rule(ALDEHYDE, alerts=["pains"]) is None
    assert _first_rule(GREASE, presets=["ro5"]) == "ro5: mw <= 500"
    assert _first_rule(IBUPROFEN, presets=["ro5", "veber"]) is None
    assert _first_rule(IBUPROFEN, presets=["lead-like"]) == "lead-like: mw >= 250"  # 206 Da: below lead-like
    assert _first_rule(CLEAN[1], presets=["lead-like"]) is None
    assert _first_rule(CLEAN[1], presets=["ro3"]) == "ro3: clogp <= 3"
    assert _first_rule(CLEAN[0], max={"tpsa": 20.0}) == "max: tpsa <= 20"
    assert _first_rule(CLEAN[0], min={"fsp3": 0.5}) == "min: fsp3 >= 0.5"
    assert _first_rule(CLEAN[0], max_molecular_weight=200.0) == "max: mw <= 200"  # the older key still works
    assert _first_rule(CLEAN[0], exclude_smarts=["[F,Cl,Br,I]"]) == "exclude: [F,Cl,Br,I]"
    assert _first_rule(CLEAN[0], include_smarts=["c1ccc2[nH]ccc2c1", "C(=O)N"]) is None
    assert _first_rule(GREASE, include_smarts=["c1ccc2[nH]ccc2c1"]) == "include: one of 1 SMARTS"


def test_bad_rules_name_their_key():
    with pytest.raises(StageInputError, match=r"filters.exclude_smarts: 'C\(\(' is not valid SMARTS"):
        compile_rules({"exclude_smarts": ["C(("]})
    with pytest.raises(StageInputError, match="filters.alerts: unknown alert set 'painz'"):
        compile_rules({"alerts": ["painz"]})


def test_a_salt_is_screened_as_its_neutral_parent_and_records_the_rule_that_dropped_it():
    out = prepare_batch(
        [IBUPROFEN_NA, "C1CC", RHODANINE, IBUPROFEN],
        {"standardize": True, "deduplicate": True, "filters": {"alerts": ["pains"]}},
    )
    assert out["smiles"][0] == "CC(C)Cc1ccc(C(C)C(=O)O)cc1" and out["keys"][0] == out["keys"][3]
    assert out["failed"] == [(1, "unparsable SMILES 'C1CC'")]
    assert [(i, rule) for i, rule, _ in out["filtered"]] == [(2, "alerts: PAINS")]
    assert out["filtered"][0][2].startswith("ene_rhod")  # the alert's own name
    assert set(out["seconds"]) >= {"parse", "standardize", "filters", "key"}


TWO_SOURCES = """[library]
standardize = true
deduplicate = true
batch_size = {batch_size}
seed_strategy = "diverse"
[[library.sources]]
name = "vendor"
path = "vendor.sdf"
[[library.sources]]
name = "house"
path = "house.csv"
[library.filters]
presets = [{presets}]
alerts = ["pains", "brenk"]
"""


def _two_sources(tmp_path: Path) -> tuple[Path, Path]:
    from rdkit import Chem

    sdf = tmp_path / "vendor.sdf"
    writer = Chem.SDWriter(str(sdf))
    for cid, smi in (("V1", IBUPROFEN_NA), ("V2", RHODANINE), ("V3", CLEAN[0])):
        mol = Chem.MolFromSmiles(smi)
        mol.SetProp("_Name", cid)
        writer.write(mol)
    writer.close()
    csv = tmp_path / "house.csv"
    csv.write_text(f"id,smiles\nH1,{IBUPROFEN}\nH2,C1CC\nH3,{ALDEHYDE}\nH4,{GREASE}\nH5,{CLEAN[1]}\n")
    return sdf, csv


def test_inspect_counts_a_library_of_known_composition(tmp_path):
    from impeccable.library_inspect import inspect_library
    from impeccable.stages.library_sources import LibrarySource

    sdf, csv = _two_sources(tmp_path)
    sources = [LibrarySource.from_spec("vendor", sdf), LibrarySource.from_spec("house", csv)]
    settings = {"standardize": True, "deduplicate": True, "filters": {"presets": ["ro5"], "alerts": ["pains", "brenk"]}}
    r = inspect_library(sources, True, settings, cores=1, batch_size=3)
    assert (r["rows"], r["parsed"], r["failed"], r["duplicates"], r["filtered"], r["kept"]) == (8, 7, 1, 1, 3, 3)
    assert r["filtered_by_rule"] == {"alerts: PAINS": 1, "alerts: Brenk": 1, "ro5: mw <= 500": 1}
    assert r["adds_up"] and r["mol_per_s"] > 0 and r["passing_all_rules"] == 4
    assert r["passing_each_rule"]["alerts: Brenk"] == 4  # of 7 parsed: the rhodanine, aldehyde and ester fail it
    assert sum(r["histograms"]["mw"]["counts"]) == 3 and len(r["sample"]) == 3
    with open(csv, "a") as fh:
        fh.write("H6,\n")  # a row the reader skips: counted as a failed row, with its reason
    r = inspect_library(sources, True, settings, cores=1, batch_size=3)
    assert (r["rows"], r["failed"], r["kept"]) == (9, 2, 3) and r["adds_up"]
    assert r["failed_by_reason"] == {"unparsable SMILES": 1, "empty SMILES for id": 1}


def test_the_campaign_library_stage_dedups_across_sources_through_the_pilot(tmp_path):
    from impeccable.config import load_campaign
    from impeccable.events import InterruptGuard
    from impeccable.library_stage import CampaignLibrary
    from impeccable.library_store import LibraryStore, compound_sources
    from impeccable.progress import CampaignProgress
    from impeccable.runtime import Allocation, Pilot
    from impeccable.stagetasks import StageTasks
    from impeccable.store import Store
    from impeccable.tasks import TaskLoop

    sdf, csv = _two_sources(tmp_path)
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "c.toml").write_text(f"""
[campaign]
name = "two-sources"
[receptor]
path = "{root}/data/receptors/4jsv"
{TWO_SOURCES.format(batch_size=3, presets='"ro5"')}""")
    campaign = load_campaign(tmp_path / "c.toml")
    store = Store(tmp_path / "run" / "campaign.db")
    library = CampaignLibrary(campaign, store, StageTasks(campaign, tmp_path / "run"), CampaignProgress())
    library.rows = 8
    done = []
    with Pilot(
        Allocation.emulated(2),
        routes={"executable": "local", "function": "local"},
        options={"local": {"preload": ["impeccable.stages.prepare"]}},
    ) as pilot:
        loop = TaskLoop(pilot, store, store.begin_session(2, {}), InterruptGuard())
        library.prepare(loop, 2, then=lambda: done.append(library.size))
        loop.run()
    assert done == [3] and not loop.failed
    assert [cid for cid, _ in library.store.records()] == ["vendor:V1", "vendor:V3", "house:H5"]
    assert next(library.records()).smiles == "CC(C)Cc1ccc(C(C)C(=O)O)cc1"  # the salt's neutral parent is screened
    dropped = {cid: (kind, why) for cid, kind, why in LibraryStore(store).dropped()}
    assert dropped["house:H1"][0] == "duplicate" and "vendor:V1" in dropped["house:H1"][1]
    assert dropped["vendor:V2"] == ("filtered", dropped["vendor:V2"][1]) and "PAINS" in dropped["vendor:V2"][1]
    assert dropped["house:H2"][0] == "failed"
    assert compound_sources(store, ["vendor:V1"])["vendor:V1"] == ("vendor", "vendor:V1;house:H1")
    # a resumed run finds it prepared, and a second preparation changes nothing
    again = CampaignLibrary(campaign, store, None, CampaignProgress())
    again.rows = 8
    again.prepare(None, 2, then=lambda: done.append(again.size))
    assert done == [3, 3]
    # interrupted after the first of its three batches (each batch commits with its keys and duplicates):
    # the resumed preparation runs only the other two and ends where the whole run ended
    before = (list(library.store.records()), list(LibraryStore(store).dropped()))
    with store.transaction() as db:  # batch 0: V1-V3; batch 1: H1 (V1's duplicate), H2, H3; batch 2: H4, H5 (kept)
        db.execute("DELETE FROM library_batches WHERE batch >= 1")
        db.execute("DELETE FROM library_keys WHERE id = 'house:H5'")
        db.execute("DELETE FROM library_duplicates WHERE source_id = 'H1'")
    with Pilot(Allocation.emulated(2), routes={"executable": "local", "function": "local"}) as pilot:
        loop = TaskLoop(pilot, store, store.begin_session(2, {}), InterruptGuard())
        library.prepare(loop, 2, then=lambda: done.append(library.size))
        loop.run()
    assert done == [3, 3, 3] and (list(library.store.records()), list(LibraryStore(store).dropped())) == before
    assert [name for (name,) in store.db.execute("SELECT name FROM tasks WHERE session=2 ORDER BY name")] == [
        "library b00001",
        "library b00002",
    ]


def test_a_failed_preparation_task_fails_its_records_with_the_reason(tmp_path):
    from impeccable.config import load_campaign
    from impeccable.events import InterruptGuard
    from impeccable.library_stage import CampaignLibrary
    from impeccable.library_store import LibraryStore
    from impeccable.progress import CampaignProgress
    from impeccable.runtime import Allocation, Pilot
    from impeccable.stagetasks import StageTasks
    from impeccable.store import Store
    from impeccable.tasks import TaskLoop

    _two_sources(tmp_path)
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "c.toml").write_text(
        f'[campaign]\nname = "t"\n[receptor]\npath = "{root}/data/receptors/4jsv"\n'
        + TWO_SOURCES.format(batch_size=4, presets='"ro5"')
    )
    campaign = load_campaign(tmp_path / "c.toml")
    store = Store(tmp_path / "run" / "campaign.db")
    library = CampaignLibrary(campaign, store, StageTasks(campaign, tmp_path / "run"), CampaignProgress())
    library.rows = 8
    library.settings = {**library.settings, "filters": {"exclude_smarts": ["C(("]}}  # every task raises
    with Pilot(Allocation.emulated(1), routes={"executable": "local", "function": "local"}) as pilot:
        loop = TaskLoop(pilot, store, store.begin_session(1, {}), InterruptGuard())
        library.prepare(loop, 1, then=lambda: None)
        with pytest.raises(RuntimeError, match="the library preparation kept no compound"):
            loop.run()
    counts = LibraryStore(store).counts()
    assert (counts.rows, counts.failed, counts.batches) == (8, 8, 2) and len(loop.failed) == 2
    assert all(
        "library preparation task failed" in why and "not valid SMARTS" in why
        for _, _, why in LibraryStore(store).dropped()
    )
