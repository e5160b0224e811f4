"""The MD half of ``impeccable bench --workload gpu``: ns/day and MM/GBSA frames/s on the CPU cores and on one GPU.

Two systems, prepared once where AmberTools is (``prepare_inputs``: the docking stage's pose of
MOSES-0309474 in 4JSV, ligand parameters, tleap, a short minimisation) and read back anywhere else from
their prmtop files and minimised coordinates, as a campaign's replica task does (``md_tasks.load_prepared``):

- ``pocket``: the demo campaign's system and settings (implicit OBC2, the 10 A pocket, 2 fs);
- ``explicit_full``: the whole receptor in TIP3P with PME (``md.solvent = "explicit"``, ``--full-receptor``).

CPU figures use every core: the pocket as one single-thread replica per core side by side (the campaign's
``md.cores = 1``), the explicit system as one replica with a thread per core. GPU figures use one GPU:
the pocket with 1 and with 4 replicas sharing it (side by side, started together), the explicit system
with one. Each replica is its own process, as in a campaign.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any

SYSTEMS = ("pocket", "explicit_full")
KEEP = ("complex", "receptor", "ligand", "solvated")  # the tleap topologies a replica reads (not the inpcrd files:
# it starts from the minimised coordinates in start.npz)


def settings_of(system: str) -> Any:
    from .stages.md import MDSettings

    if system == "pocket":  # campaigns/demo.toml's [md]
        return MDSettings(replicas=2, length_ps=1.0, equilibration_ps=0.25, frame_interval_ps=0.1, threads=1)
    return MDSettings(solvent="explicit", pocket_radius_angstrom=None, minimise_max_iterations=50, threads=1)


def prepare_inputs(dest: Path, work: Path) -> Path:
    """Both systems' folders under ``dest`` (needs AmberTools; a few minutes): what the GPU machine reads."""
    from .stages import md_tasks
    from .stages.md_validate import RECEPTOR_DIR, docked_pose

    pose = docked_pose(work)
    for system in SYSTEMS:
        folder = dest / system
        if (folder / md_tasks.PREPARED).is_file() and (folder / md_tasks.START).is_file():
            continue  # prepared before (the JSON is written last)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(pose, folder / "pose.sdf")
        (folder / "settings.json").write_text(json.dumps(dataclasses.asdict(settings_of(system)), indent=1))
        md_tasks.prepare_step(folder, RECEPTOR_DIR / "receptor.pdb", work / "params")
        for path in (folder / "amber").iterdir():  # only what a replica reads travels
            if path.is_dir() or path.stem not in KEEP or path.suffix != ".prmtop":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return dest


def md_figures(inputs: Path, cores: int, gpu: bool, steps_scale: float = 1.0) -> dict[str, Any]:
    """ns/day and frames/s of both systems; GPU figures None (with the reason) where no GPU platform works."""
    from .stages.device import openmm_platform

    out: dict[str, Any] = {}
    pocket, explicit = inputs / "pocket", inputs / "explicit_full"
    steps = {"pocket_cpu": 100, "pocket_gpu": 4000, "explicit_cpu": 100, "explicit_gpu": 2000}
    steps = {k: max(10, int(v * steps_scale)) for k, v in steps.items()}
    out["pocket_cpu"] = _side_by_side(pocket, "CPU", cores, steps["pocket_cpu"])
    out["explicit_full_cpu"] = _side_by_side(explicit, "CPU", 1, steps["explicit_cpu"], threads=cores)
    choice = openmm_platform("auto") if gpu else None
    if choice is None or choice.name == "CPU":
        out["gpu_reason"] = choice.note if choice is not None else "no GPU found"
        return out
    out["gpu_platform"] = choice.label
    out["pocket_gpu_1"] = _side_by_side(pocket, choice.name, 1, steps["pocket_gpu"])
    out["pocket_gpu_4"] = _side_by_side(pocket, choice.name, 4, steps["pocket_gpu"])
    out["explicit_full_gpu"] = _side_by_side(explicit, choice.name, 1, steps["explicit_gpu"])
    return out


def _side_by_side(folder: Path, platform: str, replicas: int, steps: int, threads: int = 1) -> dict[str, Any]:
    """``replicas`` processes of the system in ``folder`` started together: their summed ns/day, frames/s."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(replicas)
        with ctx.Pool(replicas) as pool:
            runs = pool.starmap(
                replica_speed, [(str(folder), platform, steps, threads, barrier, i) for i in range(replicas)]
            )
    return {
        "ns_per_day": round(sum(r["ns_per_day"] for r in runs), 3),
        "replicas": replicas,
        "ns_per_day_each": [round(r["ns_per_day"], 3) for r in runs],
        "atoms": runs[0]["atoms"],
        "steps": steps,
        "threads": threads,
        "platform": runs[0]["platform"],
        "mmgbsa_frames_per_s": round(sum(r["frames_per_s"] for r in runs), 2),
    }


def replica_speed(folder: str, platform: str, steps: int, threads: int, barrier: Any, index: int) -> dict[str, Any]:
    """One replica's MD steps per day (after 10 warm-up steps, all replicas timed together) and MM/GBSA frames/s."""
    from openmm import unit

    from .stages import md, md_tasks

    p = md_tasks.load_prepared(Path(folder), platform=platform, threads=threads)
    ctx = md._context(p, md.replica_seed(p.settings.seed, index), start=True)
    ctx.setVelocitiesToTemperature(p.settings.temperature_k * unit.kelvin, index + 1)
    integrator = ctx.getIntegrator()
    integrator.step(10)
    ctx.getState(getEnergy=True)
    barrier.wait()
    t0 = time.perf_counter()
    integrator.step(steps)
    ctx.getState(getEnergy=True)  # waits for a GPU to finish
    wall = time.perf_counter() - t0
    frame = p.start_nm[: p.n_solute]
    p.scorer.score(frame)
    t1, frames = time.perf_counter(), 5
    for _ in range(frames):
        p.scorer.score(frame)
    scoring = time.perf_counter() - t1
    ns = steps * p.settings.timestep_fs * 1e-6
    return {
        "ns_per_day": ns / (wall / 86400.0),
        "atoms": p.system.getNumParticles(),
        "platform": md._choice(p.settings).label,
        "frames_per_s": frames / scoring,
    }
