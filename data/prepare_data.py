"""Rebuild every file under data/ from its public source.

    .venv/bin/python data/prepare_data.py            # library + receptor
    .venv/bin/python data/prepare_data.py --only receptor
    .venv/bin/python data/prepare_data.py --only library-full   # all of MOSES, outside git

Sources (see data/README.md for versions and licences):

- library: ``moses/dataset/data/train.csv.gz`` inside the ``molsets`` wheel
  (MOSES, MIT). The wheel is fetched with ``pip download --no-deps`` into a
  temporary folder and read as a zip; molsets is never installed or imported.
  ``library-full`` writes all 1,584,663 training SMILES (same ids as the sample)
  to a gzipped CSV that .gitignore keeps out of git (built on request only).
- receptor: ``tests/data/4JSV.pdb`` of the installed ``pdbfixer`` package
  (PDB entry 4JSV, mTOR dN-mLST8 with ADP and MgF3; PDB data are public domain).
- second complex (redocking check only): ``datasets/pdb/1uou/`` of the installed
  ``posebusters`` package (MIT): PDB entry 1UOU, human thymidine phosphorylase
  with the inhibitor tipiracil (CCD CMU), protein and ligand as PoseBusters ships them.

The outputs are deterministic: the same wheel, seed and tool versions give the
same files.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import io
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent
REPO = DATA.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import the checkout's stages

from impeccable.stages.library import LibraryRecord, sample_records, write_library  # noqa: E402

MOLSETS_VERSION = "0.3.1"
MOSES_MEMBER = "moses/dataset/data/train.csv.gz"
LIBRARY_SIZE = 20_000
LIBRARY_SEED = 20_130_322  # 4JSV deposition date, nothing deeper
LIBRARY_OUT = DATA / "library" / "moses_20k.csv"
FULL_LIBRARY_OUT = DATA / "library" / "moses_full.csv.gz"  # not in git (.gitignore): ~25 MB, built on request
FULL_LIBRARY_SIZE = 1_584_663

PDB_ID = "4JSV"
CHAIN = "B"
# FRB + kinase domain + FATC of mTOR (UniProt P42345 numbering, as in the file):
# every residue within 16 A of the ADP is kept; the FAT helical repeats
# (1385-2002), 20+ A from the site, are cut to keep MD on a laptop affordable.
RESIDUE_RANGE = (2003, 2549)
LIGAND_RESNAME = "ADP"
LIGAND_RESID = 2601
ADP_SMILES = "Nc1ncnc2c1ncn2[C@@H]1O[C@H](COP(=O)(O)OP(=O)(O)O)[C@@H](O)[C@H]1O"  # PDB CCD ADP
PH = 7.4
HINGE_RESIDUE = 2240  # Val2240: the hinge backbone ATP-site inhibitors H-bond to (stages/hinge.py)
BOX_PADDING_ANGSTROM = 5.0  # added on each side of the ligand's extent
RECEPTOR_OUT = DATA / "receptors" / "4jsv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        choices=["library", "library-full", "receptor", "receptor-1uou", "heterogens"],
        help="rebuild one part only (library-full is built only when named)",
    )
    parser.add_argument("--molsets-wheel", type=Path, help="a downloaded molsets wheel (skips pip download)")
    parser.add_argument("--library-size", type=int, default=LIBRARY_SIZE)
    parser.add_argument("--padding", type=float, default=BOX_PADDING_ANGSTROM, help="box padding, angstrom")
    args = parser.parse_args(argv)
    if args.only in (None, "library"):
        build_library(args.molsets_wheel, args.library_size)
    if args.only == "library-full":
        build_full_library(args.molsets_wheel)
    if args.only in (None, "receptor"):
        build_receptor(args.padding)
    if args.only in (None, "receptor-1uou"):
        build_receptor_1uou(args.padding)
    if args.only == "heterogens":  # the heterogen record alone, without rebuilding the protein
        write_heterogens()
    return 0


def write_heterogens() -> None:
    """``receptors/4jsv/heterogens.toml``: every heterogen of chain B near the box and its fate per metals mode."""
    from impeccable.stages.metals import survey, write_provenance
    from impeccable.stages.receptor import load_site

    site = load_site(RECEPTOR_OUT / "site.toml")
    found = survey(
        _pdbfixer_test_file(f"{PDB_ID}.pdb").read_text(), site.center_angstrom, site.size_angstrom, chain=CHAIN
    )
    write_provenance(RECEPTOR_OUT / "heterogens.toml", found, f"PDB {PDB_ID} chain {CHAIN}")
    for h in found:
        print(f"heterogens: {h.label}: auto {h.reason('auto')}")


# --------------------------------------------------------------------------- library


def build_library(wheel: Path | None, size: int) -> None:
    """Sample ``size`` MOSES training SMILES with ids ``MOSES-<row index>``."""
    with _molsets_wheel(wheel) as path:
        sample = sample_records(_moses_train(path), size, seed=LIBRARY_SEED)
    n = write_library(sample, LIBRARY_OUT)
    print(f"library: {n} records -> {LIBRARY_OUT.relative_to(REPO)}")


def build_full_library(wheel: Path | None) -> None:
    """All MOSES training SMILES, streamed into a gzipped ``id,smiles`` CSV with the sample's ids.

    Too big for git (~25 MB gzipped, 1.6 M rows): .gitignore keeps it out and campaigns/moses_full.toml
    says how to build it. Written atomically, so an interrupted build leaves no partial library.
    """
    with _molsets_wheel(wheel) as path:
        n = write_library(_moses_train(path), FULL_LIBRARY_OUT)
    if n != FULL_LIBRARY_SIZE:
        raise SystemExit(f"{FULL_LIBRARY_OUT}: {n} records, expected {FULL_LIBRARY_SIZE} (another molsets wheel?)")
    size_mb = FULL_LIBRARY_OUT.stat().st_size / 1e6
    print(f"library: {n} records -> {FULL_LIBRARY_OUT.relative_to(REPO)} ({size_mb:.1f} MB)")


@contextmanager
def _molsets_wheel(wheel: Path | None) -> Iterator[Path]:
    """The given molsets wheel, or one fetched with ``pip download --no-deps`` into a temporary folder."""
    if wheel is not None:
        yield wheel
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"molsets=={MOLSETS_VERSION}", "-d", tmp],
            check=True,
        )
        yield next(Path(tmp).glob("molsets-*.whl"))


def _moses_train(wheel: Path) -> Iterator[LibraryRecord]:
    """Stream the MOSES training set out of the wheel; the id is the 0-based data row."""
    with zipfile.ZipFile(wheel) as zf, zf.open(MOSES_MEMBER) as raw:
        text = io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")
        header = text.readline().strip()
        if header != "SMILES":
            raise SystemExit(f"{wheel}:{MOSES_MEMBER}: unexpected header {header!r}")
        for row, line in enumerate(text):
            smiles = line.strip()
            if smiles:
                yield LibraryRecord(f"MOSES-{row:07d}", smiles)


# --------------------------------------------------------------------------- receptor


def build_receptor(padding_angstrom: float) -> None:
    """Crop, fix, protonate and convert chain B of 4JSV; extract ADP; write the site box."""
    source = _pdbfixer_test_file(f"{PDB_ID}.pdb")
    lines = source.read_text().splitlines()
    RECEPTOR_OUT.mkdir(parents=True, exist_ok=True)

    pdb_out = RECEPTOR_OUT / "receptor.pdb"
    header = [
        f"REMARK   1 {PDB_ID} CHAIN {CHAIN} RESIDUES {RESIDUE_RANGE[0]}-{RESIDUE_RANGE[1]} (CHAIN BREAKS = TER)",
        "REMARK   1 REBUILD: python data/prepare_data.py --only receptor",
    ]
    _fix_protein(_crop_chain(lines, CHAIN, RESIDUE_RANGE), pdb_out, header)
    _check_amber(pdb_out)
    _write_pdbqt(pdb_out, RECEPTOR_OUT / "receptor.pdbqt")

    ligand = _reference_ligand(lines)
    ligand_out = RECEPTOR_OUT / f"ligand_{LIGAND_RESNAME}.sdf"
    from rdkit import Chem

    with Chem.SDWriter(str(ligand_out)) as writer:
        writer.write(ligand)
    _write_site(
        ligand,
        padding_angstrom,
        RECEPTOR_OUT / "site.toml",
        {
            "pdb_id": PDB_ID,
            "chain": CHAIN,
            "residue_range": list(RESIDUE_RANGE),
            "ligand_resname": LIGAND_RESNAME,
            "ligand_resid": LIGAND_RESID,
            "reference_ligand": ligand_out.name,
            "hinge_residue": HINGE_RESIDUE,
        },
        "the mTOR ATP site, from the co-crystal ADP",
        "receptor",
    )
    write_heterogens()
    for f in sorted(RECEPTOR_OUT.iterdir()):
        print(f"receptor: {f.relative_to(REPO)} ({f.stat().st_size // 1024} KiB)")


SECOND_ID = "1UOU"
SECOND_OUT = DATA / "receptors" / "1uou"
TIPIRACIL_SMILES = "N=C1CCCN1Cc1[nH]c(=O)[nH]c(=O)c1Cl"  # PDB CCD CMU


def build_receptor_1uou(padding_angstrom: float) -> None:
    """A second complex to redock into: 1UOU from PoseBusters' examples, fixed and typed like 4JSV."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    spec = importlib.util.find_spec("posebusters")
    if spec is None or spec.origin is None:
        raise SystemExit("posebusters is not installed: it holds the 1UOU files")
    folder = Path(spec.origin).parent / "datasets" / "pdb" / "1uou"
    lines = (folder / "1uou_protein_one_lig_removed.pdb").read_text().splitlines()
    SECOND_OUT.mkdir(parents=True, exist_ok=True)
    pdb_out = SECOND_OUT / "receptor.pdb"
    header = [
        f"REMARK   1 {SECOND_ID} CHAIN A (THYMIDINE PHOSPHORYLASE, CHAIN BREAKS = TER), FROM POSEBUSTERS' EXAMPLES",
        "REMARK   1 REBUILD: python data/prepare_data.py --only receptor-1uou",
    ]
    _fix_protein(_crop_chain(lines, "A", (1, 9999)), pdb_out, header)
    _check_amber(pdb_out)
    _write_pdbqt(pdb_out, SECOND_OUT / "receptor.pdbqt")
    raw = Chem.MolFromMolFile(str(folder / "1uou_ligand.sdf"))
    ligand = AllChem.AssignBondOrdersFromTemplate(Chem.MolFromSmiles(TIPIRACIL_SMILES), raw)
    if Chem.MolToSmiles(ligand) != Chem.CanonSmiles(TIPIRACIL_SMILES):
        raise SystemExit("1UOU ligand: not tipiracil (CCD CMU)")
    ligand = Chem.AddHs(ligand, addCoords=True)
    ligand.SetProp("_Name", f"{SECOND_ID}_A_CMU")
    ligand.SetProp("source", f"PDB {SECOND_ID} tipiracil (CMU), via posebusters' datasets/pdb/1uou")
    ligand_out = SECOND_OUT / "ligand_CMU.sdf"
    with Chem.SDWriter(str(ligand_out)) as writer:
        writer.write(ligand)
    _write_site(
        ligand,
        padding_angstrom,
        SECOND_OUT / "site.toml",
        {"pdb_id": SECOND_ID, "chain": "A", "ligand_resname": "CMU", "reference_ligand": ligand_out.name},
        "the thymidine phosphorylase active site, from the co-crystal tipiracil",
        "receptor-1uou",
    )
    for f in sorted(SECOND_OUT.iterdir()):
        print(f"receptor: {f.relative_to(REPO)} ({f.stat().st_size // 1024} KiB)")


def _pdbfixer_test_file(name: str) -> Path:
    spec = importlib.util.find_spec("pdbfixer")
    if spec is None or spec.origin is None:
        raise SystemExit("pdbfixer is not installed: it holds the 4JSV source file")
    path = Path(spec.origin).parent / "tests" / "data" / name
    if not path.is_file():
        raise SystemExit(f"{path}: not found in the installed pdbfixer")
    return path


def _crop_chain(lines: list[str], chain: str, residue_range: tuple[int, int]) -> str:
    """ATOM records of the chain and residue range, with TER at every chain break.

    OpenMM starts a new chain after each TER, so a break (missing loop) becomes
    two charged termini instead of a 20 A peptide bond.
    """
    out: list[str] = []
    prev: int | None = None
    lo, hi = residue_range
    for line in lines:
        if not line.startswith("ATOM") or line[21] != chain:
            continue
        resid = int(line[22:26])
        if not lo <= resid <= hi:
            continue
        if prev is not None and resid > prev + 1:
            out.append("TER")
        prev = resid
        out.append(line)
    out += ["TER", "END"]
    return "\n".join(out) + "\n"


def _fix_protein(pdb_text: str, out: Path, header: list[str]) -> None:
    """pdbfixer: no loop building, complete side chains, hydrogens at pH 7.4."""
    from openmm.app import ForceField, PDBFile
    from pdbfixer import PDBFixer

    fixer = PDBFixer(pdbfile=io.StringIO(pdb_text))
    fixer.findMissingResidues()
    fixer.missingResidues = {}  # gaps stay gaps (termini), see _crop_chain
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=0)
    # amber14 places the hydrogens (right bond lengths); pdbfixer's default
    # restraint model leaves X-H at ~1.19 A, which confuses proximity bonding.
    fixer.addMissingHydrogens(PH, forcefield=ForceField("amber14-all.xml"))
    crystal = {(line[22:27], line[12:16].strip()) for line in pdb_text.splitlines() if line.startswith("ATOM")}
    positions = _relax(fixer.topology, fixer.positions, crystal)
    buffer = io.StringIO()
    PDBFile.writeFile(fixer.topology, positions, buffer, keepIds=True)
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("pdbfixer", "openmm"))
    header = [header[0], f"REMARK   1 FIXED AND PROTONATED AT PH {PH} WITH {versions}", *header[1:]]
    body = [line for line in buffer.getvalue().splitlines() if not line.startswith("REMARK")]
    out.write_text("\n".join(header + body) + "\n")


def _relax(topology, positions, crystal: set[tuple[str, str]]):
    """Restrained amber14 minimisation: fixes the atoms pdbfixer placed, keeps the crystal.

    pdbfixer's added atoms can be badly placed (a C-terminal OXT 1.7 A from CA
    at a chain break); heavy atoms seen in the crystal are held by a
    24 kcal/mol/A^2 harmonic restraint, so they move by a few tenths of an angstrom at most.
    """
    import openmm
    from openmm import unit
    from openmm.app import ForceField, NoCutoff

    system = ForceField("amber14-all.xml").createSystem(topology, nonbondedMethod=NoCutoff, constraints=None)
    restraint = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    restraint.addGlobalParameter("k", 10_000.0)  # kJ/mol/nm^2
    for name in ("x0", "y0", "z0"):
        restraint.addPerParticleParameter(name)
    held = []
    for atom in topology.atoms():
        key = (f"{atom.residue.id:>4}{atom.residue.insertionCode or ' '}", atom.name)
        if atom.element.symbol != "H" and key in crystal:
            restraint.addParticle(atom.index, positions[atom.index].value_in_unit(unit.nanometer))
            held.append(atom.index)
    system.addForce(restraint)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
    relaxed = context.getState(getPositions=True).getPositions(asNumpy=True)
    before = np.array(positions.value_in_unit(unit.angstrom))[held]
    shift = np.sqrt(((relaxed.value_in_unit(unit.angstrom)[held] - before) ** 2).sum(axis=1))
    print(
        f"receptor: restrained minimisation, {len(held)} crystal heavy atoms held, "
        f"RMSD {np.sqrt((shift**2).mean()):.2f} A, max shift {shift.max():.2f} A"
    )
    return relaxed


def _check_amber(pdb: Path) -> None:
    """The MD stage loads this file with amber14: fail here, not there."""
    from openmm.app import ForceField, NoCutoff, PDBFile

    structure = PDBFile(str(pdb))
    ForceField("amber14-all.xml").createSystem(structure.topology, nonbondedMethod=NoCutoff)
    n_res = structure.topology.getNumResidues()
    print(f"receptor: amber14 createSystem ok ({structure.topology.getNumAtoms()} atoms, {n_res} residues)")


def _write_pdbqt(pdb: Path, out: Path) -> None:
    """meeko's receptor preparation (Vina atom types, Gasteiger charges)."""
    script = Path(sys.executable).parent / "mk_prepare_receptor.py"
    basename = out.with_suffix("")
    subprocess.run(
        [sys.executable, str(script), "--read_pdb", str(pdb), "-o", str(basename), "-p"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not out.is_file():
        raise SystemExit(f"meeko wrote no {out}")


def _reference_ligand(lines: list[str]):
    """The co-crystal ADP of the chain with bond orders from the CCD SMILES and hydrogens added."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    block = [
        line
        for line in lines
        if line.startswith("HETATM")
        and line[17:20] == LIGAND_RESNAME
        and line[21] == CHAIN
        and int(line[22:26]) == LIGAND_RESID
    ]
    raw = Chem.MolFromPDBBlock("\n".join(block) + "\nEND\n", removeHs=True, sanitize=True)
    if raw is None:
        raise SystemExit(f"cannot read {LIGAND_RESNAME} {CHAIN}{LIGAND_RESID} from {PDB_ID}")
    template = Chem.MolFromSmiles(ADP_SMILES)
    mol = AllChem.AssignBondOrdersFromTemplate(template, raw)
    Chem.AssignStereochemistryFrom3D(mol)
    for atom in mol.GetAtoms():  # a phosphate's two free oxygens are equivalent: P is not a stereocentre
        if atom.GetSymbol() == "P":
            atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    if Chem.MolToSmiles(mol) != Chem.MolToSmiles(template):
        raise SystemExit(f"{LIGAND_RESNAME}: crystal stereochemistry differs from the CCD template")
    mol = Chem.AddHs(mol, addCoords=True)
    mol.SetProp("_Name", f"{PDB_ID}_{CHAIN}_{LIGAND_RESNAME}_{LIGAND_RESID}")
    mol.SetProp("source", f"PDB {PDB_ID} chain {CHAIN} {LIGAND_RESNAME} {LIGAND_RESID}")
    mol.SetProp("protonation", "neutral, as in the PDB chemical component dictionary")
    return mol


def _write_site(ligand, padding_angstrom: float, out: Path, keys: dict[str, object], what: str, only: str) -> None:
    """Box centre = centre of the ligand's heavy-atom extent; size = extent + 2 x padding."""
    heavy = [a.GetIdx() for a in ligand.GetAtoms() if a.GetAtomicNum() > 1]
    xyz = ligand.GetConformer().GetPositions()[heavy]
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    centre = (lo + hi) / 2
    size = (hi - lo) + 2 * padding_angstrom
    fmt = lambda v: "[" + ", ".join(f"{x:.3f}" for x in np.asarray(v)) + "]"  # noqa: E731
    toml = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    out.write_text(
        f"# Docking box of {what}.\n"
        f"# Rebuild: python data/prepare_data.py --only {only}\n"
        f"{toml}"
        f"padding_angstrom = {padding_angstrom:.1f}\n"
        "# angstrom\n"
        f"center = {fmt(centre)}\n"
        f"size = {fmt(size)}\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
