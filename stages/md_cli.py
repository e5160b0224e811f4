"""``python -m impeccable.stages.md_cli``: the MD stage from the command line, one compound (refine and
score), ``validate`` (against AmberTools) or one step of a campaign's MD (``prepare``, ``replica``).

Kept apart from :mod:`.md` so that the steps and the validation, which import :mod:`.md`, are not
imported by it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..fileio import write_json
from . import device
from .md import CLI_FAILURES, LIGAND_FORCEFIELDS, MMPBSA_METHODS, SOLVENTS, MDSettings, refine_and_score, report_failure


def main(argv: list[str] | None = None) -> int:
    """``python -m impeccable.stages.md_cli --receptor R.pdb --ligand pose.sdf --out result.json``; ``... validate``;
    ``... prepare`` / ``... replica`` (the steps of a campaign's MD, see ``md_tasks``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["validate"]:
        from . import md_validate

        return md_validate.main(argv[1:])
    if argv[:1] in (["prepare"], ["replica"]):  # one step of an ensemble run as separate tasks
        from . import md_tasks

        return md_tasks.main(argv[0], argv[1:])
    p = argparse.ArgumentParser(prog="python -m impeccable.stages.md_cli", description=__doc__.split("\n\n")[0])
    p.add_argument("--receptor", required=True, type=Path, help="protonated protein PDB")
    p.add_argument("--ligand", required=True, type=Path, help="pose SDF: hydrogens, 3D, title = compound id")
    p.add_argument("--out", required=True, type=Path, help="result JSON (written atomically)")
    p.add_argument("--param-cache", type=Path, help="folder of GAFF2/AM1-BCC parameters shared by a run's compounds")
    p.add_argument("--workdir", type=Path, default=None, help="tleap files and frames (default: amber/ beside --out)")
    d = MDSettings()
    p.add_argument("--replicas", type=int, default=d.replicas)
    p.add_argument("--length-ps", type=float, default=d.length_ps, help="production per replica")
    p.add_argument("--equilibration-ps", type=float, default=d.equilibration_ps)
    p.add_argument("--frame-interval-ps", type=float, default=d.frame_interval_ps)
    p.add_argument("--solvent", choices=SOLVENTS, default=d.solvent)
    p.add_argument("--ligand-forcefield", choices=LIGAND_FORCEFIELDS, default=d.ligand_forcefield)
    p.add_argument(
        "--mmpbsa-py",
        choices=MMPBSA_METHODS,
        default=d.mmpbsa_py,
        help="also score the frames with AmberTools' MMPBSA.py",
    )
    p.add_argument("--pocket-radius", type=float, default=d.pocket_radius_angstrom, help="angstrom")
    p.add_argument("--full-receptor", action="store_true", help="no trimming, no restraints")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--platform",
        default=d.platform,
        choices=device.PLATFORMS,
        help="OpenMM platform (auto: CUDA, HIP or OpenCL where a GPU is visible)",
    )
    p.add_argument("--precision", default=d.precision, choices=device.PRECISIONS, help="on a GPU platform")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    settings = MDSettings.taking(a, pocket_radius_angstrom=None if a.full_receptor else a.pocket_radius)
    workdir = a.workdir or a.out.parent / "amber"
    try:
        result = refine_and_score(a.receptor, a.ligand, settings, a.param_cache, workdir)
    except CLI_FAILURES as exc:
        return report_failure(exc, a.ligand, f"MD of {a.ligand}")
    write_json(a.out, result.to_json())
    from .intervals import describe_replicas

    print(
        f"MM/GBSA {describe_replicas(result.replica_means_kcal_mol, 'kcal/mol')}, ligand RMSD "
        f"{result.ligand_rmsd_mean_angstrom} A ({settings.replicas} replicas, {result.n_frames} frames, {settings.solvent} solvent, "
        f"{result.timings_s['total']:.1f} s) -> {a.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
