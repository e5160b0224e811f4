"""Where a stage task computes: the torch device and OpenMM platform of the GPU it holds, or the CPU and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from impeccable.runtime.gpus import GPUS_ENV
from impeccable.stages import device, surrogate
from impeccable.stages.errors import StageInputError
from impeccable.work import infer_batch

ROOT = Path(__file__).resolve().parent.parent
SMILES = [
    "CCO",
    "c1ccccc1O",
    "CC(=O)Nc1ccc(O)cc1",
    "not a smiles",
    "CCN(CC)CC",
    "OC(=O)c1ccccc1",
    "Cc1ccccc1",
    "CCCCCC",
    "c1ccncc1",
    "CC(C)O",
]


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv(GPUS_ENV, "none")
    path = tmp_path / "m.pt"
    surrogate.train([(s, -float(i)) for i, s in enumerate(SMILES * 2)], path, epochs=2, seed=0, threads=1)
    device.openmm_platform.cache_clear()
    yield path
    device.openmm_platform.cache_clear()


def test_a_task_holding_no_gpu_runs_on_cpu_without_a_note(model, monkeypatch):
    report = surrogate.train([(s, -float(i)) for i, s in enumerate(SMILES * 2)], model, epochs=1, threads=1)
    assert (report["device"], report["device_note"]) == ("cpu", "")
    out = infer_batch(str(model), SMILES, {})
    assert (
        out["device"] == "cpu"
        and out["device_note"] == ""
        and set(out["seconds"]) == {"featurise_s", "transfer_s", "model_s"}
    )
    assert device.openmm_platform("auto") == device.PlatformChoice("CPU")


def test_a_gpu_it_cannot_use_is_said_and_the_task_runs_on_cpu(model, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is usable here")
    monkeypatch.setenv(GPUS_ENV, "ids")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = infer_batch(str(model), SMILES, {})
    assert out["device"] == "cpu" and "visible but torch" in out["device_note"] and "sees none" in out["device_note"]
    choice = device.openmm_platform("auto", "mixed", 1)
    if choice.name == "CPU":  # no OpenMM GPU platform loads here
        assert choice.properties == {"Threads": "1"} and "no OpenMM GPU platform works" in choice.note
    with pytest.raises(StageInputError, match="MDSettings.platform: OpenCL does not work here"):
        device.openmm_platform("OpenCL")


def test_timed_prediction_is_the_same_prediction(model):
    plain = surrogate.predict_scores(model, SMILES)
    timed, seconds = surrogate.predict_timed(model, SMILES)
    np.testing.assert_array_equal(plain, timed)
    assert np.isnan(timed[3]) and seconds["transfer_s"] == 0.0


def test_unknown_platform_or_precision_is_an_input_error():
    from impeccable.stages.md import MDSettings

    with pytest.raises(StageInputError, match="MDSettings.platform: 'Metal' is not one of"):
        MDSettings(platform="Metal").check()
    with pytest.raises(StageInputError, match="MDSettings.precision"):
        MDSettings(precision="half").check()
    assert device.PlatformChoice("CUDA", {"DeviceIndex": "0", "Precision": "mixed"}).scoring_properties() == {
        "DeviceIndex": "0",
        "Precision": "double",
    }
