"""``impeccable bench --workload gpu``: the stages that can use a GPU, on all CPU cores and on one GPU, in one run.

    impeccable bench --workload gpu --json gpu.json [--md-inputs DIR] [--quick]

- surrogate training (``train_s_*``): ``stages.surrogate.train`` on the shipped 5,000 reference scores,
  as a campaign's training task runs it (the device chosen by the task's GPUs; torch threads = all cores);
- inference (``infer_mol_per_s_*``): the campaign's inference call (``work.infer_batch``, batches of 1,000)
  in one process per core, end to end; the same with each process's model on the GPU; featurisation alone
  on all cores (``featurise_mol_per_s``), which end to end cannot beat; and the model alone on rows already
  on the device (``infer_model_only_mol_per_s_*``);
- MD and MM/GBSA (``gpubench_md``): ns/day and frames/s, from inputs prepared where AmberTools is.

Without a GPU the command exits 0 with the CPU figures, the GPU ones null and ``reason`` saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .fileio import write_json

DATA = Path(__file__).resolve().parent.parent / "data"
SCORES = DATA / "scores" / "4jsv_vina_states.csv"
LIBRARY = DATA / "library" / "moses_20k.csv"
BATCH = 1000  # the campaign's default inference batch


def run(args: argparse.Namespace) -> int:
    """The ``bench --workload gpu`` command: measure, print, write the JSON."""
    result = gpu_bench(args.md_inputs, quick=args.quick, cores=args.cores)
    for key in (
        "gpus_found",
        "train_s_cpu",
        "train_s_gpu",
        "infer_mol_per_s_cpu",
        "infer_mol_per_s_gpu",
        "featurise_mol_per_s",
        "infer_model_only_mol_per_s_gpu",
        "md_ns_per_day_cpu",
        "md_ns_per_day_gpu",
        "md_gpu_over_cpu",
        "reason",
    ):
        print(f"{key:32s} {result.get(key)}")
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0


def gpu_bench(md_inputs: Path | None = None, quick: bool = False, cores: int | None = None) -> dict[str, Any]:
    """Every figure of the module docstring; GPU figures None with ``reason`` where there is no usable GPU."""
    import torch

    from .runtime.gpus import discover

    cores = cores or len(os.sched_getaffinity(0))
    found = discover()
    reasons = []
    gpu = found.count > 0 and torch.cuda.is_available()
    if not found.count:
        reasons.append(f"no GPU here ({found.source}; checked: {'; '.join(found.checked)})")
    elif not torch.cuda.is_available():
        reasons.append(f"{found.count} GPU(s) found ({found.source}) but torch {torch.__version__} sees none")
    out: dict[str, Any] = {
        "gpus_found": found.count,
        "gpu_names": list(found.names),
        "gpus_source": found.source,
        "cores": cores,
        "host": platform.node(),
        "torch": torch.__version__,
        "quick": quick,
        "load_average_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="impeccable-gpubench-") as tmp:
        model = Path(tmp) / "model.pt"
        out.update(_training(model, cores, gpu, epochs=5 if quick else 40, compounds=500 if quick else None))
        out.update(_inference(model, cores, gpu, n=4000 if quick else 100_000))
    out.update(_md(md_inputs, cores, gpu, quick, reasons))
    gpu_keys = ("train_s_gpu", "infer_mol_per_s_gpu", "infer_model_only_mol_per_s_gpu", "md_ns_per_day_gpu")
    if any(out.get(k) is None for k in gpu_keys) and not reasons:
        reasons.append("see the null figures")
    out["reason"] = "; ".join(reasons) or None
    out["load_average_after"] = os.getloadavg()
    return out


# ----------------------------------------------------------------------------- the surrogate


def _training(model: Path, cores: int, gpu: bool, epochs: int, compounds: int | None = None) -> dict[str, Any]:
    from .stages.surrogate import _read_scores, train

    records = _read_scores(SCORES)[:compounds]
    out: dict[str, Any] = {"train_compounds": len(records), "train_epochs": epochs}
    for side in ("cpu", "gpu"):
        if side == "gpu" and not gpu:
            out["train_s_gpu"] = None
            continue
        with task_gpus(side == "gpu"):
            t0 = time.perf_counter()
            report = train(
                records, model if side == "cpu" else model.with_suffix(".gpu.pt"), epochs=epochs, seed=0, threads=cores
            )
            out[f"train_s_{side}"] = round(time.perf_counter() - t0, 3)
            out[f"train_device_{side}"] = report["device"]
            out[f"train_val_rmse_{side}"] = round(report["val_rmse"], 4)
    return out


def _inference(model: Path, cores: int, gpu: bool, n: int) -> dict[str, Any]:
    from .stages.library import read_library

    library = [rec.smiles for rec in read_library(LIBRARY)]
    smiles = [library[i % len(library)] for i in range(n)]
    batches = [smiles[i : i + BATCH] for i in range(0, n, BATCH)]
    out: dict[str, Any] = {"infer_molecules": n, "infer_batch": BATCH, "infer_processes": cores}
    with task_gpus(False):
        out["featurise_mol_per_s"] = _pooled(cores, "featurise", str(model), batches)[0]
        out["infer_mol_per_s_cpu"], out["infer_seconds_cpu"] = _pooled(cores, "infer", str(model), batches)
        out["infer_model_only_mol_per_s_cpu"] = _model_only(model, smiles[:20000], "cpu", cores)
    out["infer_mol_per_s_gpu"] = out["infer_model_only_mol_per_s_gpu"] = None
    if gpu:
        with task_gpus(True):
            out["infer_mol_per_s_gpu"], out["infer_seconds_gpu"] = _pooled(cores, "infer", str(model), batches)
            out["infer_model_only_mol_per_s_gpu"] = _model_only(model, smiles[:20000], "cuda", cores)
        out["infer_gpu_over_featurise"] = round(out["infer_mol_per_s_gpu"] / out["featurise_mol_per_s"], 3)
    return out


def _pooled(cores: int, what: str, model: str, batches: list[list[str]]) -> tuple[float, dict[str, float]]:
    """Molecules/s of ``what`` over ``batches`` in ``cores`` fresh processes (started and warmed before the clock),
    and the seconds each part took, summed over the batches."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold a CUDA context
    with ctx.Manager() as manager, ctx.Pool(cores, initializer=_warm, initargs=(model,)) as pool:
        barrier = manager.Barrier(cores)
        pool.map(_meet, [barrier] * cores, chunksize=1)  # every worker is up (its initializer has run)
        t0 = time.perf_counter()
        parts = pool.starmap(_batch, [(what, model, b) for b in batches])
        wall = time.perf_counter() - t0
    n = sum(len(b) for b in batches)
    seconds = {k: round(sum(p[k] for p in parts), 3) for k in parts[0]}
    return round(n / wall, 1), seconds


def _warm(model: str) -> None:
    from .work import infer_batch

    infer_batch(model, ["CCO", "c1ccccc1"], {})  # imports, model load, and the device copy where there is one


def _meet(barrier: Any) -> None:
    barrier.wait()


def _batch(what: str, model: str, smiles: list[str]) -> dict[str, float]:
    from .stages.features import featurise_sparse
    from .work import infer_batch

    if what == "featurise":
        t0 = time.perf_counter()
        featurise_sparse(smiles)
        return {"featurise_s": time.perf_counter() - t0}
    return infer_batch(model, smiles, {})["seconds"]


def _model_only(model: Path, smiles: list[str], device_type: str, cores: int, repeats: int = 20) -> float:
    """Molecules/s of the model alone on rows already on the device (the featurisation done beforehand)."""
    import torch

    from .stages.features import featurise_sparse
    from .stages.surrogate import _csr_tensors, _forward_sparse, _load, _resident

    torch.set_num_threads(cores)
    net, meta = _load(model)
    device = torch.device(device_type)
    if device.type != "cpu":
        net = _resident(net, model, device)
    rows = [a.to(device) for a in _csr_tensors(torch, featurise_sparse(smiles, meta["features"]))]
    with torch.inference_mode():
        _forward_sparse(torch, net, *rows)
        if device.type != "cpu":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            _forward_sparse(torch, net, *rows)
        if device.type != "cpu":
            torch.cuda.synchronize(device)
    return round(len(smiles) * repeats / (time.perf_counter() - t0), 1)


@contextlib.contextmanager
def task_gpus(use: bool) -> Iterator[None]:
    """Run the stage code below as a task holding the first visible GPU (``use``) or none (runtime/gpus.py)."""
    from .runtime.gpus import GPUS_ENV

    saved = os.environ.get(GPUS_ENV)
    os.environ[GPUS_ENV] = "ids" if use else "none"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(GPUS_ENV, None)
        else:
            os.environ[GPUS_ENV] = saved


# ----------------------------------------------------------------------------- MD


def _md(inputs: Path | None, cores: int, gpu: bool, quick: bool, reasons: list[str]) -> dict[str, Any]:
    from . import gpubench_md

    out: dict[str, Any] = {"md_ns_per_day_cpu": None, "md_ns_per_day_gpu": None, "md_gpu_over_cpu": None}
    if inputs is None or not all((inputs / s / "prepared.json").is_file() for s in gpubench_md.SYSTEMS):
        reasons.append(
            f"no prepared MD inputs ({inputs}): make them where AmberTools is with "
            "`impeccable bench --workload gpu --prepare-md DIR`"
        )
        return out
    with task_gpus(gpu):
        md = gpubench_md.md_figures(inputs, cores, gpu, 0.1 if quick else 1.0)
    out["md"] = md
    out["md_ns_per_day_cpu"] = md["explicit_full_cpu"]["ns_per_day"]
    out["mmgbsa_frames_per_s_cpu"] = md["pocket_cpu"]["mmgbsa_frames_per_s"]
    if "gpu_reason" in md:
        reasons.append(f"MD: {md['gpu_reason']}")
        return out
    out["md_ns_per_day_gpu"] = md["explicit_full_gpu"]["ns_per_day"]
    out["md_gpu_over_cpu"] = round(out["md_ns_per_day_gpu"] / out["md_ns_per_day_cpu"], 2)
    out["mmgbsa_frames_per_s_gpu"] = md["pocket_gpu_1"]["mmgbsa_frames_per_s"]
    return out
