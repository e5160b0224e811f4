"""Single-trajectory MM/GBSA from OpenMM energies, and the same numbers from AmberTools' MMPBSA.py.

    dG(frame) = E(complex) - E(receptor) - E(ligand)

each term evaluated on the complex frame's coordinates with the tleap
topologies (``tleap.build``): gas-phase MM (van der Waals + Coulomb, no
cutoff), OBC2 generalised Born polar solvation (igb=5 in Amber; mbondi2 radii,
solute dielectric 1, solvent 78.5, no salt) and a non-polar term (OpenMM's ACE
surface-area approximation, 0.0054 kcal/mol/A^2). Internal (bond, angle,
torsion) energies cancel in a single trajectory and are kept only as a check.
No entropy term: values rank poses of one target; they are not absolute
binding free energies.

``mmpbsa_py`` runs MMPBSA.py on the same frames and topologies. Two inputs are
set so that its GB is OpenMM's: ``extdiel=78.5`` (MMPBSA.py writes 80) and
``rgbmax=999`` (sander's default 25 A truncates the Born-radius sums; OpenMM
has no such cut). Its non-polar term is LCPO surface area x 0.0072, a different
model from ACE, so agreement is checked on gas phase + GB polar.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from . import amber
from .tleap import AmberBuild

__all__ = ["FrameEnergy", "Scorer", "implicit_system", "mmpbsa_py", "write_dcd", "GROUP", "KJ_PER_KCAL"]

KJ_PER_KCAL = 4.184
SOLVENT_DIELECTRIC = 78.5
GROUP = {"bonded": 0, "nonbonded": 1, "gb": 2, "sa": 3, "vdw": 4, "restraint": 31}


@dataclass(frozen=True)
class FrameEnergy:
    """Binding-energy terms of one frame, kcal/mol: dG = vdw + elec + gb + sa (+ bonded, ~0)."""

    vdw: float
    elec: float
    gb: float
    sa: float
    bonded: float

    @property
    def dg(self) -> float:
        return self.vdw + self.elec + self.gb + self.sa + self.bonded

    @property
    def gas_plus_gb(self) -> float:
        """What MMPBSA.py's GB computes the same way (its non-polar model differs)."""
        return self.vdw + self.elec + self.gb + self.bonded


def implicit_system(prmtop: Path, constraints=app.HBonds, split_sa: bool = False) -> openmm.System:
    """OBC2 + ACE system of a tleap prmtop, force groups as in ``GROUP``.

    ``split_sa`` moves the ACE non-polar term into a chargeless copy of the GB
    force (group ``sa``) so that polar and non-polar parts are reported apart;
    it doubles the GB cost, so the MD system does without. The prmtop's mbondi2
    radii and screening factors are used (OpenMM warns that they differ from
    its own defaults for some elements; they are the ones sander uses, so the
    warning is silenced).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Non-optimal GB parameters")
        system = app.AmberPrmtopFile(str(prmtop)).createSystem(
            nonbondedMethod=app.NoCutoff,
            constraints=constraints,
            implicitSolvent=app.OBC2,
            soluteDielectric=1.0,
            solventDielectric=SOLVENT_DIELECTRIC,
            gbsaModel="ACE",
        )
    for force in system.getForces():
        force.setForceGroup(GROUP["bonded"])
        if isinstance(force, openmm.NonbondedForce):
            force.setForceGroup(GROUP["nonbonded"])
        elif isinstance(force, openmm.GBSAOBCForce):
            force.setForceGroup(GROUP["gb"])
            if split_sa:
                system.addForce(_surface_area_only(force))
                force.setSurfaceAreaEnergy(0.0)
    return system


class Scorer:
    """Per-frame binding energy from three OpenMM contexts (complex, receptor, ligand)."""

    def __init__(self, build: AmberBuild, platform: openmm.Platform, properties: dict[str, str]):
        self.n_receptor = build.n_receptor_atoms
        self.contexts = {}
        for part in ("complex", "receptor", "ligand"):
            system = implicit_system(build.prmtop(part), split_sa=True)
            system.addForce(_vdw_only(system))
            self.contexts[part] = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)

    def score(self, complex_nm: np.ndarray) -> FrameEnergy:
        """Binding-energy terms of one frame (complex coordinates in nm, solvent already removed)."""
        c = self._terms("complex", complex_nm)
        r = self._terms("receptor", complex_nm[: self.n_receptor])
        lig = self._terms("ligand", complex_nm[self.n_receptor :])
        d = {k: c[k] - r[k] - lig[k] for k in c}
        return FrameEnergy(vdw=d["vdw"], elec=d["nonbonded"] - d["vdw"], gb=d["gb"], sa=d["sa"], bonded=d["bonded"])

    def _terms(self, part: str, pos_nm: np.ndarray) -> dict[str, float]:
        ctx = self.contexts[part]
        ctx.setPositions(pos_nm)
        out = {}
        for name in ("bonded", "nonbonded", "gb", "sa", "vdw"):
            state = ctx.getState(getEnergy=True, groups={GROUP[name]})
            e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_KCAL
            if not math.isfinite(e):
                raise FloatingPointError(f"non-finite {name} energy of the {part} while scoring a frame")
            out[name] = e
        return out


def write_dcd(path: Path, prmtop: Path, frames_nm: list[np.ndarray], interval_ps: float) -> None:
    """Frames as a DCD file (float32, what cpptraj and MMPBSA.py read)."""
    top = app.AmberPrmtopFile(str(prmtop)).topology
    with open(path, "wb") as fh:
        dcd = app.DCDFile(fh, top, interval_ps * unit.picosecond)
        for xyz in frames_nm:
            dcd.writeModel(np.asarray(xyz) * 10.0 * unit.angstrom)


def mmpbsa_py(build: AmberBuild, dcd: Path, folder: Path, methods: tuple[str, ...] = ("gb",)) -> dict:
    """Run MMPBSA.py (sander) on ``dcd``; per-frame delta terms and means in kcal/mol per method.

    Returns ``{"gb": {"frames": [{"vdw":, "elec":, "polar":, "nonpolar":, "gas_plus_polar":, "total":}...],
    "mean_total":, "mean_gas_plus_polar":}, "pb": ...}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    blocks = ["&general\n  use_sander=1, keep_files=0, netcdf=1,\n/\n"]
    if "gb" in methods:
        blocks.append("&gb\n  igb=5, saltcon=0.0,\n/\n")
    if "pb" in methods:
        blocks.append("&pb\n  istrng=0.0, radiopt=0, inp=1,\n/\n")
    (folder / "mmpbsa.in").write_text("MM/GBSA cross-check of OpenMM\n" + "".join(blocks))
    args = [
        "-O",
        "-i",
        "mmpbsa.in",
        "-cp",
        str(build.prmtop("complex")),
        "-rp",
        str(build.prmtop("receptor")),
        "-lp",
        str(build.prmtop("ligand")),
        "-y",
        str(dcd),
    ]
    what = f"MMPBSA.py on {dcd}"
    amber.run("MMPBSA", [*args, "-make-mdins"], folder, what)
    gb_mdin = folder / "_MMPBSA_gb.mdin"
    if gb_mdin.is_file():
        text = re.sub(r"extdiel\s*=\s*[\d.]+", "extdiel=78.5", gb_mdin.read_text())
        gb_mdin.write_text(text.replace("&cntrl", "&cntrl\n  rgbmax=999.0,", 1))
    amber.run(
        "MMPBSA",
        [*args, "-use-mdins", "-eo", "frames.csv", "-o", "FINAL_RESULTS_MMPBSA.dat"],
        folder,
        what,
        logs=("FINAL_RESULTS_MMPBSA.dat",),
    )
    return _read_frames_csv((folder / "frames.csv").read_text(), methods)


# --------------------------------------------------------------------------- helpers


def _surface_area_only(gb: openmm.GBSAOBCForce) -> openmm.GBSAOBCForce:
    """A chargeless copy of the OBC force: only its ACE surface-area term is left."""
    sa = openmm.GBSAOBCForce()
    sa.setSoluteDielectric(gb.getSoluteDielectric())
    sa.setSolventDielectric(gb.getSolventDielectric())
    sa.setSurfaceAreaEnergy(gb.getSurfaceAreaEnergy())
    sa.setNonbondedMethod(gb.getNonbondedMethod())
    for i in range(gb.getNumParticles()):
        _, radius, scale = gb.getParticleParameters(i)
        sa.addParticle(0.0, radius, scale)
    sa.setForceGroup(GROUP["sa"])
    return sa


def _vdw_only(system: openmm.System) -> openmm.NonbondedForce:
    """A chargeless copy of the NonbondedForce: its energy is the van der Waals part alone."""
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    vdw = openmm.XmlSerializer.clone(nb)
    for i in range(vdw.getNumParticles()):
        _, sigma, eps = vdw.getParticleParameters(i)
        vdw.setParticleParameters(i, 0.0, sigma, eps)
    for i in range(vdw.getNumExceptions()):
        a, b, _, sigma, eps = vdw.getExceptionParameters(i)
        vdw.setExceptionParameters(i, a, b, 0.0, sigma, eps)
    vdw.setForceGroup(GROUP["vdw"])
    return vdw


def _read_frames_csv(text: str, methods: tuple[str, ...]) -> dict:
    """The DELTA blocks of MMPBSA.py's ``-eo`` per-frame CSV, one per method (GB first, then PB)."""
    sections = re.split(r"^(GENERALIZED BORN:|POISSON BOLTZMANN:)\s*$", text, flags=re.M)
    by_method = {}
    for head, body in zip(sections[1::2], sections[2::2]):
        method = "gb" if head.startswith("GENERALIZED") else "pb"
        delta = re.split(r"^delta energy terms\s*$", body, flags=re.M | re.I)[1].strip().split("\n\n", 1)[0]
        rows = list(csv.DictReader(io.StringIO(delta)))
        polar = "EGB" if method == "gb" else "EPB"
        nonpolar = "ESURF" if method == "gb" else "ENPOLAR"
        frames = []
        for row in rows:
            vdw, elec, p = float(row["VDWAALS"]), float(row["EEL"]), float(row[polar])
            frames.append(
                {
                    "vdw": vdw,
                    "elec": elec,
                    "polar": p,
                    "nonpolar": float(row.get(nonpolar) or 0.0),
                    "gas_plus_polar": vdw + elec + p,
                    "total": float(row["DELTA TOTAL"]),
                }
            )
        by_method[method] = {
            "frames": frames,
            "mean_total": float(np.mean([f["total"] for f in frames])),
            "mean_gas_plus_polar": float(np.mean([f["gas_plus_polar"] for f in frames])),
        }
    missing = [m for m in methods if m not in by_method]
    if missing:
        raise amber.AmberToolError("MMPBSA.py per-frame output", "MMPBSA.py", f"no {missing} section in frames.csv")
    return by_method
