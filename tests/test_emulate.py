"""Campaign emulation: the campaign's own runner on many advertised cores, each task taking a recorded time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_campaign_run import tiny

from impeccable.cli import main
from impeccable.config import load_campaign
from impeccable.emulate import EmulatedMD, EmulatedStageTasks, RecordedDurations, run_emulation
from impeccable.inputs import check_same_campaign
from impeccable.runtime import executable_task
from impeccable.runtime.records import TaskRecord, TaskState
from impeccable.store import DockRow, Store


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """A run directory as `impeccable run` leaves it, with short recorded durations for every stage."""
    return record_run(tmp_path)


def record_run(tmp_path: Path, top_m: int = 1) -> Path:
    run_dir = tmp_path / "recorded"
    campaign = load_campaign(tiny(tmp_path, limit=120, per_task=5, top_m=top_m))
    store = Store(run_dir / "campaign.db")
    check_same_campaign(campaign, store, run_dir)
    session = store.begin_session(2, {"executable": "local", "function": "local"})
    records, t = [], 1000.0
    for i, (stage, name, seconds) in enumerate(
        [
            ("seed dock", "dock s1-r0-seed-00000", 0.10),
            ("seed dock", "dock s1-r0-seed-00001", 0.15),
            ("train", "train r0", 0.05),
            ("infer", "infer r0 b00000", 0.02),
            ("infer", "infer r0 b00001", 0.03),
            ("redock", "dock s1-r0-redock-00000", 0.04),
            ("md", "md prepare MOSES-1", 0.03),
            ("md", "md replica 0 MOSES-1", 0.05),
            ("md", "md replica 1 MOSES-1", 0.06),
            ("md", "md combine MOSES-1", 0.01),
        ]
    ):
        kind = "function" if stage in ("train", "infer") or name.startswith("md combine") else "executable"
        records.append(
            TaskRecord(
                uid=f"t{i}",
                name=name,
                kind=kind,
                cores=1,
                gpus=0,
                tags={"stage": stage},
                state=TaskState.DONE,
                submitted=t,
                scheduled=t,
                started=t,
                finished=t + seconds,
                slots=(0,),
            )
        )
    store.add_task_records(session, [r for r in records if top_m or not r.name.startswith("md ")])
    for key, n in (("s1-r0-seed-00000", 5), ("s1-r0-seed-00001", 5), ("s1-r0-redock-00000", 2)):
        store.add_docking([DockRow(f"{key}-{j}", "CCO", 0, "seed", -5.0, "", None) for j in range(n)], key)
    store.end_session(session, "done")
    store.close()
    return run_dir


def test_recorded_durations_per_unit_of_work(recorded):
    d = RecordedDurations.from_run(recorded)
    assert sorted(d.dock_per_ligand) == pytest.approx([0.02, 0.02, 0.03])  # per ligand: task time / its ligands
    assert d.train == pytest.approx([0.05]) and len(d.infer_per_batch) == 2
    assert {k: [round(x, 6) for x in v] for k, v in d.md_steps.items()} == {
        "prepare": [0.03],
        "replica": [0.05, 0.06],
        "combine": [0.01],
    }
    assert d.draw("dock", "k", 3) == d.draw("dock", "k", 3)  # the same key, the same draw on both sides


def test_a_campaign_without_md_is_emulated_without_md(tmp_path):
    """The 4-node compare's campaign has no MD (top_m = 0); emulating it was refused for want of MD records."""
    d = RecordedDurations.from_run(record_run(tmp_path, top_m=0))
    assert d.md_steps == {"prepare": [], "replica": [], "combine": []} and len(d.dock_per_ligand) == 3
    assert d.summary()["median_s"]["md_replica"] is None
    fig = run_emulation(tmp_path / "recorded", tmp_path / "emu", cores=4)
    assert fig["failed"] == 0


def test_a_run_without_every_stage_is_refused(tmp_path):
    store = Store(tmp_path / "campaign.db")
    store.close()
    with pytest.raises(ValueError, match="no finished dock, train, infer, md prepare, md replica, md combine task"):
        RecordedDurations.from_run(tmp_path)


def test_a_run_recorded_with_whole_md_ensembles_is_refused_with_the_reason(recorded):
    store = Store.open_existing(recorded)
    session = store.begin_session(2, {"executable": "local", "function": "local"})
    store.add_task_records(
        session,
        [
            TaskRecord(
                uid="old",
                name="md MOSES-2",
                kind="executable",
                cores=1,
                gpus=0,
                tags={"stage": "md"},
                state=TaskState.DONE,
                submitted=1.0,
                scheduled=1.0,
                started=1.0,
                finished=2.0,
                slots=(0,),
            )
        ],
    )
    store.close()
    with pytest.raises(ValueError, match="each ensemble as one task .'md MOSES-2'., recorded before replicas"):
        RecordedDurations.from_run(recorded)


@pytest.mark.slow  # an emulated campaign end to end (5-30 s)
def test_small_emulation_on_many_advertised_cores(recorded, tmp_path):
    fig = run_emulation(
        recorded,
        tmp_path / "emu",
        cores=32,
        scale=10,
        granularity="ligand",
        routes={"executable": "local", "function": "local"},
    )
    # scale 10: a 100-compound seed sample, one ligand per docking task, 30 re-dockings, 10 MD runs
    assert fig["tasks"] > 150 and fig["failed"] == 0
    assert fig["utilization"] == pytest.approx(fig["busy_core_s"] / (fig["cores"] * fig["makespan_s"]))
    assert 0 < fig["ideal_makespan_s"] * 0.99 <= fig["makespan_s"]  # nothing beats max(work / cores, chain)
    assert fig["launch_rate_tasks_per_s"] > 0 and {s["stage"] for s in fig["stages"]} >= {"seed dock", "md"}
    store = Store.open_existing(tmp_path / "emu" / "run", readonly=True)
    assert json.loads(store.get_meta("emulation"))["recorded_run"] == str(recorded.resolve())


@pytest.mark.slow  # an emulated campaign end to end (5-30 s)
def test_emulate_command_writes_the_json_a_comparison_needs(recorded, tmp_path, capsys):
    out = tmp_path / "emu.json"
    assert (
        main(
            [
                "emulate",
                str(recorded),
                "--cores",
                "8",
                "--routes",
                "executable=local,function=local",
                "--out",
                str(tmp_path / "runs"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["emulation"] is True and result["baseline"] is None and result["makespan_ratio"] is None
    for key in ("makespan_s", "utilization", "launch_rate_tasks_per_s", "tasks", "cores"):
        assert key in result["pilot"]


@pytest.mark.slow
@pytest.mark.slurm
def test_emulation_against_srun(recorded, tmp_path):
    from impeccable.runtime.backends.slurm.local import start

    cluster = start()
    if not cluster.ok:
        pytest.skip(f"no Slurm cluster: {cluster.reason}")
    try:
        out = tmp_path / "emu.json"
        assert (
            main(
                [
                    "emulate",
                    str(recorded),
                    "--cores",
                    "8",
                    "--scale",
                    "2",
                    "--routes",
                    "executable=local,function=local",
                    "--baseline",
                    "srun",
                    "--srun-max-running",
                    "4",
                    "--out",
                    str(tmp_path / "runs"),
                    "--json",
                    str(out),
                ]
            )
            == 0
        )
    finally:
        cluster.stop()
    result = json.loads(out.read_text())
    pilot, base = result["pilot"], result["baseline"]
    assert result["makespan_ratio"] == pytest.approx(pilot["makespan_s"] / base["makespan_s"])
    assert base["routes"] == {"executable": "srun", "function": "srun"} and base["failed"] == 0
    assert pilot["tasks"] == base["tasks"]  # the same campaign on both sides
    assert (tmp_path / "runs" / "emulation.html").read_text().count("EMULATION") == 1

    # What one step costs alone, measured once the campaign was over: a function step (a fresh interpreter
    # with the payload's imports) costs more than an executable one
    costs = base["step_costs"]
    assert costs["median_s"]["function"] > costs["median_s"]["executable"] > 0
    assert costs["machine_cores"] == len(os.sched_getaffinity(0))

    # The model's srun side, calibrated on these records: both kinds share the emulation's ceiling of 4
    # steps, each step's start-up (measured alone) shares this machine's cores, the pilot's routes get no
    # ceiling. Predictions at scale (both sizings) use these costs when no --costs-from is given.
    model_json = tmp_path / "model.json"
    argv = ["model", str(recorded), "--validate", str(out), "--nodes", "8,1024", "--cores-per-node", "1"]
    assert main([*argv, "--sizing", "v2", "--json", str(model_json)]) == 0
    model = json.loads(model_json.read_text())
    (row,) = model["validation"]
    calibration = row["baseline"]["calibration"]
    routes = calibration["routes"]
    assert {(m["max_running"], m["ceiling_group"]) for m in routes.values()} == {(4, "srun")}
    assert routes["executable"]["startup_cpu_s"] == costs["median_s"]["executable"]
    assert routes["function"]["startup_cpu_s"] >= costs["median_s"]["function"]  # under load, at least as alone
    assert calibration["real_cores"] == costs["machine_cores"]
    assert all(m["max_running"] is None for m in row["pilot"]["calibration"]["routes"].values())
    assert row["baseline"]["predicted_tasks"] == row["baseline"]["measured_tasks"]
    assert model["model_error_max"] == max(abs(row[side]["error"]) for side in ("pilot", "baseline"))
    prediction = model["prediction"]
    assert [r["nodes"] for r in prediction["rows"]] == [8, 1024] and prediction["predicted"] is True
    assert 0 < prediction["function_cold_start_s"] and prediction["function_cold_start_contended_s"] > 0
    v2 = prediction["rows_v2"]
    assert [r["nodes"] for r in v2] == [8, 1024] and v2[1]["tasks"] > 10 * 1024  # ten docking waves per core
    assert model["predicted_ratio_1024_v2"] == v2[1]["makespan_ratio"]


@pytest.mark.slow  # an emulated campaign end to end (5-30 s)
def test_model_predicts_the_emulation_it_was_calibrated_on(recorded, tmp_path):
    from impeccable.model import calibrate, launch_rate, predict
    from impeccable.runtime import TaskKind

    measured = run_emulation(
        recorded,
        tmp_path / "emu",
        cores=32,
        scale=10,
        granularity="ligand",
        routes={"executable": "local", "function": "local"},
    )
    rates = {kind: launch_rate("local", kind, 32, tasks=500) for kind in TaskKind}
    calibration = calibrate(tmp_path / "emu" / "run", rates)
    assert calibration.manager_s_per_task > 0
    predicted = predict(recorded, cores=32, calibration=calibration, scale=10, granularity="ligand")
    print(f"\nmeasured {measured['makespan_s']:.2f} s, predicted {predicted['makespan_s']:.2f} s")
    assert predicted["tasks"] == measured["tasks"]  # the same campaign, task for task
    # The model's accuracy is a measurement (`impeccable model --validate`, quoted in the README), not a
    # test: on a loaded 2-core machine the emulated run itself is starved and stretches several-fold.
    # What must hold everywhere: the simulated campaign can never beat its own lower bound.
    assert predicted["makespan_s"] >= predicted["ideal_makespan_s"] * 0.999


@pytest.mark.slow  # an emulated campaign end to end (5-30 s)
def test_model_calibrated_at_one_size_predicts_another(recorded, tmp_path, capsys):
    """Cross-size validation: the parameters come from the 8-core emulation, the prediction is of the 16-core one."""
    emulations = {}
    for cores in (8, 16):
        emulations[cores] = tmp_path / f"emu{cores}.json"
        assert (
            main(
                [
                    "emulate",
                    str(recorded),
                    "--cores",
                    str(cores),
                    "--scale",
                    "2",
                    "--granularity",
                    "ligand",
                    "--routes",
                    "executable=local,function=local",
                    "--out",
                    str(tmp_path / f"runs{cores}"),
                    "--json",
                    str(emulations[cores]),
                ]
            )
            == 0
        )
    out = tmp_path / "model.json"
    assert (
        main(
            [
                "model",
                str(recorded),
                "--validate",
                str(emulations[16]),
                "--calibrate-from",
                str(emulations[8]),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())["validation"]
    assert (row["cores"], row["calibration_cores"], row["calibrated_on"]) == (16, 8, str(emulations[8]))
    assert "baseline" not in row  # neither emulation ran srun
    measured = json.loads(emulations[16].read_text())["pilot"]["makespan_s"]
    assert row["pilot"]["measured_makespan_s"] == measured and row["pilot"]["predicted_makespan_s"] > 0
    assert row["pilot"]["predicted_tasks"] == row["pilot"]["measured_tasks"]  # the same campaign, task for task
    assert "calibrated at 8" in capsys.readouterr().out


def test_model_srun_ceiling_covers_both_task_kinds():
    """srun's outstanding-step ceiling is one limit: an executable and a function step never exceed it together."""
    from impeccable.model import BackendModel, Simulator
    from impeccable.runtime import TaskKind, executable_task, function_task

    def step(kind: TaskKind) -> BackendModel:
        return BackendModel(f"srun:{kind.value}", launch_rate=1000.0, max_running=1, ceiling_group="srun")

    sim = Simulator(4, {kind: step(kind) for kind in TaskKind})
    sim.submit(executable_task(["sleep", "1.0"]))
    sim.submit(function_task("impeccable.emulate_payloads:emulated_train", 1.0))
    finished = []
    while (future := sim.next_finished()) is not None:
        finished.append(future.record.finished)
    assert len(finished) == 2 and max(finished) >= 2.0  # one after the other although 4 cores were free


def test_shared_cores_divide_the_machine_among_the_items_starting_at_once():
    """Processor sharing: 4 items of 1 CPU-s on 2 cores all end at 2 s; one arriving later finishes its own
    work at full speed once the others are done."""
    from impeccable.contention import SharedCores

    cores: SharedCores[str] = SharedCores(2)
    for name in "abcd":
        cores.add(0.0, 1.0, name)
    assert cores.next_done() == pytest.approx(2.0)
    cores.add(1.0, 1.0, "e")  # 0.5 CPU-s left each for a-d; now 5 share 2 cores: 0.4 each per second
    assert cores.next_done() == pytest.approx(2.25)
    assert cores.done_by(2.25) == ["a", "b", "c", "d"]
    assert cores.next_done() == pytest.approx(2.75)  # e did 1.25 s x 0.4 by then: 0.5 CPU-s left, alone
    assert cores.done_by(2.75) == ["e"] and len(cores) == 0
    with pytest.raises(ValueError, match="time went back"):
        cores.add(1.0, 1.0, "late")


def test_core_shares_are_what_each_interval_could_have_had_under_processor_sharing():
    from impeccable.contention import core_shares

    assert core_shares([(0, 4), (0, 4), (4, 5)], 1) == pytest.approx([2, 2, 1])
    assert core_shares([(0, 2), (1, 3)], 1) == pytest.approx([1.5, 1.5])  # alone 1 s, then half of 1 s
    assert core_shares([(0, 2), (1, 3)], 2) == pytest.approx([2, 2])  # two cores: nobody slowed
    assert core_shares([], 2) == []


def test_model_start_up_work_shares_the_machines_real_cores():
    """srun steps starting together on a 2-core machine: each begins its payload only once its start-up work is
    done at its share of the cores; on a real allocation (no shared cores) each pays its own work alone."""
    from impeccable.model import BackendModel, Simulator
    from impeccable.runtime import TaskKind, executable_task

    routes = {kind: BackendModel(f"srun:{kind.value}", launch_rate=1e6, startup_cpu_s=1.0) for kind in TaskKind}

    def finished(real_cores):
        sim = Simulator(8, routes, real_cores=real_cores)
        for _ in range(8):
            sim.submit(executable_task(["sleep", "3.0"]))
        ends = []
        while (future := sim.next_finished()) is not None:
            ends.append(future.record.finished - future.record.started)
            assert future.record.started >= 0
        return sim, ends

    sim, ends = finished(2)
    assert ends == pytest.approx([3.0] * 8)
    assert max(r.finished for r in sim.records) == pytest.approx(4.0 + 3.0, abs=1e-3)  # 8 CPU-s of start-up, 2 cores
    sim, _ = finished(None)
    assert max(r.finished for r in sim.records) == pytest.approx(1.0 + 3.0, abs=1e-3)


def test_study_shaped_sizing_docks_in_batches_of_minutes_ten_waves_per_core():
    """The model's faithful sizing: docking tasks of ceil(300 s / time per ligand) ligands, 8 + 2 waves of them per
    core, each MD ensemble one MPI task of replicas x cores; a launcher at srun's published 152/s cannot keep 448
    cores busy with 5-min tasks as the pilot's can, so the pilot's makespan is shorter and its peak start rate higher."""
    from dataclasses import replace

    from impeccable.model import PUBLISHED, Simulator
    from impeccable.runtime import TaskKind
    from impeccable.sizing_v2 import V2Campaign, v2_sizing

    durations = RecordedDurations(
        "test", [6.0, 6.2], [2.0], [0.025], {"prepare": [35.0], "replica": [20.0, 22.0], "combine": [0.2]}
    )
    sizing = v2_sizing(448, durations, replicas=3, md_cores=2)
    assert sizing.ligands_per_dock_task == 49  # 300 s / 6.2 s (the upper median)
    assert (sizing.seed_tasks, sizing.redock_tasks, sizing.infer_tasks) == (8 * 448, 2 * 448, 448)
    assert sizing.md_ensembles == 448 // 6 and sizing.tasks == 8 * 448 + 1 + 448 + 2 * 448 + 3 * 74
    sides = {}
    for label, routes in (
        ("pilot", {TaskKind.EXECUTABLE: PUBLISHED["flux"], TaskKind.FUNCTION: PUBLISHED["dragon"]}),
        ("srun", {kind: replace(PUBLISHED["srun"], name=f"srun:{kind.value}") for kind in TaskKind}),
    ):
        sim = Simulator(448, routes)
        sides[label] = V2Campaign(sizing, durations, 500).run(sim)
        ensembles = [r for r in sim.records if r.name.startswith("md ensemble")]
        assert len(ensembles) == 74 and {r.cores for r in ensembles} == {6}
        assert sides[label]["tasks"] == sizing.tasks
    assert sides["pilot"]["makespan_s"] < sides["srun"]["makespan_s"]
    assert sides["srun"]["peak_starts_per_s"] <= 153 < sides["pilot"]["peak_starts_per_s"]
    assert list(sides["pilot"]["stage_ends_s"]) == ["seed docking", "training", "inference", "re-docking", "MD"]
    with pytest.raises(ValueError, match="does not fit on 4 cores"):
        v2_sizing(4, durations, replicas=3, md_cores=2)
    no_md = replace(durations, md_steps={"prepare": [], "replica": [], "combine": []})  # a campaign with top_m = 0
    assert v2_sizing(448, no_md, replicas=3).md_ensembles == 0


def test_streaming_md_spends_at_most_top_m_speculative_runs_per_round(recorded, tmp_path):
    """Worst case for streaming MD: every re-docked compound beats all before it, so each one enters the top-M
    as it lands. Before the budget every one of them got MD; now a round starts at most top-M speculative runs,
    and the round end still gives MD to every compound of the final top-M."""
    import dataclasses
    import itertools

    from impeccable.emulate import (
        EmulatedDocking,
        EmulatedStageTasks,
        emulated_campaign,
        recorded_campaign,
        scaled_library,
    )
    from impeccable.model import BackendModel, Simulator, _ModelPilot, _ModelRunner
    from impeccable.runtime import TaskKind

    class EachBetter(EmulatedDocking):
        better = itertools.count()

        def rows(self, batch, complete=True):
            rows = super().rows(batch, complete)
            if batch.origin == "redock":
                rows = [dataclasses.replace(r, score=-20.0 - next(self.better)) for r in rows]
            return rows

    recorded_c = recorded_campaign(recorded)
    campaign = emulated_campaign(
        recorded_c,
        scaled_library(recorded_c, 4, tmp_path / "lib.csv"),
        8,
        4,
        "ligand",
        {"executable": "local", "function": "local"},
    )
    routes = {kind: BackendModel(f"local:{kind.value}", launch_rate=1000.0) for kind in TaskKind}
    sim = Simulator(8, routes)
    durations = RecordedDurations.from_run(recorded)
    stages = EmulatedStageTasks(campaign, tmp_path / "run", durations)
    stages.docking = EachBetter(stages.ctx, durations)
    runner = _ModelRunner(campaign, tmp_path / "run", stages=stages, pilot=_ModelPilot(8, routes), sim=sim)
    runner.run()
    store = runner.store
    top_m, redocked = campaign.md.top_m, store.db.execute("SELECT count(*) FROM docking WHERE origin='redock'")
    assert redocked.fetchone()[0] > 2 * top_m  # enough re-docks that unbounded speculation would exceed the budget
    assert len(store.speculative_md(0)) <= top_m
    assert len(store.md_ids()) <= 2 * top_m
    assert set(store.best_docked(top_m)) <= store.md_ids()  # no hit of the final top-M goes without MD
    store.close()


def _emulated_runner(recorded: Path, out: Path, stages_class: type, cores: int = 8, scale: int = 2):
    from impeccable.campaign import CampaignRunner
    from impeccable.emulate import emulated_campaign, recorded_campaign, scaled_library

    out.mkdir(parents=True)
    campaign = emulated_campaign(
        recorded_campaign(recorded),
        scaled_library(recorded_campaign(recorded), scale, out / "library.csv"),
        cores,
        scale,
        "ligand",
        {"executable": "local", "function": "local"},
    )
    stages = stages_class(campaign, (out / "run").resolve(), RecordedDurations.from_run(recorded))
    return CampaignRunner(campaign, out / "run", stages=stages)


@pytest.mark.slow  # an emulated campaign end to end (5-30 s)
def test_md_replicas_run_side_by_side_and_combine_waits_for_all(recorded, tmp_path):
    runner = _emulated_runner(recorded, tmp_path / "emu", EmulatedStageTasks)
    runner.run()
    rows = runner.store.task_rows(runner.store.sessions()[-1]["session"])
    md = [r for r in rows if r["stage"] == "md"]
    compounds = {r["name"].rsplit(" ", 1)[1] for r in md}
    assert compounds and len(runner.store.md_ids()) == len(compounds)
    replicas = runner.c.md.replicas
    assert len(md) == len(compounds) * (replicas + 2)  # prepare, each replica, combine
    for cid in compounds:
        steps = {r["name"].rsplit(" ", 1)[0]: r for r in md if r["name"].endswith(" " + cid)}
        prepared, combined = steps["md prepare"], steps["md combine"]
        reps = [steps[f"md replica {i}"] for i in range(replicas)]
        assert all(prepared["finished"] <= r["started"] for r in reps)
        assert all(r["finished"] <= combined["started"] for r in reps) and combined["kind"] == "function"


class _OneReplicaFails(EmulatedStageTasks):
    def __init__(self, campaign, run_dir, durations):
        super().__init__(campaign, run_dir, durations)
        self.md = _SecondReplicaFails(self.ctx, durations)


class _SecondReplicaFails(EmulatedMD):
    def replica_task(self, job, index):
        task = super().replica_task(job, index)
        if index == 1:
            return executable_task(["sh", "-c", "exit 3"], name=task.name, tags=task.tags)
        return task


@pytest.mark.slow  # an emulated campaign end to end (5-30 s)
def test_a_failed_replica_fails_its_compound_once_and_is_not_retried_on_resume(recorded, tmp_path):
    runner = _emulated_runner(recorded, tmp_path / "emu", _OneReplicaFails)
    summary = runner.run()
    md = runner.store.md_results()
    assert md and all(dg is None and "exit" in (err or "").lower() for dg, _, err in md.values())
    assert sum("md" in f for f in summary["failed_tasks"]) == len(md)  # one failure per compound
    rows = runner.store.task_rows(runner.store.sessions()[-1]["session"])
    assert not [r for r in rows if r["name"].startswith("md combine")]  # nothing combines a failed ensemble
    runner.run()  # resumed: the failures are results, nothing of MD runs again
    last = runner.store.task_rows(runner.store.sessions()[-1]["session"])
    assert not [r for r in last if r["stage"] == "md"]


def test_uncontended_cold_start_is_a_real_process_start():
    from impeccable.model import uncontended_cold_start

    assert 0.05 < uncontended_cold_start(runs=1) < 120  # an interpreter and torch's import: never free


def test_an_emulated_function_step_imports_what_the_real_one_imports():
    """Under srun each function task is a fresh process: the emulated one must pay torch's import as the real
    inference does (the surrogate imports torch on first use, so importing its module was not enough)."""
    import subprocess
    import sys

    code = (
        "import sys; from impeccable.emulate_payloads import emulated_infer, emulated_md_combine; "
        "emulated_infer(0.0, []); assert 'torch' in sys.modules and 'rdkit' in sys.modules; "
        "emulated_md_combine(0.0); assert 'openmm' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_critical_path_counts_md_as_prepare_then_the_longest_replica_then_combine():
    from impeccable.measure import critical_path_s

    def row(name: str, start: float, seconds: float) -> dict:
        return {"name": name, "started": 1000 + start, "finished": 1000 + start + seconds, "state": "DONE"}

    base = [
        row("dock s1-r0-seed-00000", 0, 10),
        row("train r0", 10, 5),
        row("infer r0 b00000", 15, 1),
        row("dock s1-r0-redock-00000", 16, 4),
    ]  # re-docked at 20
    steps = [
        row("md prepare C1", 20, 30),
        row("md replica 0 C1", 50, 20),
        row("md replica 1 C1", 50, 25),
        row("md combine C1", 75, 1),
    ]
    assert critical_path_s(base + steps, {"C1": 0}) == pytest.approx(20 + 30 + 25 + 1)
    # a run recorded before MD steps existed: each ensemble one task, each its own chain
    old = [row("md C1", 20, 40), row("md C2", 20, 50)]
    assert critical_path_s(base + old, {"C1": 0, "C2": 0}) == pytest.approx(20 + 50)
    # the library's batches before everything, the pose checks after; each set side by side
    ends = [row("library b00000", -3, 3), row("library b00001", -2, 2), row("pose check 0", 96, 6)]
    ends.append(row("pose check 1", 96, 4))
    assert critical_path_s(base + steps + ends, {"C1": 0}) == pytest.approx(3 + 20 + 30 + 25 + 1 + 6)
