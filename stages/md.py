"""MD refinement and MM/GBSA rescoring of a docked pose (an ESMACS-style ensemble).

``refine_and_score(receptor_pdb, ligand_sdf, MDSettings())`` builds the complex
(protein: amber14 + OBC2 implicit solvent; ligand: RDKit MMFF94 via
``mmff_openmm``), minimises it, runs several short Langevin replicas from the
same minimised structure with different velocity seeds, and scores every
frame with the single-trajectory MM/GBSA estimate

    dG(frame) = E(complex) - E(receptor) - E(ligand)

each term in the same OBC2 solvent (GB polar + ACE surface-area nonpolar).
Internal energies cancel exactly in the single-trajectory approach, so dG is
the gas-phase interaction (vdW + Coulomb) plus the change in solvation. No
entropy term: like ESMACS without normal modes, values rank poses, they are
not absolute free energies. The reported uncertainty is the standard error of
the replica means (replicas are the independent samples, frames are not).

Trimmed receptor (default, for speed on a few CPU cores): residues with any
atom within ``pocket_radius_angstrom`` of the ligand are kept whole (gaps of
up to 3 residues are filled, disulfide partners kept); every cut is capped
with ACE/NME built from the neighbouring residue's backbone atoms, so the
fragment is a valid amber14 molecule with an integer charge. Heavy atoms of
residues farther than ``flexible_radius_angstrom`` from the ligand, and all
cap atoms, are held by harmonic position restraints during MD (not in the
scores). ``pocket_radius_angstrom=None`` uses the full receptor unrestrained.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit
from rdkit import Chem

from . import mmff_openmm
from .errors import StageInputError

__all__ = ["MDSettings", "ReplicaResult", "MDResult", "MDInstabilityError", "refine_and_score", "read_ligand", "main"]

_KCAL = mmff_openmm.KJ_PER_KCAL
_RESTRAINT_GROUP = 31
_GROUP_NONBONDED, _GROUP_GB = 1, 2


class MDInstabilityError(RuntimeError):
    """The simulation blew up: a non-finite energy or an atom far from where it started."""


@dataclass(frozen=True)
class MDSettings:
    """How much MD to run and on what; the defaults are a tiny but real ensemble."""

    replicas: int = 3
    length_ps: float = 4.0  # production per replica
    equilibration_ps: float = 1.0  # per replica, not scored
    frame_interval_ps: float = 0.5
    timestep_fs: float = 2.0
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    pocket_radius_angstrom: float | None = 10.0  # None: the whole receptor
    flexible_radius_angstrom: float = 7.0  # residues farther than this are restrained
    restraint_kcal_mol_a2: float = 5.0
    nonbonded_cutoff_angstrom: float | None = None  # None: no cutoff (exact GB)
    minimise_max_iterations: int = 300  # a docked pose needs relaxing, not a converged minimum
    max_displacement_angstrom: float = 20.0
    seed: int = 2013
    platform: str = "CPU"
    threads: int | None = None

    def check(self) -> None:
        """Raise StageInputError naming the first unusable setting."""
        positive = ("length_ps", "frame_interval_ps", "timestep_fs", "temperature_k", "max_displacement_angstrom")
        for name in positive:
            if not getattr(self, name) > 0:
                raise StageInputError(f"MDSettings.{name}: must be > 0, got {getattr(self, name)!r}")
        if self.replicas < 1:
            raise StageInputError(f"MDSettings.replicas: must be >= 1, got {self.replicas!r}")
        if self.equilibration_ps < 0:
            raise StageInputError(f"MDSettings.equilibration_ps: must be >= 0, got {self.equilibration_ps!r}")
        if self.frame_interval_ps > self.length_ps:
            raise StageInputError("MDSettings.frame_interval_ps: longer than length_ps, no frame would be scored")
        if self.pocket_radius_angstrom is not None and self.pocket_radius_angstrom <= 0:
            raise StageInputError("MDSettings.pocket_radius_angstrom: must be > 0 or None (whole receptor)")
        if self.threads is not None and self.threads < 1:
            raise StageInputError(f"MDSettings.threads: must be >= 1, got {self.threads!r}")


@dataclass
class ReplicaResult:
    seed: int
    binding_energy_kcal_mol: float  # mean over this replica's frames
    frames_kcal_mol: list[float]
    max_displacement_angstrom: float
    ligand_rmsd_angstrom: float  # last frame vs minimised pose, heavy atoms, no fitting
    md_seconds: float


@dataclass
class MDResult:
    """Ensemble MM/GBSA estimate of one pose; energies in kcal/mol."""

    binding_energy_kcal_mol: float
    stderr_kcal_mol: float | None  # standard error over replica means; None for one replica
    per_replica: list[ReplicaResult]
    n_frames: int
    components_kcal_mol: dict[str, float]  # ensemble means: gas-phase MM and GB+SA solvation
    minimised_binding_energy_kcal_mol: float
    n_atoms: int
    n_receptor_residues: int
    ligand_net_charge_e: float
    receptor: str
    ligand: str
    settings: MDSettings
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def refine_and_score(
    receptor_pdb: str | Path,
    ligand: str | Path | Chem.Mol,
    settings: MDSettings = MDSettings(),
) -> MDResult:
    """Minimise, run ``settings.replicas`` short MD replicas, return the MM/GBSA ensemble estimate.

    ``ligand`` is an SDF path (the first molecule is used) or an RDKit molecule
    with a 3D conformer in the receptor's frame. Raises StageInputError for
    unusable inputs and MDInstabilityError if a replica blows up.
    """
    settings.check()
    t0 = time.perf_counter()
    notes: list[str] = []
    if isinstance(ligand, Chem.Mol):
        mol, lig_name = ligand, (ligand.GetProp("_Name") if ligand.HasProp("_Name") else "") or "ligand"
    else:
        mol, lig_name = read_ligand(ligand), str(ligand)
    mol = _with_hydrogens(mol, lig_name, notes)
    lig_params = mmff_openmm.parameterise(mol, lig_name)
    lig_xyz_nm = mol.GetConformer().GetPositions() / 10.0

    protein = _read_protein(receptor_pdb, notes)
    _check_contact(protein, lig_xyz_nm, mol, lig_name, receptor_pdb)
    if settings.pocket_radius_angstrom is None:
        rec_top, rec_pos = protein.topology, protein.positions_nm
        restrained: list[int] = []
    else:
        rec_top, rec_pos, restrained = _trim(protein, lig_xyz_nm, settings)
        notes.append(
            f"receptor trimmed to {rec_top.getNumResidues()} residues within "
            f"{settings.pocket_radius_angstrom} A of the ligand (ACE/NME caps), "
            f"{len(restrained)} atoms restrained beyond {settings.flexible_radius_angstrom} A"
        )
    systems = _build_systems(rec_top, lig_params, mol, settings, receptor_pdb)
    pos0 = np.vstack([rec_pos, lig_xyz_nm])
    if restrained:
        _add_restraints(systems.complex, restrained, pos0, settings.restraint_kcal_mol_a2)
    t_setup = time.perf_counter()

    scorer = _Scorer(systems, rec_top.getNumAtoms(), settings)
    md = _MD(systems.complex, settings)
    pos_min = md.minimise(pos0)
    dg_min = scorer.score(pos_min)[0]
    t_min = time.perf_counter()

    replicas: list[ReplicaResult] = []
    components: list[tuple[float, float]] = []
    n_lig = lig_params.n_atoms
    heavy = np.array([a.GetAtomicNum() > 1 for a in mol.GetAtoms()])
    md_s = score_s = 0.0
    for r in range(settings.replicas):
        seed = settings.seed + r
        frames: list[float] = []
        max_disp = 0.0
        last = pos_min
        t_r = time.perf_counter()
        for pos in md.run(pos_min, seed):
            ts = time.perf_counter()
            disp = float(np.max(np.linalg.norm(pos - pos_min, axis=1))) * 10.0
            if disp > settings.max_displacement_angstrom:
                raise MDInstabilityError(
                    f"replica {r}: an atom moved {disp:.1f} A from its minimised position "
                    f"(limit {settings.max_displacement_angstrom} A); try a shorter time step"
                )
            max_disp = max(max_disp, disp)
            dg, gas, solv = scorer.score(pos)
            frames.append(dg)
            components.append((gas, solv))
            last = pos
            score_s += time.perf_counter() - ts
        elapsed = time.perf_counter() - t_r
        md_s += elapsed
        d = (last[-n_lig:] - pos_min[-n_lig:])[heavy] * 10.0
        replicas.append(
            ReplicaResult(
                seed=seed,
                binding_energy_kcal_mol=float(np.mean(frames)),
                frames_kcal_mol=[round(x, 4) for x in frames],
                max_displacement_angstrom=round(max_disp, 3),
                ligand_rmsd_angstrom=round(float(np.sqrt(np.mean(np.sum(d * d, axis=1)))), 3),
                md_seconds=round(elapsed, 3),
            )
        )

    means = np.array([r.binding_energy_kcal_mol for r in replicas])
    stderr = float(np.std(means, ddof=1) / math.sqrt(len(means))) if len(means) > 1 else None
    if stderr is None:
        notes.append("one replica: no standard error")
    md_only_s = md_s - score_s
    ps_total = settings.replicas * (settings.length_ps + settings.equilibration_ps)
    t_end = time.perf_counter()
    return MDResult(
        binding_energy_kcal_mol=float(means.mean()),
        stderr_kcal_mol=stderr,
        per_replica=replicas,
        n_frames=sum(len(r.frames_kcal_mol) for r in replicas),
        components_kcal_mol={
            "gas_phase_mm": float(np.mean([c[0] for c in components])),
            "solvation_gb_sa": float(np.mean([c[1] for c in components])),
        },
        minimised_binding_energy_kcal_mol=dg_min,
        n_atoms=systems.complex.getNumParticles(),
        n_receptor_residues=rec_top.getNumResidues(),
        ligand_net_charge_e=round(lig_params.net_charge_e, 3),
        receptor=str(receptor_pdb),
        ligand=lig_name,
        settings=settings,
        timings_s={
            "setup": round(t_setup - t0, 3),
            "minimise": round(t_min - t_setup, 3),
            "md": round(md_only_s, 3),
            "scoring": round(score_s, 3),
            "total": round(t_end - t0, 3),
            "md_per_ps": round(md_only_s / ps_total, 4),
        },
        notes=notes,
    )


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


# --------------------------------------------------------------------------- inputs


@dataclass
class _Protein:
    topology: app.Topology
    positions_nm: np.ndarray


_PROTEIN_RESIDUES = frozenset(
    "ALA ARG ASN ASP ASH CYS CYX CYM GLN GLU GLH GLY HIS HID HIE HIP ILE LEU LYS LYN MET PHE PRO SER THR "
    "TRP TYR VAL ACE NME".split()
)


def _read_protein(path: str | Path, notes: list[str]) -> _Protein:
    p = Path(path)
    if not p.is_file():
        raise StageInputError(f"receptor {p}: no such file")
    try:
        pdb = app.PDBFile(str(p))
    except Exception as exc:  # OpenMM raises bare Exceptions/ValueErrors for malformed files
        raise StageInputError(f"receptor {p}: cannot read as PDB ({exc})") from exc
    other = sorted({r.name for r in pdb.topology.residues() if r.name not in _PROTEIN_RESIDUES})
    n_protein = sum(r.name in _PROTEIN_RESIDUES for r in pdb.topology.residues())
    if n_protein == 0:
        raise StageInputError(f"receptor {p}: no amino-acid residues, not a protein (found {other[:5]})")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    if other:
        modeller.delete([r for r in modeller.topology.residues() if r.name not in _PROTEIN_RESIDUES])
        notes.append(f"removed non-protein residues from the receptor: {', '.join(other[:10])}")
    if not any(a.element is not None and a.element.symbol == "H" for a in modeller.topology.atoms()):
        raise StageInputError(f"receptor {p}: has no hydrogens; protonate it first (pdbfixer addMissingHydrogens)")
    pos = np.array(modeller.positions.value_in_unit(unit.nanometer))
    return _Protein(modeller.topology, pos)


def _with_hydrogens(mol: Chem.Mol, name: str, notes: list[str]) -> Chem.Mol:
    if any(a.GetTotalNumHs() for a in mol.GetAtoms() if a.GetAtomicNum() > 1):
        n = mol.GetNumAtoms()
        mol = Chem.AddHs(mol, addCoords=True)
        notes.append(f"{name}: added {mol.GetNumAtoms() - n} missing hydrogens with RDKit")
    return mol


def _check_contact(protein: _Protein, lig_nm: np.ndarray, mol: Chem.Mol, name: str, receptor: str | Path) -> None:
    """A pose must touch the receptor: its closest heavy-atom contact within 6 A."""
    heavy_p = np.array([a.element is not None and a.element.symbol != "H" for a in protein.topology.atoms()])
    heavy_l = np.array([a.GetAtomicNum() > 1 for a in mol.GetAtoms()])
    d = _min_distances(lig_nm[heavy_l], protein.positions_nm[heavy_p])
    if float(d.min()) * 10.0 > 6.0:
        raise StageInputError(
            f"ligand {name}: closest heavy atom is {float(d.min()) * 10:.1f} A from receptor {receptor} "
            "(expected a pose in contact, < 6 A); are both in the same frame?"
        )


def _min_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each point of b, the distance to the nearest point of a."""
    out = np.full(len(b), np.inf)
    for x in a:
        np.minimum(out, np.linalg.norm(b - x, axis=1), out=out)
    return out


# --------------------------------------------------------------------------- trimming


def _trim(protein: _Protein, lig_nm: np.ndarray, s: MDSettings) -> tuple[app.Topology, np.ndarray, list[int]]:
    """Residues near the ligand as capped fragments; return topology, positions (nm), restrained atoms."""
    top, pos = protein.topology, protein.positions_nm
    atom_d = _min_distances(lig_nm, pos) * 10.0  # angstrom, each receptor atom to the ligand
    residues = list(top.residues())
    res_d = np.array([min(atom_d[a.index] for a in r.atoms()) for r in residues])
    keep = {r.index for r in residues if res_d[r.index] <= s.pocket_radius_angstrom}
    for a1, a2 in top.bonds():  # keep both halves of a disulfide
        if a1.name == "SG" and a2.name == "SG" and (a1.residue.index in keep) != (a2.residue.index in keep):
            keep |= {a1.residue.index, a2.residue.index}

    new = app.Topology()
    new_pos: list[np.ndarray] = []
    old_to_new: dict[int, app.Atom] = {}
    restrained: list[int] = []
    extra_bonds: list[tuple[app.Atom, app.Atom]] = []

    def add_atom(residue: app.Residue, name: str, element: app.Element, xyz: np.ndarray, old: app.Atom | None = None):
        atom = new.addAtom(name, element, residue)
        new_pos.append(xyz)
        if old is not None:
            old_to_new[old.index] = atom
        return atom

    for chain in top.chains():
        chain_res = list(chain.residues())
        kept_pos = [i for i, r in enumerate(chain_res) if r.index in keep]
        for i, j in zip(kept_pos, kept_pos[1:]):  # fill short gaps: caps need room
            if 1 < j - i <= 4:
                kept_pos.extend(range(i + 1, j))
        kept_pos = sorted(set(kept_pos))
        for seg in _runs(kept_pos):
            c = new.addChain(chain.id)
            first, last = chain_res[seg[0]], chain_res[seg[-1]]
            if seg[0] > 0 and _peptide_bonded(chain_res[seg[0] - 1], first, pos):
                cap = new.addResidue("ACE", c)
                before = len(new_pos)
                _add_cap(add_atom, cap, chain_res[seg[0] - 1], pos, top, "ACE", extra_bonds)
                restrained.extend(range(before, len(new_pos)))
            for i in seg:
                old = chain_res[i]
                res = new.addResidue(old.name, c, old.id, old.insertionCode)
                far = res_d[old.index] > s.flexible_radius_angstrom
                for a in old.atoms():
                    if far and a.element is not None and a.element.symbol != "H":
                        restrained.append(len(new_pos))
                    add_atom(res, a.name, a.element, pos[a.index], a)
            if seg[-1] + 1 < len(chain_res) and _peptide_bonded(last, chain_res[seg[-1] + 1], pos):
                cap = new.addResidue("NME", c)
                before = len(new_pos)
                _add_cap(add_atom, cap, chain_res[seg[-1] + 1], pos, top, "NME", extra_bonds)
                restrained.extend(range(before, len(new_pos)))
    for a1, a2 in top.bonds():
        if a1.index in old_to_new and a2.index in old_to_new:
            new.addBond(old_to_new[a1.index], old_to_new[a2.index])
    for a1, a2 in extra_bonds:
        new.addBond(a1, a2)
    return new, np.array(new_pos), restrained


def _runs(sorted_idx: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in sorted_idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _peptide_bonded(prev: app.Residue, nxt: app.Residue, pos: np.ndarray) -> bool:
    c = next((a for a in prev.atoms() if a.name == "C"), None)
    n = next((a for a in nxt.atoms() if a.name == "N"), None)
    return c is not None and n is not None and float(np.linalg.norm(pos[c.index] - pos[n.index])) < 0.2


def _add_cap(add_atom, cap: app.Residue, src: app.Residue, pos: np.ndarray, top: app.Topology, kind: str, extra) -> None:
    """ACE from CA, C, O of the residue before a cut; NME from N, H, CA of the residue after.

    The methyl hydrogens point along CA's other bonds (to N/C, CB, HA), 1.09 A
    long, so the cap starts near a tetrahedral geometry; minimisation does the rest.
    """
    atoms = {a.name: a for a in src.atoms()}
    ca = atoms["CA"]
    ca_nbrs = [b for a, b in _bonded(top, ca)]
    h, c = app.element.hydrogen, app.element.carbon
    if kind == "ACE":
        methyl = add_atom(cap, "CH3", c, pos[ca.index], ca)
        add_atom(cap, "C", c, pos[atoms["C"].index], atoms["C"])
        add_atom(cap, "O", app.element.oxygen, pos[atoms["O"].index], atoms["O"])
        keep_dir = atoms["C"]
    else:
        n = atoms["N"]
        add_atom(cap, "N", app.element.nitrogen, pos[n.index], n)
        if "H" in atoms:
            add_atom(cap, "H", h, pos[atoms["H"].index], atoms["H"])
        else:  # proline: put the amide H where CD was
            u = pos[atoms["CD"].index] - pos[n.index]
            hn = add_atom(cap, "H", h, pos[n.index] + 0.101 * u / np.linalg.norm(u))
            extra.append((_new_atom_of(cap, "N"), hn))
        methyl = add_atom(cap, "C", c, pos[ca.index], ca)
        keep_dir = n
    k = 1
    for nb in ca_nbrs:
        if nb is keep_dir:
            continue
        u = pos[nb.index] - pos[ca.index]
        hx = add_atom(cap, f"H{k}", h, pos[ca.index] + 0.109 * u / np.linalg.norm(u))
        extra.append((methyl, hx))
        k += 1


def _new_atom_of(residue: app.Residue, name: str) -> app.Atom:
    return next(a for a in residue.atoms() if a.name == name)


def _bonded(top: app.Topology, atom: app.Atom) -> list[tuple[app.Atom, app.Atom]]:
    return [(a, b) if a is atom else (b, a) for a, b in top.bonds() if atom in (a, b)]


# --------------------------------------------------------------------------- systems


@dataclass
class _Systems:
    complex: openmm.System
    receptor: openmm.System
    ligand: openmm.System


@lru_cache(maxsize=1)
def _forcefield() -> app.ForceField:
    return app.ForceField("amber14-all.xml", "implicit/obc2.xml")


def _build_systems(rec_top: app.Topology, lig: mmff_openmm.MMFFLigand, mol: Chem.Mol, s: MDSettings, receptor) -> _Systems:
    """Three systems with identical force-field terms: complex (for MD), receptor, ligand."""
    cutoff = s.nonbonded_cutoff_angstrom
    kwargs = dict(constraints=app.HBonds, rigidWater=True)
    if cutoff is None:
        kwargs["nonbondedMethod"] = app.NoCutoff
    else:
        kwargs.update(nonbondedMethod=app.CutoffNonPeriodic, nonbondedCutoff=cutoff / 10.0 * unit.nanometer)
    try:
        receptor_sys = _forcefield().createSystem(rec_top, **kwargs)
    except ValueError as exc:
        raise StageInputError(f"receptor {receptor}: amber14 cannot parameterise it ({exc})") from exc
    _set_groups(receptor_sys)

    complex_sys = openmm.XmlSerializer.clone(receptor_sys)
    nb = next(f for f in complex_sys.getForces() if isinstance(f, openmm.NonbondedForce))
    gb = next(f for f in complex_sys.getForces() if isinstance(f, openmm.CustomGBForce))
    first = complex_sys.getNumParticles()
    mmff_openmm.add_ligand(complex_sys, lig, nonbonded=nb, constrain_h=True)
    for q, p in zip(lig.charges_e, _ligand_gb_parameters(mol)):
        gb.addParticle([q, *p])
    _set_groups(complex_sys, ligand_from=first)

    ligand_sys = openmm.System()
    from openmm.app.internal.customgbforces import GBSAOBC2Force

    lgb = GBSAOBC2Force(SA="ACE", cutoff=None if cutoff is None else cutoff / 10.0)
    for q, p in zip(lig.charges_e, _ligand_gb_parameters(mol)):
        openmm.CustomGBForce.addParticle(lgb, [q, *p])
    lgb.setNonbondedMethod(
        openmm.CustomGBForce.NoCutoff if cutoff is None else openmm.CustomGBForce.CutoffNonPeriodic
    )
    if cutoff is not None:
        lgb.setCutoffDistance(cutoff / 10.0)
    mmff_openmm.add_ligand(ligand_sys, lig)
    ligand_sys.addForce(lgb)
    _set_groups(ligand_sys, ligand_from=0)
    for system in (complex_sys, receptor_sys, ligand_sys):
        _native_gb(system)
    return _Systems(complex_sys, receptor_sys, ligand_sys)


def _native_gb(system: openmm.System) -> None:
    """Replace the OBC2 CustomGBForce by OpenMM's native GBSAOBCForce, which is the same model.

    amber14's ``implicit/obc2.xml`` builds OBC2 as a CustomGBForce, whose generic
    CPU kernel is two orders of magnitude slower than the native one. Both use
    alpha, beta, gamma = 1.0, 0.8, 4.85 and the ACE surface term; the native force
    takes the full radius and the scale factor instead of offset radii.
    """
    from openmm.app.internal.customgbforces import GBSAOBC2Force

    for index, force in enumerate(system.getForces()):
        if not isinstance(force, openmm.CustomGBForce):
            continue
        native = openmm.GBSAOBCForce()
        native.setSoluteDielectric(1.0)
        native.setSolventDielectric(78.5)
        for i in range(force.getNumParticles()):
            charge, offset_radius, scaled = force.getParticleParameters(i)
            native.addParticle(charge, offset_radius + GBSAOBC2Force.OFFSET, scaled / offset_radius)
        if force.getNonbondedMethod() == openmm.CustomGBForce.NoCutoff:
            native.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
        else:
            native.setNonbondedMethod(openmm.GBSAOBCForce.CutoffNonPeriodic)
            native.setCutoffDistance(force.getCutoffDistance())
        native.setForceGroup(force.getForceGroup())
        system.removeForce(index)
        system.addForce(native)
        return


def _ligand_gb_parameters(mol: Chem.Mol) -> list[tuple[float, float]]:
    """OBC2 (offset radius, scaled offset radius) in nm from OpenMM's mbondi2 + element screening rules."""
    from openmm.app.internal.customgbforces import GBSAOBC2Force

    top = app.Topology()
    res = top.addResidue("LIG", top.addChain())
    atoms = [top.addAtom(a.GetSymbol(), app.Element.getByAtomicNumber(a.GetAtomicNum()), res) for a in mol.GetAtoms()]
    for b in mol.GetBonds():
        top.addBond(atoms[b.GetBeginAtomIdx()], atoms[b.GetEndAtomIdx()])
    offset = GBSAOBC2Force.OFFSET
    return [(r - offset, scale * (r - offset)) for r, scale in GBSAOBC2Force.getStandardParameters(top)]


def _set_groups(system: openmm.System, ligand_from: int | None = None) -> None:
    """Nonbonded -> group 1, GB -> group 2, the rest 0 (ligand MMFF terms included)."""
    for f in system.getForces():
        if isinstance(f, openmm.NonbondedForce):
            f.setForceGroup(_GROUP_NONBONDED)
        elif isinstance(f, (openmm.CustomGBForce, openmm.GBSAOBCForce)):
            f.setForceGroup(_GROUP_GB)
        elif f.getForceGroup() != _RESTRAINT_GROUP:
            f.setForceGroup(0)


def _add_restraints(system: openmm.System, atoms: list[int], pos_nm: np.ndarray, k_kcal_mol_a2: float) -> None:
    force = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    force.addGlobalParameter("k", k_kcal_mol_a2 * _KCAL * 100.0)  # kJ/mol/nm^2
    for p in ("x0", "y0", "z0"):
        force.addPerParticleParameter(p)
    for i in atoms:
        force.addParticle(i, list(pos_nm[i]))
    force.setForceGroup(_RESTRAINT_GROUP)
    system.addForce(force)


def _platform(s: MDSettings) -> tuple[openmm.Platform, dict[str, str]]:
    try:
        platform = openmm.Platform.getPlatformByName(s.platform)
    except Exception as exc:
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        raise StageInputError(f"MDSettings.platform: {s.platform!r} is not available (have {names})") from exc
    props = {"Threads": str(s.threads)} if s.platform == "CPU" and s.threads else {}
    return platform, props


_SCORE_GROUPS = 0b111  # groups 0-2: everything but restraints


class _Scorer:
    """E(complex) - E(receptor) - E(ligand) for one frame, in kcal/mol, via three contexts."""

    def __init__(self, systems: _Systems, n_receptor: int, s: MDSettings):
        platform, props = _platform(s)
        self.n = n_receptor
        self.ctx = {
            name: openmm.Context(getattr(systems, name), openmm.VerletIntegrator(0.001), platform, props)
            for name in ("complex", "receptor", "ligand")
        }

    def _energies(self, name: str, pos_nm: np.ndarray) -> list[float]:
        """Energies of force groups (nonbonded, GB+SA, the rest) in kcal/mol."""
        ctx = self.ctx[name]
        ctx.setPositions(pos_nm)
        out = []
        for groups in (1 << _GROUP_NONBONDED, 1 << _GROUP_GB, 1):
            e = ctx.getState(getEnergy=True, groups=groups).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            if not math.isfinite(e):
                raise MDInstabilityError(f"non-finite {name} energy while scoring a frame")
            out.append(e / _KCAL)
        return out

    def score(self, pos_nm: np.ndarray) -> tuple[float, float, float]:
        """(dG, gas-phase MM part, GB+SA solvation part), kcal/mol."""
        c = self._energies("complex", pos_nm)
        r = self._energies("receptor", pos_nm[: self.n])
        lig = self._energies("ligand", pos_nm[self.n :])
        nonbonded, solvation, bonded = (c[i] - r[i] - lig[i] for i in range(3))
        gas = nonbonded + bonded  # bonded cancels to round-off in a single trajectory
        return gas + solvation, gas, solvation


class _MD:
    """One Langevin context reused by all replicas; each replica starts from the minimised structure."""

    def __init__(self, system: openmm.System, s: MDSettings):
        platform, props = _platform(s)
        self.s = s
        self.integrator = openmm.LangevinMiddleIntegrator(
            s.temperature_k * unit.kelvin, s.friction_per_ps / unit.picosecond, s.timestep_fs * unit.femtosecond
        )
        self.ctx = openmm.Context(system, self.integrator, platform, props)

    def minimise(self, pos_nm: np.ndarray) -> np.ndarray:
        self.ctx.setPositions(pos_nm)
        openmm.LocalEnergyMinimizer.minimize(self.ctx, 10.0, self.s.minimise_max_iterations)
        state = self.ctx.getState(getPositions=True, getEnergy=True)
        e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not math.isfinite(e):
            raise MDInstabilityError("minimisation ended with a non-finite energy (overlapping atoms?)")
        return state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def run(self, pos_nm: np.ndarray, seed: int):
        """Yield production frames (positions in nm) of one replica."""
        s = self.s
        steps_per_ps = 1000.0 / s.timestep_fs
        self.ctx.setPositions(pos_nm)
        self.integrator.setRandomNumberSeed(seed)
        self.ctx.reinitialize(preserveState=True)  # the new noise seed takes effect
        self.ctx.setVelocitiesToTemperature(s.temperature_k * unit.kelvin, seed)
        if s.equilibration_ps > 0:
            self._step(round(s.equilibration_ps * steps_per_ps))
        per_frame = max(1, round(s.frame_interval_ps * steps_per_ps))
        for _ in range(max(1, int(round(s.length_ps / s.frame_interval_ps)))):
            self._step(per_frame)
            state = self.ctx.getState(getPositions=True, getEnergy=True)
            e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            if not math.isfinite(e):
                raise MDInstabilityError(f"seed {seed}: potential energy became {e}")
            yield state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def _step(self, n: int) -> None:
        self.integrator.step(n)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m impeccable.stages.md --receptor R.pdb --ligand pose.sdf --out result.json``."""
    p = argparse.ArgumentParser(prog="python -m impeccable.stages.md", description=__doc__.split("\n\n")[0])
    p.add_argument("--receptor", required=True, type=Path, help="protonated protein PDB")
    p.add_argument("--ligand", required=True, type=Path, help="pose SDF with 3D coordinates (first record)")
    p.add_argument("--out", required=True, type=Path, help="result JSON (written atomically)")
    d = MDSettings()
    p.add_argument("--replicas", type=int, default=d.replicas)
    p.add_argument("--length-ps", type=float, default=d.length_ps, help="production per replica")
    p.add_argument("--equilibration-ps", type=float, default=d.equilibration_ps)
    p.add_argument("--frame-interval-ps", type=float, default=d.frame_interval_ps)
    p.add_argument("--pocket-radius", type=float, default=d.pocket_radius_angstrom, help="angstrom")
    p.add_argument("--full-receptor", action="store_true", help="no trimming, no restraints")
    p.add_argument("--cutoff", type=float, default=None, help="nonbonded cutoff in angstrom (default none)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--platform", default=d.platform)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    settings = MDSettings(
        replicas=a.replicas,
        length_ps=a.length_ps,
        equilibration_ps=a.equilibration_ps,
        frame_interval_ps=a.frame_interval_ps,
        pocket_radius_angstrom=None if a.full_receptor else a.pocket_radius,
        nonbonded_cutoff_angstrom=a.cutoff,
        seed=a.seed,
        platform=a.platform,
        threads=a.threads,
    )
    try:
        result = refine_and_score(a.receptor, a.ligand, settings)
    except StageInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MDInstabilityError as exc:  # the inputs were usable but the simulation blew up
        print(f"error: MD of {a.ligand} unstable: {exc}", file=sys.stderr)
        return 1
    _write_json_atomic(a.out, result.to_json())
    se = "n/a" if result.stderr_kcal_mol is None else f"{result.stderr_kcal_mol:.2f}"
    print(
        f"MM/GBSA {result.binding_energy_kcal_mol:.2f} +/- {se} kcal/mol "
        f"({settings.replicas} replicas, {result.n_frames} frames, {result.timings_s['total']:.1f} s) -> {a.out}"
    )
    return 0


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
