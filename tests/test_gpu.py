"""On a real GPU (``python -m pytest -m gpu tests/test_gpu.py``): the GPU stages through the pilot use the GPU.

The GPU stages of a campaign, as the campaign builds them, on a pilot over this machine's GPUs (found by
discovery) with the local routes: surrogate training and an inference batch (function tasks in persistent
workers) and an MD replica (an executable) of a complex prepared where AmberTools is
(``impeccable bench --workload gpu --prepare-md DIR``; ``IMPECCABLE_GPU_MD_INPUTS=DIR``). Each must report
that it ran on the GPU: torch's ``cuda`` device, OpenMM's CUDA (or HIP/OpenCL) platform. Docking and MD
preparation need Vina and AmberTools, which a GPU machine may lack, so they are not part of it.
Skipped, with the reason, where no GPU is visible.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip(f"no GPU visible to torch {torch.__version__}", allow_module_level=True)

from impeccable.runtime import Allocation, Pilot, TaskState, executable_task, function_task  # noqa: E402
from impeccable.runtime.gpus import discover  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pilot():
    found = discover()
    assert found.count >= 1, f"torch sees a GPU but discovery found none: {found.checked}"
    allocation = Allocation(cores=4, gpus=found.count * 4, gpu_shares=4, gpu_devices=found.ids)
    with Pilot(allocation, routes={"executable": "local", "function": "local"}) as p:
        yield p


def test_training_and_inference_run_on_the_gpu_they_hold(pilot, tmp_path):
    from impeccable.stages.surrogate import _read_scores, predict_scores

    records = _read_scores(ROOT / "data" / "scores" / "4jsv_vina_states.csv")[:400]
    model = tmp_path / "model.pt"
    train = function_task("impeccable.work:train_surrogate", records, str(model), 5, 0, 0.2, 1, gpus_per_rank=4)
    report = pilot.submit(train).result(timeout=600)
    assert report["device"].startswith("cuda") and report["device_note"] == ""
    smiles = [s for s, _ in records[:1000]]
    infer = function_task("impeccable.work:infer_batch", str(model), smiles, {}, gpus_per_rank=1)
    future = pilot.submit(infer)
    out = future.result(timeout=600)
    assert out["device"].startswith("cuda") and len(future.record.gpu_slots) == 1
    np.testing.assert_allclose(out["scores"], predict_scores(model, smiles), rtol=1e-4, atol=1e-4)


def test_an_md_replica_runs_on_a_gpu_platform(pilot, tmp_path):
    inputs = os.environ.get("IMPECCABLE_GPU_MD_INPUTS")
    if not inputs or not (Path(inputs) / "pocket" / "prepared.json").is_file():
        pytest.skip("no prepared MD inputs: set IMPECCABLE_GPU_MD_INPUTS (bench --workload gpu --prepare-md DIR)")
    from impeccable.stages import md_tasks

    folder = tmp_path / "pocket"
    shutil.copytree(Path(inputs) / "pocket", folder)
    meta = json.loads((folder / md_tasks.PREPARED).read_text())
    meta["inputs"]["settings"].update(platform="auto", replicas=1, length_ps=0.2, equilibration_ps=0.1)
    (folder / md_tasks.PREPARED).write_text(json.dumps(meta))
    task = executable_task(
        md_tasks.command("replica", folder, index=0),
        name="md replica 0",
        gpus_per_rank=4,
        stderr=str(tmp_path / "replica.err"),
    )
    record = pilot.run([task], timeout=600)[0]
    assert record.state is TaskState.DONE, (tmp_path / "replica.err").read_text()[-2000:]
    replica = json.loads(md_tasks.replica_file(folder, 0).read_text())["replica"]
    assert replica["platform"].split()[0] in ("CUDA", "HIP", "OpenCL"), replica["platform_note"]
