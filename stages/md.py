"""MD refinement and MM/GBSA rescoring of a docked pose: an ESMACS-style ensemble of independent replicas.

``refine_and_score(receptor_pdb, pose_sdf, MDSettings())``:

1. Ligand: GAFF2 atom types and AM1-BCC charges from antechamber/parmchk2
   (``gaff2``), cached per compound. Protein: ff14SB. Both applied by tleap
   (``tleap``), which also solvates the complex for explicit solvent. OpenMM
   reads the resulting prmtop files; sander and MMPBSA.py read the same files.
2. Receptor: by default the pocket (residues within ``pocket_radius_angstrom``
   of the ligand, ACE/NME-capped), far heavy atoms restrained (``pocket``).
3. Solvent: ``implicit`` (OBC2 GB, igb=5, mbondi2 radii, ACE non-polar term)
   or ``explicit`` (TIP3P truncated octahedron, Na+/Cl- to neutral + 0.15 M,
   PME, Monte Carlo barostat at 1 bar: NPT equilibration and production).
4. One minimisation of the docked pose, then ``replicas`` independent replicas
   (ESMACS): each its own random velocities and Langevin noise (seeded), its
   own equilibration, frames taken from production only.
5. Every frame scored by single-trajectory MM/GBSA (``mmgbsa``), always in
   implicit solvent (waters and ions removed, as MMPBSA.py does), optionally
   also by AmberTools' MMPBSA.py on the same frames.

What the uncertainty means: the replica means are the independent samples.
The result reports them, their mean, the standard error of the mean and a
Student-t 95% interval of the mean (``intervals.t_interval``), only from 3
replicas on: with 2 the values themselves are the honest report (a bootstrap
over 2 values returns them). Both describe the sampling spread of this
protocol's replicas around one docked pose: not force-field error, not pose
uncertainty, not the error of an absolute binding free energy (there is no
entropy term; values rank compounds on one target). ESMACS uses 25 replicas.
Beside the energy each replica reports how far the ligand moved (heavy-atom
RMSD per frame) and, where the receptor names a hinge residue, how often the
hinge H-bond is made (``md_analysis``).

Reproducibility: each replica gets a fresh OpenMM context whose integrator
and barostat seeds are set before it is created (seeds derived from ``seed``
and the replica index, never 0; a campaign derives ``seed`` from its own seed
and the compound id, :func:`compound_seed`, so no two compounds share noise; which OpenMM takes as "pick one at random").
On the CPU platform with a fixed thread count, the same inputs and seed give
bitwise-identical energies; across thread counts or platforms the
trajectories diverge (chaotically, from round-off) and only the statistics agree.
On a GPU platform (``platform="auto"`` for a task holding a GPU, mixed precision by
default) a replica is not bitwise reproducible run to run either (force sums are
accumulated in whatever order the GPU's threads finish), and each replica records
the platform it ran on; frames are scored in double precision.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import openmm
from openmm import app, unit
from rdkit import Chem

from . import amber, device, gaff2, mmgbsa, pocket, tleap
from .errors import StageInputError

__all__ = [
    "MDSettings",
    "ReplicaResult",
    "MDResult",
    "MDInstabilityError",
    "Prepared",
    "prepare",
    "run_replica",
    "refine_and_score",
    "run_ensemble",
    "EnsembleInputs",
    "ensemble_result",
    "md_system",
    "minimise",
    "time_steps",
    "read_ligand",
    "bootstrap_ci95",
    "replica_seed",
    "compound_seed",
]

SOLVENTS = ("implicit", "explicit")
LIGAND_FORCEFIELDS = ("gaff2",)
MMPBSA_METHODS = ("none", "gb", "pb", "gb+pb")
_KCAL = mmgbsa.KJ_PER_KCAL


class MDInstabilityError(RuntimeError):
    """The simulation blew up: a non-finite energy or an atom far from where it started."""


@dataclass(frozen=True)
class MDSettings:
    """How much MD to run and on what; the defaults are a tiny but real implicit-solvent ensemble."""

    replicas: int = 3
    length_ps: float = 4.0  # production per replica
    equilibration_ps: float = 1.0  # per replica, not scored (NPT in explicit solvent)
    frame_interval_ps: float = 0.5
    timestep_fs: float = 2.0
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    solvent: str = "implicit"  # "implicit" (OBC2) or "explicit" (TIP3P, PME, NPT)
    ligand_forcefield: str = "gaff2"  # GAFF2 + AM1-BCC (MMFF94 was removed: see README)
    padding_angstrom: float = 10.0  # explicit: solute to box edge
    ion_molar: float = 0.15  # explicit: NaCl on top of neutralising ions
    pme_cutoff_angstrom: float = 10.0  # explicit: real-space cutoff
    pressure_bar: float = 1.0  # explicit
    pocket_radius_angstrom: float | None = 10.0  # None: the whole receptor, unrestrained
    flexible_radius_angstrom: float = 7.0  # residues farther than this are restrained
    restraint_kcal_mol_a2: float = 5.0
    minimise_max_iterations: int = 300  # a docked pose needs relaxing, not a converged minimum
    max_displacement_angstrom: float = 20.0
    seed: int = 2013
    bootstrap_samples: int = 10000
    mmpbsa_py: str = "none"  # also run MMPBSA.py on the frames: "gb", "pb" or "gb+pb"
    platform: str = "CPU"  # "auto": CUDA, HIP or OpenCL when the task holds a GPU, else CPU (stages/device.py)
    threads: int | None = None
    precision: str = "mixed"  # on a GPU platform (MM/GBSA scoring always uses double)

    @classmethod
    def taking(cls, options: object, **overrides: Any) -> MDSettings:
        """Settings from an object whose attributes share the fields' names (a campaign's ``[md]`` section,
        parsed command-line options): the fields it has, then ``overrides``; the rest keep their defaults."""
        given = {f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)}
        return cls(**{**given, **overrides})

    def check(self) -> None:
        """Raise StageInputError naming the first unusable setting."""
        positive = (
            "length_ps",
            "frame_interval_ps",
            "timestep_fs",
            "temperature_k",
            "max_displacement_angstrom",
            "padding_angstrom",
            "pme_cutoff_angstrom",
            "pressure_bar",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise StageInputError(f"MDSettings.{name}: must be > 0, got {getattr(self, name)!r}")
        choices = {"solvent": SOLVENTS, "ligand_forcefield": LIGAND_FORCEFIELDS, "mmpbsa_py": MMPBSA_METHODS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise StageInputError(f"MDSettings.{name}: {getattr(self, name)!r} is not one of {allowed}")
        if self.replicas < 1:
            raise StageInputError(f"MDSettings.replicas: must be >= 1, got {self.replicas!r}")
        if self.equilibration_ps < 0 or self.ion_molar < 0:
            raise StageInputError("MDSettings.equilibration_ps and ion_molar: must be >= 0")
        if self.frame_interval_ps > self.length_ps:
            raise StageInputError("MDSettings.frame_interval_ps: longer than length_ps, no frame would be scored")
        if self.pocket_radius_angstrom is not None and self.pocket_radius_angstrom <= 0:
            raise StageInputError("MDSettings.pocket_radius_angstrom: must be > 0 or None (whole receptor)")
        if self.threads is not None and self.threads < 1:
            raise StageInputError(f"MDSettings.threads: must be >= 1, got {self.threads!r}")
        choices = {"platform": device.PLATFORMS, "precision": device.PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise StageInputError(f"MDSettings.{name}: {getattr(self, name)!r} is not one of {allowed}")


@dataclass
class ReplicaResult:
    seed: int
    binding_energy_kcal_mol: float  # mean over this replica's production frames
    frames_kcal_mol: list[float]
    frames_nonpolar_kcal_mol: list[float]  # the ACE part of each frame (MMPBSA.py's differs by model)
    components_kcal_mol: dict[str, float]  # means of vdw, elec, gb, sa over the frames
    max_displacement_angstrom: float
    ligand_rmsd_angstrom: float  # last frame vs minimised pose, heavy atoms, no fitting
    md_seconds: float
    platform: str = "CPU"  # the OpenMM platform the replica ran on, e.g. "CUDA (mixed)"
    platform_note: str = ""  # why it is not the one asked for
    ligand_rmsd_mean_angstrom: float | None = None  # over the production frames (md_analysis)
    ligand_rmsd_max_angstrom: float | None = None
    hinge_hbond_occupancy: float | None = None  # fraction of frames; None without a hinge residue
    hinge_residue: str | None = None


@dataclass
class MDResult:
    """Ensemble MM/GBSA estimate of one pose; energies in kcal/mol."""

    binding_energy_kcal_mol: float  # mean of the replica means
    stderr_kcal_mol: float | None  # standard error of the replica means; None for one replica
    ci95_kcal_mol: list[float] | None  # Student-t 95% interval of the mean; None under 3 replicas
    replica_means_kcal_mol: list[float]
    per_replica: list[ReplicaResult]
    n_frames: int
    components_kcal_mol: dict[str, float]  # ensemble means: vdw, elec, gb (polar), sa (non-polar)
    minimised_binding_energy_kcal_mol: float
    solvent: str
    forcefield: dict[str, str]
    ligand_parameters: dict
    n_atoms: int  # simulated, water included
    n_receptor_residues: int
    ligand_net_charge_e: int
    receptor: str
    ligand: str
    settings: MDSettings
    mmpbsa_py: dict | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ligand_rmsd_mean_angstrom: float | None = None  # over every replica's production frames
    hinge_hbond_occupancy: float | None = None  # fraction of every replica's frames; None without a hinge
    hinge_residue: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Prepared:
    """Everything built once per pose: topologies, the MD system, scorer, starting coordinates."""

    name: str
    receptor: str
    settings: MDSettings
    ligand: gaff2.LigandParameters
    build: tleap.AmberBuild
    system: openmm.System
    positions_nm: np.ndarray
    box: tuple | None
    n_solute: int
    heavy_ligand: np.ndarray  # mask over ligand atoms
    scorer: mmgbsa.Scorer
    n_receptor_residues: int
    notes: list[str]
    seconds: dict[str, float]
    start_nm: np.ndarray | None = None  # set by ``minimise``: where every replica starts
    start_box: tuple | None = None
    hinge: dict | None = None  # md_analysis.hinge_spec: atom indices of the hinge H-bond, if the site names one


def prepare(
    receptor_pdb: str | Path,
    ligand: str | Path | Chem.Mol,
    settings: MDSettings = MDSettings(),
    param_cache: Path | None = None,
    workdir: Path | None = None,
) -> Prepared:
    """Ligand parameters (cached), tleap topologies in ``workdir``, the OpenMM MD system and scorer."""
    settings.check()
    t0 = time.perf_counter()
    notes: list[str] = []
    if isinstance(ligand, Chem.Mol):
        mol, name = ligand, (ligand.GetProp("_Name") if ligand.HasProp("_Name") else "") or "ligand"
    else:
        mol = read_ligand(ligand)
        name = (mol.GetProp("_Name") if mol.HasProp("_Name") else "").strip() or Path(ligand).stem
    mol = _with_hydrogens(mol, name, notes)
    lig_nm = mol.GetConformer().GetPositions() / 10.0
    protein = pocket.read_protein(receptor_pdb, notes)
    pocket.check_contact(
        protein, lig_nm, mol, name if isinstance(ligand, Chem.Mol) else f"{name} ({ligand})", receptor_pdb
    )
    if settings.pocket_radius_angstrom is None:
        rec_top, rec_nm = protein.topology, protein.positions_nm
    else:
        rec_top, rec_nm = pocket.trim(protein, lig_nm, settings.pocket_radius_angstrom)
    params = gaff2.parameterise(mol, name, param_cache)
    t_params = time.perf_counter()
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="impeccable-md-"))
    build = tleap.build(
        rec_top, rec_nm, params, mol, workdir, settings.solvent, settings.padding_angstrom, settings.ion_molar
    )
    complex_top = app.AmberPrmtopFile(str(build.prmtop("complex"))).topology
    part = "solvated" if build.solvated else "complex"
    inpcrd = app.AmberInpcrdFile(str(build.inpcrd(part)))
    positions = inpcrd.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    system, held = md_system(build, settings, complex_top, positions)
    if settings.pocket_radius_angstrom is not None:
        notes.append(
            f"receptor trimmed to {rec_top.getNumResidues()} residues within {settings.pocket_radius_angstrom} A "
            f"of the ligand (ACE/NME caps), {held} atoms restrained beyond {settings.flexible_radius_angstrom} A"
        )
    if build.solvated:
        notes.append(
            f"explicit solvent: {build.n_waters} TIP3P waters, {build.n_cations} Na+, "
            f"{build.n_anions} Cl- in a truncated octahedron ({settings.padding_angstrom} A padding)"
        )
    platform, props = _platform(settings, scoring=True)
    scorer = mmgbsa.Scorer(build, platform, props)
    box = inpcrd.boxVectors if build.solvated else None
    from .md_analysis import hinge_spec

    return Prepared(
        name,
        str(receptor_pdb),
        settings,
        params,
        build,
        system,
        positions,
        box,
        build.n_receptor_atoms + build.n_ligand_atoms,
        heavy_ligand_atoms(build, complex_top),
        scorer,
        rec_top.getNumResidues(),
        notes,
        {"ligand_parameters": round(t_params - t0, 3), "build": round(time.perf_counter() - t_params, 3)},
        hinge=hinge_spec(receptor_pdb, rec_top, complex_top, mol, build.n_receptor_atoms),
    )


def md_system(
    build: tleap.AmberBuild, settings: MDSettings, complex_top: app.Topology, positions_nm: np.ndarray
) -> tuple[openmm.System, int]:
    """The simulated system of a built complex (pocket restraints held at ``positions_nm``, tleap's coordinates),
    and how many atoms are restrained. Deterministic: a replica task rebuilds the same system from the same files."""
    n_solute = build.n_receptor_atoms + build.n_ligand_atoms
    system = _explicit_system(build, settings) if build.solvated else mmgbsa.implicit_system(build.prmtop("complex"))
    if settings.pocket_radius_angstrom is None:
        return system, 0
    held = pocket.restrained_atoms(
        complex_top,
        positions_nm[:n_solute],
        positions_nm[build.n_receptor_atoms : n_solute],
        settings.flexible_radius_angstrom,
        build.n_receptor_atoms,
    )
    _add_restraints(system, held, positions_nm, settings.restraint_kcal_mol_a2, periodic=build.solvated)
    return system, len(held)


def heavy_ligand_atoms(build: tleap.AmberBuild, complex_top: app.Topology) -> np.ndarray:
    """Mask over the ligand's atoms: True for heavy atoms (the ligand RMSD's atoms)."""
    return np.array(
        [a.element is not None and a.element.symbol != "H" for a in list(complex_top.atoms())[build.n_receptor_atoms :]]
    )


def refine_and_score(
    receptor_pdb: str | Path,
    ligand: str | Path | Chem.Mol,
    settings: MDSettings = MDSettings(),
    param_cache: Path | None = None,
    workdir: Path | None = None,
) -> MDResult:
    """Minimise, run ``settings.replicas`` independent replicas, return the MM/GBSA ensemble estimate.

    ``ligand`` is an SDF path (the first molecule; its title names the
    compound in errors) or an RDKit molecule with explicit hydrogens and a 3D
    conformer in the receptor's frame. Raises StageInputError (a subclass,
    gaff2.LigandParameterError, when the ligand cannot be parameterised) and
    MDInstabilityError if a replica blows up.
    """
    return run_ensemble(prepare(receptor_pdb, ligand, settings, param_cache, workdir))


def run_ensemble(p: Prepared) -> MDResult:
    """The ESMACS-style part of ``refine_and_score`` on a prepared complex, in this process.

    A campaign runs the same steps as separate tasks (``md_tasks``: prepare, one task per replica, combine);
    both end in :func:`ensemble_result`.
    """
    t0 = time.perf_counter()
    minimise(p)
    dg_min = p.scorer.score(p.start_nm[: p.n_solute]).dg
    t_min = time.perf_counter()
    replicas, frames = [], []
    for r in range(p.settings.replicas):
        result, xyz = run_replica(p, r)
        replicas.append(result)
        frames += xyz
    return ensemble_result(EnsembleInputs.of(p, dg_min, round(t_min - t0, 3)), replicas, frames)


@dataclass
class EnsembleInputs:
    """What the ensemble's result says about the prepared complex: plain data, so a combine task can read it
    from the prepare task's JSON instead of holding the OpenMM objects."""

    name: str
    receptor: str
    settings: MDSettings
    ligand_parameters: dict
    build: tleap.AmberBuild
    n_atoms: int
    n_receptor_residues: int
    ligand_net_charge_e: int
    minimised_binding_energy_kcal_mol: float
    notes: list[str]
    seconds: dict[str, float]  # ligand_parameters, build, minimise

    @classmethod
    def of(cls, p: Prepared, dg_min: float, minimise_s: float) -> EnsembleInputs:
        lig = p.ligand
        return cls(
            p.name,
            p.receptor,
            p.settings,
            {
                "cache_key": lig.key,
                "from_cache": lig.from_cache,
                "smiles": lig.smiles,
                "am1bcc_cpu_seconds": round(lig.am1bcc_cpu_seconds, 2),
                "am1bcc_wall_seconds": round(lig.am1bcc_wall_seconds, 2),
                "folder": str(lig.folder),
            },
            p.build,
            p.system.getNumParticles(),
            p.n_receptor_residues,
            lig.net_charge,
            dg_min,
            list(p.notes),
            {**p.seconds, "minimise": minimise_s},
        )


def ensemble_result(e: EnsembleInputs, replicas: list[ReplicaResult], frames: list[np.ndarray] | None) -> MDResult:
    """Replica means, their mean, standard error and bootstrap interval; MMPBSA.py on ``frames`` if asked."""
    s = e.settings
    t0 = time.perf_counter()
    amber_check = _mmpbsa_py(e, frames or [], replicas) if s.mmpbsa_py != "none" else None
    from .intervals import MIN_REPLICAS_FOR_INTERVAL, t_interval

    means = [r.binding_energy_kcal_mol for r in replicas]
    stderr = float(np.std(means, ddof=1) / math.sqrt(len(means))) if len(means) > 1 else None
    ci = t_interval(means)
    notes = list(e.notes)
    if ci is None:
        notes.append(f"{len(means)} replica(s): no interval below {MIN_REPLICAS_FOR_INTERVAL}; report the values")
    elif len(means) < 5:
        notes.append(f"{len(means)} replicas: the t interval is wide by design (ESMACS uses 25)")
    frames = [len(r.frames_kcal_mol) for r in replicas]
    rmsd = [r.ligand_rmsd_mean_angstrom for r in replicas]
    hinge = [r.hinge_hbond_occupancy for r in replicas]
    md_s = sum(r.md_seconds for r in replicas)
    ps_total = s.replicas * (s.length_ps + s.equilibration_ps)
    components = {k: float(np.mean([r.components_kcal_mol[k] for r in replicas])) for k in ("vdw", "elec", "gb", "sa")}
    mmpbsa_s = round(time.perf_counter() - t0, 3)
    return MDResult(
        binding_energy_kcal_mol=float(np.mean(means)),
        stderr_kcal_mol=stderr,
        ci95_kcal_mol=None if ci is None else [round(ci[1], 4), round(ci[2], 4)],
        replica_means_kcal_mol=[round(m, 4) for m in means],
        per_replica=replicas,
        n_frames=sum(len(r.frames_kcal_mol) for r in replicas),
        components_kcal_mol=components,
        minimised_binding_energy_kcal_mol=e.minimised_binding_energy_kcal_mol,
        solvent=s.solvent,
        forcefield=forcefield_description(s.solvent),
        ligand_parameters=e.ligand_parameters,
        n_atoms=e.n_atoms,
        n_receptor_residues=e.n_receptor_residues,
        ligand_net_charge_e=e.ligand_net_charge_e,
        receptor=e.receptor,
        ligand=e.name,
        settings=s,
        mmpbsa_py=amber_check,
        timings_s={
            **e.seconds,
            "md_and_scoring": round(md_s, 3),
            "mmpbsa_py": mmpbsa_s,
            "total": round(sum(e.seconds.values()) + md_s + mmpbsa_s, 3),
            "ns_per_day": round(ps_total / 1000.0 / (md_s / 86400.0), 3) if md_s > 0 else 0.0,
        },
        notes=notes,
        ligand_rmsd_mean_angstrom=None if None in rmsd else round(float(np.average(rmsd, weights=frames)), 3),
        hinge_hbond_occupancy=None if None in hinge else round(float(np.average(hinge, weights=frames)), 3),
        hinge_residue=replicas[0].hinge_residue if replicas else None,
    )


def minimise(p: Prepared) -> None:
    """Relax the built complex (and its water) once; every replica starts from here (``p.start_nm``)."""
    ctx = _context(p, seed=1)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, p.settings.minimise_max_iterations)
    state = ctx.getState(getPositions=True, getEnergy=True)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not math.isfinite(e):
        raise MDInstabilityError(f"{p.name}: minimisation ended with a non-finite energy (overlapping atoms?)")
    p.start_box = state.getPeriodicBoxVectors() if p.box is not None else None
    p.start_nm = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def run_replica(p: Prepared, index: int) -> tuple[ReplicaResult, list]:
    """One independent replica: seeded velocities and noise, equilibration, scored production frames.

    Returns the result and the production frames (solute coordinates, nm, float32 as written to DCD).
    """
    from .md_analysis import Observables

    s, seed, start_nm = p.settings, replica_seed(p.settings.seed, index), p.start_nm
    t0 = time.perf_counter()
    energies, components, xyz, max_disp = [], [], [], 0.0
    n_rec = p.build.n_receptor_atoms
    observed = Observables(start_nm, n_rec, p.n_solute, p.heavy_ligand, p.hinge)
    for pos in _trajectory(p, seed):
        solute = pos[: p.n_solute].astype(np.float32).astype(np.float64)  # the precision MMPBSA.py will read
        disp = float(np.max(np.linalg.norm(solute - start_nm[: p.n_solute], axis=1))) * 10.0
        if disp > s.max_displacement_angstrom:
            raise MDInstabilityError(
                f"{p.name} replica {index}: an atom moved {disp:.1f} A from its minimised position "
                f"(limit {s.max_displacement_angstrom} A); try a shorter time step"
            )
        max_disp = max(max_disp, disp)
        e = p.scorer.score(solute)
        energies.append(e.dg)
        components.append((e.vdw, e.elec, e.gb, e.sa))
        xyz.append(solute)
        observed.add(solute)
    d = (xyz[-1][n_rec:] - start_nm[n_rec : p.n_solute])[p.heavy_ligand] * 10.0
    comp = np.mean(components, axis=0)
    return ReplicaResult(
        seed=seed,
        binding_energy_kcal_mol=float(np.mean(energies)),
        frames_kcal_mol=[round(x, 4) for x in energies],
        frames_nonpolar_kcal_mol=[round(c[3], 4) for c in components],
        components_kcal_mol={k: round(float(v), 4) for k, v in zip(("vdw", "elec", "gb", "sa"), comp)},
        max_displacement_angstrom=round(max_disp, 3),
        ligand_rmsd_angstrom=round(float(np.sqrt(np.mean(np.sum(d * d, axis=1)))), 3),
        md_seconds=round(time.perf_counter() - t0, 3),
        platform=_choice(s).label,
        platform_note=_choice(s).note,
        **observed.summary(),
    ), xyz


def time_steps(p: Prepared, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of ``steps`` MD steps from the minimised start (after 10 warm-up steps), no scoring.

    CPU time counts every thread of this process: on a shared machine it says
    what the steps cost when wall time also counts other people's work.
    """
    ctx = _context(p, replica_seed(p.settings.seed, 0), start=True)
    ctx.setVelocitiesToTemperature(p.settings.temperature_k * unit.kelvin, 1)
    ctx.getIntegrator().step(10)
    t0, c0 = time.perf_counter(), time.process_time()
    ctx.getIntegrator().step(steps)
    ctx.getState(getEnergy=True)  # waits for the steps to finish on asynchronous platforms
    return time.perf_counter() - t0, time.process_time() - c0


def replica_seed(seed: int, replica: int) -> int:
    """A positive 31-bit seed per replica: OpenMM takes 0 as 'choose at random', so 0 never comes out."""
    state = np.random.SeedSequence([abs(seed), replica]).generate_state(1)[0]  # well mixed, deterministic
    return 1 + int(state) % (2**31 - 2)


def compound_seed(campaign_seed: int, compound_id: str) -> int:
    """The MD seed of one compound in a campaign: a positive 31-bit number from both, so replicas of
    different compounds never share their random velocities and noise, and a rerun reproduces them."""
    import hashlib

    digest = hashlib.sha256(f"{campaign_seed}\0{compound_id}".encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % (2**31 - 2)


def bootstrap_ci95(values: list[float], seed: int, samples: int = 10000) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of the mean of ``values`` (seeded: the same inputs, the same interval)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(samples, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def forcefield_description(solvent: str) -> dict[str, str]:
    """What produced the numbers, for the result file and the report."""
    desc = {
        "protein": "ff14SB (tleap)",
        "ligand": f"GAFF2 + AM1-BCC (antechamber, parmchk2; {amber.version()})",
        "scoring": "single-trajectory MM/GBSA: OBC2 (igb=5), mbondi2 radii, eps 1/78.5, no salt, "
        "ACE non-polar 0.0054 kcal/mol/A^2; no entropy",
        "engine": f"OpenMM {openmm.__version__}",
    }
    if solvent == "explicit":
        desc["solvent"] = "TIP3P, Na+/Cl- (Joung-Cheatham), PME, NPT (Monte Carlo barostat)"
    else:
        desc["solvent"] = "OBC2 implicit solvent"
    return desc


def read_ligand(path: str | Path, index: int = 0) -> Chem.Mol:
    """Molecule ``index`` of an SDF file, hydrogens kept; StageInputError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise StageInputError(f"ligand {p}: no such file")
    try:
        supplier = Chem.SDMolSupplier(str(p), removeHs=False, sanitize=True)
        mols = [m for _, m in zip(range(index + 1), supplier)]
    except OSError as exc:
        raise StageInputError(f"ligand {p}: cannot read as SDF ({exc})") from exc
    if len(mols) <= index or mols[index] is None:
        raise StageInputError(f"ligand {p}: molecule {index} is missing or not a valid SDF record")
    mol = mols[index]
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        raise StageInputError(f"ligand {p}: needs 3D coordinates (a docked pose), found none")
    return mol


# --------------------------------------------------------------------------- MD internals


def _with_hydrogens(mol: Chem.Mol, name: str, notes: list[str]) -> Chem.Mol:
    if any(a.GetTotalNumHs() for a in mol.GetAtoms() if a.GetAtomicNum() > 1):
        n = mol.GetNumAtoms()
        mol = Chem.AddHs(mol, addCoords=True)
        notes.append(f"{name}: added {mol.GetNumAtoms() - n} missing hydrogens with RDKit (neutral groups assumed)")
    return mol


def _explicit_system(build: tleap.AmberBuild, s: MDSettings) -> openmm.System:
    """PME system of the solvated complex with a Monte Carlo barostat (seeded per replica in ``_context``)."""
    system = app.AmberPrmtopFile(str(build.prmtop("solvated"))).createSystem(
        nonbondedMethod=app.PME,
        nonbondedCutoff=s.pme_cutoff_angstrom / 10.0 * unit.nanometer,
        constraints=app.HBonds,
        rigidWater=True,
        ewaldErrorTolerance=5e-4,
    )
    system.addForce(openmm.MonteCarloBarostat(s.pressure_bar * unit.bar, s.temperature_k * unit.kelvin, 25))
    return system


def _add_restraints(
    system: openmm.System, atoms: list[int], pos_nm: np.ndarray, k_kcal_mol_a2: float, periodic: bool
) -> None:
    d2 = "periodicdistance(x,y,z,x0,y0,z0)^2" if periodic else "(x-x0)^2+(y-y0)^2+(z-z0)^2"
    force = openmm.CustomExternalForce(f"0.5*k_restraint*({d2})")
    force.addGlobalParameter("k_restraint", k_kcal_mol_a2 * _KCAL * 100.0)  # kJ/mol/nm^2
    for p in ("x0", "y0", "z0"):
        force.addPerParticleParameter(p)
    for i in atoms:
        force.addParticle(i, list(pos_nm[i]))
    force.setForceGroup(mmgbsa.GROUP["restraint"])
    system.addForce(force)


def _choice(s: MDSettings) -> device.PlatformChoice:
    return device.openmm_platform(s.platform, s.precision, s.threads)


def _platform(s: MDSettings, scoring: bool = False) -> tuple[openmm.Platform, dict[str, str]]:
    """The platform and properties of this task's contexts (MM/GBSA scoring: double precision on a GPU)."""
    choice = _choice(s)
    return openmm.Platform.getPlatformByName(choice.name), choice.scoring_properties() if scoring else choice.properties


def _context(p: Prepared, seed: int, start: bool = False) -> openmm.Context:
    """A fresh Langevin context whose integrator and barostat are seeded before it exists.

    Seeds are read when a context is created; ``setRandomNumberSeed`` followed by
    ``reinitialize(preserveState=True)`` restores the old random state from a
    checkpoint, which is why the previous version was not reproducible.
    """
    s = p.settings
    integrator = openmm.LangevinMiddleIntegrator(
        s.temperature_k * unit.kelvin, s.friction_per_ps / unit.picosecond, s.timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    for force in p.system.getForces():
        if isinstance(force, openmm.MonteCarloBarostat):
            force.setRandomNumberSeed(seed)
    platform, props = _platform(s)
    ctx = openmm.Context(p.system, integrator, platform, props)
    box, pos = (p.start_box, p.start_nm) if start else (p.box, p.positions_nm)
    if box is not None:
        ctx.setPeriodicBoxVectors(*box)
    ctx.setPositions(pos)
    return ctx


def _trajectory(p: Prepared, seed: int) -> Iterator[np.ndarray]:
    """Production frames (all atoms, nm, unwrapped) of one replica started at the minimised structure."""
    s = p.settings
    ctx = _context(p, seed, start=True)
    ctx.setVelocitiesToTemperature(s.temperature_k * unit.kelvin, seed)
    steps_per_ps = 1000.0 / s.timestep_fs
    integrator = ctx.getIntegrator()
    if s.equilibration_ps > 0:
        integrator.step(round(s.equilibration_ps * steps_per_ps))
    per_frame = max(1, round(s.frame_interval_ps * steps_per_ps))
    for _ in range(max(1, int(round(s.length_ps / s.frame_interval_ps)))):
        integrator.step(per_frame)
        state = ctx.getState(getPositions=True, getEnergy=True)
        e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not math.isfinite(e):
            raise MDInstabilityError(f"{p.name} (seed {seed}): potential energy became {e}")
        yield state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def _mmpbsa_py(e: EnsembleInputs, frames: list[np.ndarray], replicas: list[ReplicaResult]) -> dict:
    """MMPBSA.py on the production frames; per-replica means like ours, and the per-frame difference for GB."""
    folder = e.build.folder / "mmpbsa_py"
    folder.mkdir(exist_ok=True)
    dcd = folder / "frames.dcd"
    mmgbsa.write_dcd(dcd, e.build.prmtop("complex"), frames, e.settings.frame_interval_ps)
    methods = tuple(e.settings.mmpbsa_py.split("+"))
    out = mmgbsa.mmpbsa_py(e.build, dcd, folder, methods)
    sizes = [len(r.frames_kcal_mol) for r in replicas]
    if "gb" in out:
        ours = np.array([e - sa for r in replicas for e, sa in zip(r.frames_kcal_mol, r.frames_nonpolar_kcal_mol)])
        diff = ours - np.array([f["gas_plus_polar"] for f in out["gb"]["frames"]])
        out["gb"]["openmm_minus_mmpbsa_py_gas_plus_polar_kcal_mol"] = {
            "mean": round(float(diff.mean()), 4),
            "max_abs": round(float(np.abs(diff).max()), 4),
        }
    for _method, res in out.items():
        totals = np.array([f["total"] for f in res["frames"]])
        bounds = np.cumsum([0, *sizes])
        res["replica_means_kcal_mol"] = [round(float(totals[a:b].mean()), 4) for a, b in zip(bounds, bounds[1:])]
    return out


# --------------------------------------------------------------------------- CLI


CLI_FAILURES = (StageInputError, amber.AmberToolsMissing, amber.AmberToolError, MDInstabilityError, FloatingPointError)


def report_failure(exc: BaseException, subject: object, simulation: str) -> int:
    """Print the one-line error of a failed MD command and return its exit code: 3 AmberTools missing, 1 a tool
    failed or the simulation blew up (usable inputs), 2 anything else (unusable input)."""
    if isinstance(exc, amber.AmberToolsMissing):
        message, code = str(exc), 3
    elif isinstance(exc, amber.AmberToolError):
        message, code = f"{subject}: {exc}", 1
    elif isinstance(exc, (MDInstabilityError, FloatingPointError)):
        message, code = f"{simulation} unstable: {exc}", 1
    else:
        message, code = str(exc), 2
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit("the MD command is `python -m impeccable.stages.md_cli` (validate, prepare and replica included)")
