"""One compound's MD ensemble as separate tasks: prepare, one task per replica, combine.

ESMACS replicas are independent simulations from one minimised structure, so a campaign runs them as
independent tasks (as IMPECCABLE does): on a large allocation the last wave of MD is one replica long, not
one ensemble. The steps and their files, all in the compound's folder:

- ``prepare`` (executable): ligand parameters (cached), tleap build in ``amber/``, minimisation ->
  ``prepared.json`` and ``start.npz`` (the minimised coordinates every replica starts from);
- ``replica I`` (executable, one per replica): rebuilds the same OpenMM system from the prmtop files and
  runs replica I exactly as :func:`md.run_replica` does in one process -> ``replica_I.json`` (and
  ``replica_I.frames.npy`` when MMPBSA.py will rescore the frames);
- ``combine`` (a function task): :func:`md.ensemble_result` over the replicas -> ``result.json``.

Every file carries the fingerprint of its inputs (pose, receptor, settings): a resumed campaign keeps the
steps whose files match and redoes only the rest, and a file from other inputs is never mixed in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ..fileio import write_json
from .errors import StageInputError

PREPARED = "prepared.json"
START = "start.npz"
RESULT = "result.json"


def fingerprint(receptor_pdb: str | Path, pose_sdf: str, settings: Any) -> str:
    """What a step's output depends on: the pose, the receptor file's content, every MD setting."""
    h = hashlib.sha256()
    h.update(Path(receptor_pdb).read_bytes())
    h.update(pose_sdf.encode())
    h.update(json.dumps(asdict(settings), sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def replica_file(folder: Path, index: int) -> Path:
    return folder / f"replica_{index}.json"


def finished(path: Path, expected: str) -> bool:
    """``path`` exists and was made from the inputs whose fingerprint is ``expected``."""
    try:
        return json.loads(path.read_text()).get("fingerprint") == expected
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------- the steps


def prepare_step(folder: Path, receptor_pdb: Path, param_cache: Path | None) -> None:
    """Parameterise, build and minimise the pose in ``folder/pose.sdf`` with ``folder/settings.json``."""
    import numpy as np

    from . import md

    settings = read_settings(folder)
    pose = folder / "pose.sdf"
    key = fingerprint(receptor_pdb, pose.read_text(), settings)
    p = md.prepare(receptor_pdb, pose, settings, param_cache, folder / "amber")
    t0 = time.perf_counter()
    md.minimise(p)
    dg_min = p.scorer.score(p.start_nm[: p.n_solute]).dg
    inputs = md.EnsembleInputs.of(p, dg_min, round(time.perf_counter() - t0, 3))
    from openmm import unit

    box = (
        np.zeros((0, 3))
        if p.start_box is None
        else np.array([[v.x, v.y, v.z] for v in p.start_box.value_in_unit(unit.nanometer)])
    )
    with open(folder / START, "wb") as fh:  # before the JSON: the JSON is the mark that both are complete
        np.savez(fh, start_nm=p.start_nm, start_box_nm=box, positions_nm=p.positions_nm)
    write_json(
        folder / PREPARED,
        {
            "fingerprint": key,
            "inputs": _inputs_json(inputs),
            "n_solute": p.n_solute,
            "heavy_ligand": p.heavy_ligand.tolist(),
            "hinge": p.hinge,
        },
    )


def replica_step(folder: Path, index: int) -> None:
    """Run replica ``index`` from the prepared complex in ``folder``; the same numbers as in one process."""
    import numpy as np

    from . import md

    meta = json.loads((folder / PREPARED).read_text())
    p = load_prepared(folder)
    if not 0 <= index < p.settings.replicas:
        raise StageInputError(
            f"replica {index}: the settings in {folder / PREPARED} have {p.settings.replicas} replicas"
        )
    result, frames = md.run_replica(p, index)
    if p.settings.mmpbsa_py != "none":
        np.save(folder / f"replica_{index}.frames.npy", np.asarray(frames, dtype=np.float32))
    write_json(replica_file(folder, index), {"fingerprint": meta["fingerprint"], "replica": asdict(result)})


def load_prepared(folder: Path, **overrides: Any) -> Any:
    """The prepared complex of ``folder`` (``prepare``'s files) as an ``md.Prepared``, its system rebuilt from the
    prmtop files in ``folder/amber`` (so a folder can be moved, e.g. to a GPU machine without AmberTools);
    ``overrides`` replace MD settings (e.g. ``platform``, ``threads``: a benchmark of the same system)."""
    import dataclasses

    import numpy as np
    import openmm
    from openmm import app, unit

    from . import md, mmgbsa

    meta = json.loads((folder / PREPARED).read_text())
    inputs = _inputs_from_json(meta["inputs"])
    s = dataclasses.replace(inputs.settings, **overrides)
    build = dataclasses.replace(inputs.build, folder=folder / "amber")
    with np.load(folder / START) as z:
        start_nm, box_nm, positions_nm = z["start_nm"], z["start_box_nm"], z["positions_nm"]
    complex_top = app.AmberPrmtopFile(str(build.prmtop("complex"))).topology
    system, _ = md.md_system(build, s, complex_top, positions_nm)
    platform, props = md._platform(s, scoring=True)
    start_box = tuple(openmm.Vec3(*row) * unit.nanometer for row in box_nm) if len(box_nm) else None
    return md.Prepared(
        inputs.name,
        inputs.receptor,
        s,
        None,
        build,
        system,
        positions_nm,
        start_box,  # type: ignore[arg-type]
        meta["n_solute"],
        np.array(meta["heavy_ligand"], dtype=bool),
        mmgbsa.Scorer(build, platform, props),
        inputs.n_receptor_residues,
        inputs.notes,
        inputs.seconds,
        start_nm=start_nm,
        start_box=start_box,
        hinge=meta.get("hinge"),
    )


def combine_step(folder: Path) -> dict[str, Any]:
    """The ensemble's result from the prepared complex and every replica; written to ``folder/result.json``."""
    import numpy as np

    from . import md

    meta = json.loads((folder / PREPARED).read_text())
    inputs = _inputs_from_json(meta["inputs"])
    replicas, frames = [], []
    for i in range(inputs.settings.replicas):
        doc = json.loads(replica_file(folder, i).read_text())
        if doc.get("fingerprint") != meta["fingerprint"]:
            raise StageInputError(f"{replica_file(folder, i)}: made from other inputs than {folder / PREPARED}")
        replicas.append(md.ReplicaResult(**doc["replica"]))
        if inputs.settings.mmpbsa_py != "none":
            frames += list(np.load(folder / f"replica_{i}.frames.npy").astype(np.float64))
    result = md.ensemble_result(inputs, replicas, frames).to_json()
    write_json(folder / RESULT, {**result, "fingerprint": meta["fingerprint"]})
    return result


def read_settings(folder: Path) -> Any:
    from .md import MDSettings

    path = folder / "settings.json"
    try:
        settings = MDSettings(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise StageInputError(f"{path}: not a usable MD settings file ({exc})") from exc
    settings.check()
    return settings


def _inputs_json(e: Any) -> dict[str, Any]:
    doc = asdict(e)
    doc["build"]["folder"] = str(e.build.folder)
    return doc


def _inputs_from_json(doc: dict[str, Any]) -> Any:
    from . import md, tleap

    doc = dict(doc)
    doc["settings"] = md.MDSettings(**doc["settings"])
    doc["build"] = tleap.AmberBuild(**{**doc["build"], "folder": Path(doc["build"]["folder"])})
    return md.EnsembleInputs(**{f.name: doc[f.name] for f in fields(md.EnsembleInputs)})


# --------------------------------------------------------------------------- CLI


def command(
    step: str, folder: Path, receptor_pdb: Path | None = None, param_cache: Path | None = None, index: int | None = None
) -> list[str]:
    """The command line of an executable step (``prepare`` or ``replica``) on ``folder``."""
    argv = [sys.executable, "-m", "impeccable.stages.md_cli", step, "--folder", str(folder)]
    if step == "prepare":
        argv += ["--receptor", str(receptor_pdb)]
        if param_cache is not None:
            argv += ["--param-cache", str(param_cache)]
    elif step == "replica":
        argv += ["--index", str(index)]
    else:
        raise ValueError(f"step: 'prepare' or 'replica', got {step!r}")
    return argv


def main(step: str, argv: list[str]) -> int:
    """``python -m impeccable.stages.md_cli prepare|replica --folder F ...``; exit 2 for bad input, 1 for a failed run."""
    from . import md

    p = argparse.ArgumentParser(prog=f"python -m impeccable.stages.md_cli {step}", description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", required=True, type=Path, help="the compound's folder: pose.sdf and settings.json")
    if step == "prepare":
        p.add_argument("--receptor", required=True, type=Path, help="protonated protein PDB")
        p.add_argument("--param-cache", type=Path, default=None, help="cached GAFF2/AM1-BCC parameters")
    else:
        p.add_argument("--index", required=True, type=int, help="which replica (0-based)")
    a = p.parse_args(argv)
    try:
        if step == "prepare":
            prepare_step(a.folder, a.receptor, a.param_cache)
        else:
            replica_step(a.folder, a.index)
    except (*md.CLI_FAILURES, FileNotFoundError) as exc:  # a missing step file is unusable input
        return md.report_failure(exc, a.folder, f"MD {step} in {a.folder}")
    return 0
