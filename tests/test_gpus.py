"""GPUs: discovery and its sources, what every route tells a task (emulated GPU slots), the campaign's plan."""

from __future__ import annotations

import json
import os
import sys

import pytest

from impeccable.cli import main
from impeccable.runtime import Allocation, Pilot, TaskState, executable_task, function_task, gpus
from impeccable.runtime.backends.slurm.srun import SlurmAllocation, SrunLauncher
from impeccable.runtime.metrics import summarize
from impeccable.runtime.records import TaskRecord

SH = "/bin/sh"
SEEN = 'echo "${CUDA_VISIBLE_DEVICES:-unset} ${IMPECCABLE_GPUS:-unset}"'


def absent(argv):
    return None


# ----------------------------------------------------------------------------- discovery


def test_nothing_answers_means_zero_gpus_with_every_source_checked():
    found = gpus.discover({}, absent, "host")
    assert (found.count, found.ids, found.source) == (0, (), "none found")
    assert len(found.checked) == 6 and any("nvidia-smi" in line for line in found.checked)


def test_a_visible_devices_variable_wins_and_none_means_none():
    smi = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n"
    hardware = lambda argv: smi if argv[0] == "nvidia-smi" else None  # noqa: E731
    assert gpus.discover({"CUDA_VISIBLE_DEVICES": "1"}, hardware).ids == ("1",)
    assert gpus.discover({"CUDA_VISIBLE_DEVICES": ""}, hardware).count == 0
    assert gpus.discover({"CUDA_VISIBLE_DEVICES": "-1"}, hardware).count == 0
    # ROCR renumbers what HIP sees, and children inherit it: they count from 0
    assert gpus.discover({"ROCR_VISIBLE_DEVICES": "4,5"}, hardware).ids == ("0", "1")
    found = gpus.discover({}, hardware)
    assert (found.count, found.source, found.vendor, found.names[0]) == (
        2,
        "nvidia-smi -L",
        "nvidia",
        "NVIDIA H100 80GB HBM3",
    )


def test_slurm_job_gpus_and_a_job_without_gpus():
    assert gpus.parse_slurm({}) is None
    assert gpus.parse_slurm({"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "2,3"}) == (("2", "3"), "SLURM_JOB_GPUS=2,3")
    assert gpus.parse_slurm({"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "4"})[0] == ("0", "1", "2", "3")
    assert gpus.parse_slurm({"SLURM_JOB_ID": "7", "SLURM_JOB_GRES": "gpu:a100:2(IDX:0-1)"})[0] == ("0", "1")
    ids, source = gpus.parse_slurm({"SLURM_JOB_ID": "7"})
    assert ids == () and "asked for no GPU" in source
    # a job that asked for none holds none, whatever the node's hardware says
    found = gpus.discover({"SLURM_JOB_ID": "7"}, lambda argv: "GPU 0: X (UUID: a)\n")
    assert found.count == 0 and "Slurm job 7" in found.source


def test_flux_r_gpus_of_this_broker():
    r = {
        "version": 1,
        "execution": {
            "R_lite": [
                {"rank": "0-1", "children": {"core": "0-3", "gpu": "0-1"}},
                {"rank": "2", "children": {"core": "0-3"}},
            ]
        },
    }
    assert gpus.parse_flux_r(r) == {0: ("0", "1"), 1: ("0", "1"), 2: ()}
    answers = {"resource": json.dumps(r), "getattr": "1\n"}
    found = gpus.discover({"FLUX_URI": "local:///x"}, lambda argv: answers.get(argv[1]))
    assert found.count == 2 and found.source.startswith("Flux R, rank 1")


def test_rocm_smi_rows():
    text = "device,Card series,Card model\ncard0,AMD Instinct MI250X,0x740c\ncard1,AMD Instinct MI250X,0x740c\n"
    assert gpus.parse_rocm_smi(text) == [("0", "AMD Instinct MI250X"), ("1", "AMD Instinct MI250X")]


def test_resources_command_reports_cores_and_no_gpu_with_what_was_checked(tmp_path, monkeypatch, capsys):
    for name in (*gpus.VISIBLE_VARIABLES, "SLURM_JOB_ID", "FLUX_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi, no rocm-smi
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert main(["resources", "--json", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    node = doc["nodes"][0]
    assert doc["gpus"] == 0 and node["cores"] == len(os.sched_getaffinity(0)) and "affinity" in node["cores_source"]
    assert node["gpus_source"] == "none found" and "NVML: nvidia-ml-py not installed" in node["gpus_checked"]
    assert "0 GPU(s)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- what a task is told


def test_slots_map_to_devices_and_a_persistent_worker_reaches_every_device():
    table = gpus.slot_devices(4, 2, ("3", "5"))
    assert table == ("3", "3", "5", "5")
    assert gpus.launch_env([6], 4, table)["CUDA_VISIBLE_DEVICES"] == "5"  # slot 6 = node 1's slot 2
    assert gpus.launch_env([], 4, table)["CUDA_VISIBLE_DEVICES"] == "-1"
    assert gpus.launch_env([], 0, ()) == {gpus.GPUS_ENV: "none"}
    assert gpus.launch_env([3], 2, ())["CUDA_VISIBLE_DEVICES"] == "1"  # no table: a slot is a device
    worker = {**gpus.worker_env(4, table), "CUDA_VISIBLE_DEVICES": "2"}
    assert gpus.bind(worker, prepare=False) == gpus.Binding(("5",), (1,))  # device 5 is the node's second
    assert gpus.bind({gpus.GPUS_ENV: "ids", "CUDA_VISIBLE_DEVICES": "5"}).ordinals == (0,)
    assert gpus.bind({gpus.GPUS_ENV: "none", "CUDA_VISIBLE_DEVICES": "5"}).devices == ()
    assert gpus.bind({gpus.GPUS_ENV: "ids", "CUDA_VISIBLE_DEVICES": "-1"}).reason == "this task was given no GPU"


def test_allocation_refuses_shares_that_do_not_divide_a_node():
    assert Allocation(cores=4, gpus=8, gpu_shares=4).devices_per_node == 2
    with pytest.raises(ValueError, match="gpu_shares"):
        Allocation(cores=4, gpus=6, gpu_shares=4)
    with pytest.raises(ValueError, match="gpu_devices names 1 devices"):
        Allocation(cores=4, gpus=4, gpu_shares=2, gpu_devices=("0",))


def shared_gpus() -> Allocation:
    """4 cores and 2 emulated GPUs (IDs 3 and 5), each split into 2 slots."""
    return Allocation(cores=4, gpus=4, gpu_shares=2, gpu_devices=("3", "5"))


def test_local_executables_see_the_devices_they_hold(tmp_path):
    tasks = [
        executable_task(
            [SH, "-c", SEEN + "; sleep 0.3"], name=f"g{i}", gpus_per_rank=n, stdout=str(tmp_path / f"g{i}.txt")
        )
        for i, n in enumerate((2, 1, 1, 0))
    ]
    with Pilot(shared_gpus(), routes={"executable": "local", "function": "local"}) as pilot:
        records = pilot.run(tasks, timeout=60)
    table = ("3", "3", "5", "5")
    for i, record in enumerate(records):
        assert record.state is TaskState.DONE
        visible, mode = (tmp_path / f"g{i}.txt").read_text().split()
        expected = ",".join(dict.fromkeys(table[g] for g in record.gpu_slots)) or "-1"
        assert (visible, mode) == (expected, "ids")
    whole = records[0].gpu_slots
    assert len(whole) == 2 and {table[g] for g in whole} == {"3"}  # the whole-GPU task got both slots of one


def report_gpus() -> dict[str, str]:
    binding = gpus.bind(prepare=False)
    return {"devices": ",".join(binding.devices), "mode": os.environ.get(gpus.GPUS_ENV, "unset")}


def test_local_function_calls_reach_the_device_of_their_slot():
    tasks = [function_task(report_gpus, name=f"f{i}", gpus_per_rank=1) for i in range(4)]
    tasks.append(function_task(report_gpus, name="cpu"))
    with Pilot(shared_gpus(), routes={"executable": "local", "function": "local"}) as pilot:
        futures = pilot.submit_many(tasks)
        results = [f.result(timeout=60) for f in futures]
    table = ("3", "3", "5", "5")
    for future, result in zip(futures[:4], results[:4]):
        (slot,) = future.record.gpu_slots
        assert result == {"devices": table[slot], "mode": "slots:3,3,5,5"}
    assert results[4]["devices"] == ""  # a call holding no GPU slot reaches none


def test_srun_steps_ask_for_whole_gpus_and_the_allocation_for_the_pilots():
    launcher = SrunLauncher("9", "/tmp", "", [], gpu_shares=4)
    share = launcher.command(executable_task(["x"], gpus_per_rank=1), (0,), (0,))
    whole = launcher.command(executable_task(["x"], gpus_per_rank=8), (0,), tuple(range(8)))
    assert "--gpus-per-task=1" in share and "--gpus-per-task=2" in whole
    assert "--gpus=2" in SlurmAllocation(cores=8, gpus=2).salloc_argv()
    assert not any(a.startswith("--gpus") for a in SlurmAllocation(cores=8).salloc_argv())


# ----------------------------------------------------------------------------- accounting


def test_gpu_utilisation_counts_devices_held_over_the_makespan():
    records = [
        TaskRecord(
            uid=str(i),
            name="t",
            kind="executable",
            cores=1,
            gpus=g,
            state=TaskState.DONE,
            submitted=0.0,
            scheduled=0.0,
            started=0.0,
            finished=10.0,
            slots=(i,),
            gpu_slots=tuple(range(g)),
        )
        for i, g in enumerate((2, 1, 0))
    ]
    m = summarize(records, cores=4, gpus=4, gpu_shares=2)
    assert (m.gpus, m.busy_gpu_s) == (2, 15.0) and m.gpu_utilization == pytest.approx(0.75)
    assert summarize(records, cores=4).gpu_utilization is None


# ----------------------------------------------------------------------------- the campaign's plan


def campaign(tmp_path, pilot: str = "", stages: str = ""):
    from test_campaign_run import tiny

    from impeccable.config import load_campaign

    path = tiny(tmp_path)
    text = path.read_text().replace("[pilot]\ncores = 2", f"[pilot]\ncores = 16\noversubscribe = true\n{pilot}")
    path.write_text(text + stages)
    return load_campaign(path)


def test_requests_become_gpu_shares_and_inference_gets_a_share_per_core(tmp_path):
    from impeccable.gpuplan import plan_for
    from impeccable.inputs import make_pilot

    pilot = make_pilot(campaign(tmp_path, "gpus = 1"))
    allocation = pilot.allocation
    assert (allocation.gpus, allocation.gpu_shares, allocation.devices_per_node) == (16, 16, 1)
    plan = plan_for(campaign(tmp_path, "gpus = 1"), allocation, "pilot.gpus = 1")
    assert plan.slots == {"train": 16, "infer": 1, "md": 16} and plan.wanted["infer"] == "1/16" and not plan.reason


def test_without_gpus_the_stages_run_on_cpu_with_one_reason(tmp_path):
    from impeccable.gpuplan import plan_for

    c = campaign(tmp_path)
    plan = plan_for(c, Allocation(cores=16), "none found")
    assert plan.slots == {"train": 0, "infer": 0, "md": 0}
    assert plan.reason == "no GPU in this allocation (none found): surrogate training, inference, MD run on CPU"


def test_more_gpus_than_are_here_is_refused_unless_emulating(tmp_path, monkeypatch):
    from impeccable.inputs import CampaignInputError, make_pilot

    monkeypatch.setattr(gpus, "discover", lambda *a, **k: gpus.GpuInventory(0, (), "none found"))
    c = campaign(tmp_path, "gpus = 2")
    with pytest.raises(CampaignInputError, match=r"pilot.gpus = 2 but 0 GPU\(s\) are here \(none found"):
        make_pilot(c.model_copy(update={"pilot": c.pilot.model_copy(update={"oversubscribe": False, "cores": 2})}))
    allocation = make_pilot(c).allocation  # 8 cores per GPU: inference takes 1/8 of one
    assert (allocation.gpus, allocation.gpu_shares, allocation.devices_per_node) == (16, 8, 2)


def test_a_gpu_request_must_be_whole_or_one_nth(tmp_path):
    from test_campaign_run import tiny

    from impeccable.config import CampaignError, load_campaign

    path = tiny(tmp_path)
    path.write_text(path.read_text().replace("[md]\n", "[md]\ngpus = 0.3\n"))
    with pytest.raises(CampaignError, match=r"md.gpus: gpus per task: 0, a whole number, or one n-th .*got 0.3"):
        load_campaign(path)


@pytest.mark.slow  # an emulated campaign end to end (5-30 s)
def test_an_emulated_gpu_node_holds_gpu_slots_and_a_cpu_run_says_why_once(tmp_path):
    from test_emulate import recorded as recorded_fixture

    from impeccable.emulate import run_emulation
    from impeccable.store import Store

    run_dir = recorded_fixture.__wrapped__(tmp_path)
    cpu = run_emulation(run_dir, tmp_path / "cpu", cores=8, scale=2)
    gpu = run_emulation(run_dir, tmp_path / "gpu", cores=8, scale=2, gpus=2)
    assert cpu["gpu_utilization"] is None and cpu["failed"] == gpu["failed"] == 0
    assert gpu["gpus"] == 2 and 0 < gpu["gpu_utilization"] <= 1
    store = Store.open_existing(tmp_path / "cpu" / "run", readonly=True)
    assert json.loads(store.get_meta("device_notes")) == [
        "no GPU in this allocation (pilot.gpus = 0): surrogate training, inference, MD run on CPU"
    ]
    store = Store.open_existing(tmp_path / "gpu" / "run", readonly=True)
    rows = store.task_rows()
    held = {r["stage"]: len(r["gpu_slots"]) for r in rows if r["gpu_slots"]}
    assert held == {"train": 4, "infer": 1, "md": 4}  # 4 cores per GPU: an inference batch takes 1/4 of one
    assert store.sessions()[-1]["gpus"] == 8 and store.get_meta("device_notes") is None


def test_the_model_holds_gpu_slots_too(tmp_path):
    from test_emulate import recorded as recorded_fixture

    from impeccable.model import BackendModel, Calibration, predict
    from impeccable.runtime import TaskKind

    run_dir = recorded_fixture.__wrapped__(tmp_path)
    calibration = Calibration({kind: BackendModel(f"local:{kind.value}", launch_rate=1000.0) for kind in TaskKind})
    figures = predict(run_dir, cores=8, calibration=calibration, scale=2, gpus=2)
    assert figures["gpus"] == 2 and 0 < figures["gpu_utilization"] <= 1 and figures["failed"] == 0
    assert predict(run_dir, cores=8, calibration=calibration, scale=2)["gpu_utilization"] is None
