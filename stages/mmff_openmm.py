"""RDKit's MMFF94 parameters for a ligand, expressed as OpenMM forces.

Why: AmberTools (antechamber/GAFF) and openff-toolkit do not install from PyPI,
so the ligand force field comes from RDKit alone. RDKit assigns every MMFF94
parameter (atom types, bond charge increments, all valence and nonbonded terms);
this module copies them into standard and custom OpenMM forces.

What is exact and what is approximated
--------------------------------------
Exact (the same functional forms and constants as RDKit's MMFF94, so the vacuum
energy of an isolated ligand matches ``rdForceFieldHelpers`` to round-off):

* bond stretch, quartic: ``143.9325/2 kb dr^2 (1 - 2 dr + 7/12 (2 dr)^2)`` (dr in A);
* angle bend, cubic (``0.043844/2 ka dθ^2 (1 - 0.007 dθ)``, dθ in degrees), and the
  ``143.9325 ka (1 + cos θ)`` form for linear centres (MMFF types 4, 42, 53, 61);
* stretch-bend, out-of-plane (Wilson angle, all three permutations per
  trivalent centre), the three-term torsion;
* intramolecular nonbonded: buffered 14-7 vdW (with MMFF's donor-acceptor
  scaling) and buffered Coulomb ``332.0716 qi qj / (r + 0.05 A)``, dielectric 1,
  1-4 electrostatics scaled by 0.75, 1-2 and 1-3 pairs excluded, no cutoff.

Approximated (only where the ligand meets another force field):

* Ligand-environment van der Waals uses Lennard-Jones 12-6 in OpenMM's
  ``NonbondedForce`` so that it combines with amber14 by Lorentz-Berthelot:
  ``sigma_i = R*_ii / 2^(1/6)`` and ``epsilon_i = eps_ii`` from MMFF's own
  i-i pair (same minimum position and depth for like pairs; the 14-7 shape,
  MMFF's combination rule and donor-acceptor scaling are not carried over).
* Ligand-environment electrostatics use the MMFF94 partial charges with plain
  Coulomb (no 0.05 A buffer), as amber14 does.
* Implicit-solvent radii and screening factors are not MMFF quantities; md.py
  takes them from OpenMM's GBSAOBC2 element rules (mbondi2), as for the protein.
* With ``constrain_h=True`` X-H bonds are constrained at the MMFF reference
  length, so their stretch (and the X-H part of stretch-bend) is frozen.

Units: OpenMM's (nm, kJ/mol, radians); parameters are converted from MMFF's
(A, kcal/mol, md/A, degrees) here, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import openmm
from rdkit import Chem
from rdkit.Chem import rdForceFieldHelpers

from .errors import StageInputError

__all__ = [
    "MMFFLigand",
    "parameterise",
    "add_ligand",
    "vacuum_system",
    "rdkit_energy_kcal_mol",
    "openmm_energy_kcal_mol",
    "KJ_PER_KCAL",
]

KJ_PER_KCAL = 4.184
_MDYNA_TO_KCAL = 143.9325  # md/A -> kcal/mol/A^2
_DEG = 180.0 / math.pi
_LINEAR_TYPES = frozenset({4, 42, 53, 61})  # MMFFPROP "lin" = 1
_COULOMB_KJ_NM = 332.0716 * KJ_PER_KCAL / 10.0  # MMFF's constant, in kJ nm / (mol e^2)
_SCALE_14_ELE = 0.75


@dataclass
class MMFFLigand:
    """MMFF94 terms of one ligand in OpenMM units; indices are ligand-local (0..n-1)."""

    name: str
    elements: list[str]
    masses_dalton: list[float]
    charges_e: list[float]
    lj_sigma_nm: list[float]
    lj_epsilon_kj: list[float]
    bonds: list[tuple[int, int, float, float]] = field(default_factory=list)  # i, j, r0 nm, k kJ/mol/nm^2
    angles: list[tuple[int, int, int, float, float]] = field(default_factory=list)  # theta0 rad, k kJ/mol/rad^2
    linear_angles: list[tuple[int, int, int, float]] = field(default_factory=list)  # k kJ/mol
    stretch_bends: list[tuple[int, int, int, float, float, float, float, float]] = field(default_factory=list)
    oops: list[tuple[int, int, int, int, float]] = field(default_factory=list)  # i, centre, k, out-of-plane l, kJ/mol/rad^2
    torsions: list[tuple[int, int, int, int, float, float, float]] = field(default_factory=list)  # V1..V3 kJ/mol
    pairs: list[tuple[int, int, float, float, float]] = field(default_factory=list)  # R* nm, eps kJ/mol, qq e^2 (scaled)
    h_bonds: list[tuple[int, int, float]] = field(default_factory=list)  # X-H bonds, r0 nm

    @property
    def n_atoms(self) -> int:
        return len(self.elements)

    @property
    def net_charge_e(self) -> float:
        return float(sum(self.charges_e))


def parameterise(mol: Chem.Mol, name: str = "ligand", variant: str = "MMFF94") -> MMFFLigand:
    """Read every MMFF94 term RDKit assigns to ``mol`` (explicit hydrogens required).

    Raises StageInputError naming ``name`` when hydrogens are missing or MMFF has
    no parameters for an atom (metals, unusual valences).
    """
    if mol.GetNumAtoms() == 0:
        raise StageInputError(f"{name}: the ligand has no atoms")
    if any(a.GetTotalNumHs(includeNeighbors=False) for a in mol.GetAtoms()):
        raise StageInputError(f"{name}: the ligand needs explicit hydrogens (Chem.AddHs(mol, addCoords=True))")
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    if props is None or not rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
        bad = [f"{a.GetSymbol()}{a.GetIdx()}" for a in mol.GetAtoms() if a.GetSymbol() not in _MMFF_ELEMENTS]
        hint = f" (elements MMFF94 does not cover: {', '.join(bad)})" if bad else ""
        raise StageInputError(f"{name}: MMFF94 has no parameters for this molecule{hint}")

    n = mol.GetNumAtoms()
    types = [props.GetMMFFAtomType(i) for i in range(n)]
    lig = MMFFLigand(
        name=name,
        elements=[a.GetSymbol() for a in mol.GetAtoms()],
        masses_dalton=[a.GetMass() for a in mol.GetAtoms()],
        charges_e=[props.GetMMFFPartialCharge(i) for i in range(n)],
        lj_sigma_nm=[],
        lj_epsilon_kj=[],
    )
    for i in range(n):
        r_star, eps, _, _ = props.GetMMFFVdWParams(i, i)
        lig.lj_sigma_nm.append(r_star / 10.0 / 2.0 ** (1.0 / 6.0))
        lig.lj_epsilon_kj.append(eps * KJ_PER_KCAL)

    r0_nm: dict[tuple[int, int], float] = {}
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        _, kb, r0 = props.GetMMFFBondStretchParams(mol, i, j)
        r0_nm[(i, j)] = r0_nm[(j, i)] = r0 / 10.0
        lig.bonds.append((i, j, r0 / 10.0, _MDYNA_TO_KCAL * kb * KJ_PER_KCAL * 100.0))
        if 1 in (mol.GetAtomWithIdx(i).GetAtomicNum(), mol.GetAtomWithIdx(j).GetAtomicNum()):
            lig.h_bonds.append((i, j, r0 / 10.0))

    for j in range(n):
        nbrs = [a.GetIdx() for a in mol.GetAtomWithIdx(j).GetNeighbors()]
        for a in range(len(nbrs)):
            for c in range(a + 1, len(nbrs)):
                i, k = nbrs[a], nbrs[c]
                _, ka, theta0 = props.GetMMFFAngleBendParams(mol, i, j, k)
                if types[j] in _LINEAR_TYPES:
                    lig.linear_angles.append((i, j, k, _MDYNA_TO_KCAL * ka * KJ_PER_KCAL))
                else:
                    lig.angles.append((i, j, k, math.radians(theta0), 0.043844 * ka * _DEG**2 * KJ_PER_KCAL))
                sb = props.GetMMFFStretchBendParams(mol, i, j, k)
                if sb is not None and types[j] not in _LINEAR_TYPES:
                    _, k_ijk, k_kji = sb
                    f = 2.51210 * 10.0 * _DEG * KJ_PER_KCAL  # kcal/(mol A deg) -> kJ/(mol nm rad)
                    lig.stretch_bends.append(
                        (i, j, k, r0_nm[(i, j)], r0_nm[(k, j)], math.radians(theta0), k_ijk * f, k_kji * f)
                    )
        if len(nbrs) == 3:
            n0, n1, n2 = nbrs
            koop = props.GetMMFFOopBendParams(mol, n0, j, n1, n2)
            if koop:
                k = 0.043844 * koop * _DEG**2 * KJ_PER_KCAL
                for i, kk, l in ((n0, n1, n2), (n0, n2, n1), (n1, n2, n0)):
                    lig.oops.append((i, j, kk, l, k))

    for b in mol.GetBonds():
        j, k = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        for i in (a.GetIdx() for a in mol.GetAtomWithIdx(j).GetNeighbors()):
            if i == k:
                continue
            for l in (a.GetIdx() for a in mol.GetAtomWithIdx(k).GetNeighbors()):
                if l in (j, i):
                    continue
                tor = props.GetMMFFTorsionParams(mol, i, j, k, l)
                if tor is not None:
                    _, v1, v2, v3 = tor
                    lig.torsions.append((i, j, k, l, v1 * KJ_PER_KCAL, v2 * KJ_PER_KCAL, v3 * KJ_PER_KCAL))

    topo = Chem.GetDistanceMatrix(mol)
    for i in range(n):
        for j in range(i + 1, n):
            if topo[i, j] < 3:
                continue
            _, _, r_star, eps = props.GetMMFFVdWParams(i, j)
            qq = lig.charges_e[i] * lig.charges_e[j] * (_SCALE_14_ELE if topo[i, j] == 3 else 1.0)
            lig.pairs.append((i, j, r_star / 10.0, eps * KJ_PER_KCAL, qq))
    return lig


def add_ligand(
    system: openmm.System,
    lig: MMFFLigand,
    nonbonded: openmm.NonbondedForce | None = None,
    constrain_h: bool = False,
) -> int:
    """Append the ligand's particles and MMFF forces to ``system``; return its first index.

    When ``nonbonded`` (the environment's NonbondedForce) is given, the ligand's
    charges and LJ parameters are added to it for ligand-environment
    interactions, and every ligand-ligand pair is excluded there because the
    intramolecular MMFF pair force already covers it.
    """
    first = system.getNumParticles()
    for m in lig.masses_dalton:
        system.addParticle(m)
    if nonbonded is not None:
        for q, s, e in zip(lig.charges_e, lig.lj_sigma_nm, lig.lj_epsilon_kj):
            nonbonded.addParticle(q, s, e)
        for i in range(lig.n_atoms):
            for j in range(i + 1, lig.n_atoms):
                nonbonded.addException(first + i, first + j, 0.0, 0.1, 0.0)
    for f in _forces(lig, first):
        system.addForce(f)
    if constrain_h:
        for i, j, r0 in lig.h_bonds:
            system.addConstraint(first + i, first + j, r0)
    return first


def vacuum_system(lig: MMFFLigand) -> openmm.System:
    """The isolated ligand in vacuum, no constraints: its energy equals RDKit's MMFF94 energy."""
    system = openmm.System()
    add_ligand(system, lig)
    return system


def rdkit_energy_kcal_mol(mol: Chem.Mol, conf_id: int = -1, variant: str = "MMFF94") -> float:
    """RDKit's own MMFF94 energy of one conformer (reference for checks)."""
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props, confId=conf_id, ignoreInterfragInteractions=False)
    return float(ff.CalcEnergy())


def openmm_energy_kcal_mol(system: openmm.System, positions_angstrom: np.ndarray) -> float:
    """Potential energy of ``system`` at the given coordinates, on the Reference platform."""
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.asarray(positions_angstrom, dtype=float) / 10.0)
    energy_kj = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
        openmm.unit.kilojoule_per_mole
    )
    return energy_kj / KJ_PER_KCAL


# --------------------------------------------------------------------------- helpers

_MMFF_ELEMENTS = frozenset({"H", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Br", "I", "Fe", "Zn", "Ca", "Mg", "Na", "K", "Li", "Cu"})


def _forces(lig: MMFFLigand, first: int) -> list[openmm.Force]:
    """One OpenMM force per MMFF term, particle indices shifted by ``first``."""
    o = first
    forces: list[openmm.Force] = []

    bond = openmm.CustomBondForce("0.5*kb*dr^2*(1 + cs*dr + (7/12)*cs^2*dr^2); dr=r-r0; cs=-20")
    bond.addPerBondParameter("r0")
    bond.addPerBondParameter("kb")
    for i, j, r0, kb in lig.bonds:
        bond.addBond(o + i, o + j, [r0, kb])
    forces.append(bond)

    angle = openmm.CustomAngleForce("0.5*ka*dt^2*(1 + cb*dt); dt=theta-theta0; cb=-0.4")
    angle.addPerAngleParameter("theta0")
    angle.addPerAngleParameter("ka")
    for i, j, k, t0, ka in lig.angles:
        angle.addAngle(o + i, o + j, o + k, [t0, ka])
    forces.append(angle)

    if lig.linear_angles:
        lin = openmm.CustomAngleForce("ka*(1 + cos(theta))")
        lin.addPerAngleParameter("ka")
        for i, j, k, ka in lig.linear_angles:
            lin.addAngle(o + i, o + j, o + k, [ka])
        forces.append(lin)

    sb = openmm.CustomCompoundBondForce(
        3, "(kijk*(distance(p1,p2)-rij0) + kkji*(distance(p3,p2)-rkj0))*(angle(p1,p2,p3)-theta0)"
    )
    for p in ("rij0", "rkj0", "theta0", "kijk", "kkji"):
        sb.addPerBondParameter(p)
    for i, j, k, rij0, rkj0, t0, kijk, kkji in lig.stretch_bends:
        sb.addBond([o + i, o + j, o + k], [rij0, rkj0, t0, kijk, kkji])
    forces.append(sb)

    # Wilson angle chi of atom l (p4) out of the plane p1-p2-p3, p2 the centre.
    oop = openmm.CustomCompoundBondForce(
        4,
        "0.5*koop*chi^2; chi=asin(min(1, max(-1, s)));"
        "s=(nx*cx+ny*cy+nz*cz)/sqrt((nx^2+ny^2+nz^2)*(cx^2+cy^2+cz^2));"
        "nx=ay*bz-az*by; ny=az*bx-ax*bz; nz=ax*by-ay*bx;"
        "ax=x1-x2; ay=y1-y2; az=z1-z2; bx=x3-x2; by=y3-y2; bz=z3-z2; cx=x4-x2; cy=y4-y2; cz=z4-z2",
    )
    oop.addPerBondParameter("koop")
    for i, j, k, l, koop in lig.oops:
        oop.addBond([o + i, o + j, o + k, o + l], [koop])
    forces.append(oop)

    tors = openmm.PeriodicTorsionForce()
    for i, j, k, l, v1, v2, v3 in lig.torsions:
        # 0.5*(V1(1+cos φ) + V2(1-cos 2φ) + V3(1+cos 3φ)) as three periodic terms.
        for n, phase, v in ((1, 0.0, v1), (2, math.pi, v2), (3, 0.0, v3)):
            if v != 0.0:
                tors.addTorsion(o + i, o + j, o + k, o + l, n, phase, 0.5 * v)
    forces.append(tors)

    pair = openmm.CustomBondForce(
        "eps*(1.07*rs/(r+0.07*rs))^7*(1.12*rs^7/(r^7+0.12*rs^7)-2) + coul*qq/(r+0.005)"
        f"; coul={_COULOMB_KJ_NM!r}"
    )
    for p in ("rs", "eps", "qq"):
        pair.addPerBondParameter(p)
    for i, j, rs, eps, qq in lig.pairs:
        pair.addBond(o + i, o + j, [rs, eps, qq])
    forces.append(pair)
    return forces
