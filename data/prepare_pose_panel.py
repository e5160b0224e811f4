"""Build the pose panel's complexes: receptors, crystal ligands and boxes, the same way as 4JSV and 1UOU.

    .venv/bin/python data/prepare_pose_panel.py                # every complex
    .venv/bin/python data/prepare_pose_panel.py --only 4jsx    # one

Sources (public domain PDB entries, as redistributed):

- 4JSX (mTOR + Torin2, ligand 17G) and 4JT5 (mTOR + PP242, ligand P2X): the LIT-PCBA MTORC1 templates in
  ``../shared/benchmarks/litpcba-mtorc1/`` (mol2 with hydrogens; bond orders from the CCD SMILES).
  Each is prepared for redocking into its own structure, and its ligand is also moved into the 4JSV
  frame for cross-docking: the mTOR kinase-domain C-alpha atoms (residues 2182-2516, matched by residue
  number) are superposed onto 4JSV chain B (Kabsch, then refitted on the atoms within 2 A, as PyMOL's
  ``align`` cycles do); the fit's RMSD is printed and written into the ligand's SDF.
- 1IA1, 1OF6, 1S3V: PoseBusters' example complexes (``datasets/pdb/`` of the installed posebusters
  wheel, MIT). 1IA1's NADPH (NDP B195), which lines the site, is kept in the receptor.

Every receptor is cut to the chains' residues with an atom within 20 A of the crystal ligand (Vina sees
nothing beyond its 8 A cutoff around a box that ends 5 A past the ligand), fixed, protonated at pH 7.4
and minimised with restraints by ``prepare_data``'s own steps, and typed by meeko. The box is the
ligand's extent plus 5 A, as for 4JSV.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))
sys.path.insert(1, str(DATA.parent))

from dock_litpcba import SET_DIR  # noqa: E402
from prepare_data import BOX_PADDING_ANGSTROM, _fix_protein, _write_pdbqt, _write_site  # noqa: E402

RECEPTORS = DATA / "receptors"
CROP_ANGSTROM = 20.0
KINASE_CA = (2182, 2516)  # mTOR's PI3K-like kinase domain (UniProt P42345)
SMILES = {
    "17G": "Nc1ccc(-c2ccc3ncc4ccc(=O)n(-c5cccc(C(F)(F)F)c5)c4c3c2)cn1",  # Torin2
    "P2X": "CC(C)n1nc(-c2cc3cc(O)ccc3[nH]2)c2c(N)ncnc21",  # PP242
    "TQ3": "Nc1nc(N)c2c(Sc3ccccc3)cccc2n1",
    "DTY": "NC(Cc1ccc(O)cc1)C(=O)O",  # stereo from the crystal
    "TQD": "COc1cc(N(C)CC2CCc3nc(N)nc(N)c3C2)cc(OC)c1OC",  # stereo from the crystal
    "NDP": "NC(=O)C1=CN(C=CC1)C1OC(COP(O)(=O)OP(O)(=O)OCC2OC(C(OP(O)(O)=O)C2O)n2cnc3c(N)ncnc23)C(O)C1O",
}
MTOR = {"4jsx": ("4JSX", "17G", "Torin2", "B"), "4jt5": ("4JT5", "P2X", "PP242", "A")}  # mTOR's chain in the mol2
POSEBUSTERS = {
    "1ia1": ("1IA1", "TQ3", ["B"], ("NDP", "B", 195)),
    "1of6": ("1OF6", "DTY", ["A", "B"], None),
    "1s3v": ("1S3V", "TQD", ["A"], None),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=[*MTOR, *POSEBUSTERS])
    a = p.parse_args(argv)
    for key in MTOR:
        if a.only in (None, key):
            build_mtor(key)
    for key in POSEBUSTERS:
        if a.only in (None, key):
            build_posebusters(key)
    return 0


# --------------------------------------------------------------------------- ligands


def ligand_from(raw, code: str, name: str, source: str):
    """The crystal ligand with bond orders from the CCD SMILES, stereo from 3D, hydrogens added."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    raw = Chem.RemoveHs(raw, sanitize=False)
    for atom in raw.GetAtoms():  # hydrogens come from the template's graph, not from the file's H count
        atom.SetNoImplicit(False)
        atom.SetNumExplicitHs(0)
        atom.SetNumRadicalElectrons(0)
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
    for bond in raw.GetBonds():  # only the connectivity of the file is used (its aromatic flags can be unkekulizable)
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    template = Chem.MolFromSmiles(SMILES[code])
    mol = AllChem.AssignBondOrdersFromTemplate(template, raw)
    Chem.AssignStereochemistryFrom3D(mol)
    if Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False) != Chem.MolToSmiles(template, isomericSmiles=False):
        raise SystemExit(f"{name}: the crystal ligand is not {code}")
    mol = Chem.AddHs(mol, addCoords=True)
    mol.SetProp("_Name", name)
    mol.SetProp("source", source)
    return mol


def _site(ligand, out: Path, keys: dict[str, object], what: str, key: str) -> None:
    """prepare_data's box (ligand extent + 5 A), naming this script as the one that rebuilds it."""
    _write_site(ligand, BOX_PADDING_ANGSTROM, out / "site.toml", keys, what, key)
    text = (out / "site.toml").read_text()
    (out / "site.toml").write_text(text.replace(f"prepare_data.py --only {key}", f"prepare_pose_panel.py --only {key}"))


def _write_sdf(mol, path: Path) -> None:
    from rdkit import Chem

    with Chem.SDWriter(str(path)) as writer:
        writer.write(mol)


# --------------------------------------------------------------------------- mTOR (LIT-PCBA templates)


def build_mtor(key: str) -> None:
    from rdkit import Chem

    pdb_id, code, drug, chain = MTOR[key]
    raw = Chem.MolFromMol2File(str(SET_DIR / f"{key}_ligand.mol2"), sanitize=False, removeHs=False)
    ligand = ligand_from(raw, code, f"{pdb_id}_{code}", f"PDB {pdb_id} {drug} ({code}), LIT-PCBA MTORC1 template")
    out = RECEPTORS / key
    out.mkdir(parents=True, exist_ok=True)
    lines = _mol2_protein_pdb(SET_DIR / f"{key}_protein.mol2", chain=chain)
    _receptor(lines, ligand, out, pdb_id, f"{pdb_id} MTOR (LIT-PCBA MTORC1 TEMPLATE), CROPPED", f"--only {key}")
    _write_sdf(ligand, out / f"ligand_{code}.sdf")
    _site(
        ligand,
        out,
        {"pdb_id": pdb_id, "ligand_resname": code, "reference_ligand": f"ligand_{code}.sdf", "hinge_residue": 2240},
        f"the mTOR ATP site, from the co-crystal {drug}",
        key,
    )
    # cross-docking reference: the same ligand in the 4JSV frame
    rot, shift, rmsd, n = superpose_ca(out / "receptor.pdb", RECEPTORS / "4jsv" / "receptor.pdb", KINASE_CA)
    moved = Chem.Mol(ligand)
    conf = moved.GetConformer()
    xyz = conf.GetPositions() @ rot.T + shift
    for i, p in enumerate(xyz):
        conf.SetAtomPosition(i, p.tolist())
    moved.SetProp("_Name", f"{pdb_id}_{code}_in_4JSV")
    moved.SetProp(
        "superposition",
        f"{n} kinase C-alpha atoms ({KINASE_CA[0]}-{KINASE_CA[1]}) onto 4JSV chain B, RMSD {rmsd:.2f} A",
    )
    cross = RECEPTORS / "4jsv" / "crossdock"
    cross.mkdir(exist_ok=True)
    _write_sdf(moved, cross / f"ligand_{code}_from_{key}.sdf")
    print(f"{pdb_id}: C-alpha fit onto 4JSV, {n} atoms, RMSD {rmsd:.2f} A")


def _mol2_protein_pdb(path: Path, chain: str) -> list[str]:
    """ATOM records (heavy atoms) of one chain of a Tripos mol2 protein, residue names and numbers from it."""
    text = path.read_text().split("@<TRIPOS>")
    atoms = next(s for s in text if s.startswith("ATOM")).splitlines()[1:]
    subst = next(s for s in text if s.startswith("SUBSTRUCTURE")).splitlines()[1:]
    chain_of = {f.split()[0]: f.split()[5] for f in subst if len(f.split()) > 5}
    out = []
    for line in atoms:
        f = line.split()
        if len(f) < 8 or f[5].startswith("H") or chain_of.get(f[6]) != chain:
            continue
        resname, resid = f[7][:3], int(f[7][3:])
        name = f[1] if len(f[1]) == 4 else f" {f[1]}"
        out.append(
            f"ATOM  {len(out) + 1:5d} {name:<4s} {resname} {chain}{resid:4d}    "
            f"{float(f[2]):8.3f}{float(f[3]):8.3f}{float(f[4]):8.3f}  1.00  0.00          {f[5][0]:>2s}"
        )
    return out


def superpose_ca(
    mobile_pdb: Path, target_pdb: Path, residues: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Rotation and shift taking ``mobile`` onto ``target`` by their C-alpha atoms in ``residues``."""
    a, b = _ca(mobile_pdb, residues), _ca(target_pdb, residues)
    common = sorted(set(a) & set(b))
    x, y = np.array([a[r] for r in common]), np.array([b[r] for r in common])
    keep = np.ones(len(common), dtype=bool)
    for _ in range(5):
        rot, shift = _kabsch(x[keep], y[keep])
        d = np.linalg.norm(x @ rot.T + shift - y, axis=1)
        new = d <= 2.0
        if new.sum() < 20 or np.array_equal(new, keep):
            break
        keep = new
    rot, shift = _kabsch(x[keep], y[keep])
    rmsd = float(np.sqrt(np.mean(np.sum((x[keep] @ rot.T + shift - y[keep]) ** 2, axis=1))))
    return rot, shift, rmsd, int(keep.sum())


def _ca(pdb: Path, residues: tuple[int, int]) -> dict[int, np.ndarray]:
    out = {}
    for line in pdb.read_text().splitlines():
        if line.startswith("ATOM") and line[12:16].strip() == "CA" and residues[0] <= int(line[22:26]) <= residues[1]:
            out[int(line[22:26])] = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
    return out


def _kabsch(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cx, cy = x.mean(axis=0), y.mean(axis=0)
    u, _, vt = np.linalg.svd((x - cx).T @ (y - cy))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, cy - cx @ rot.T


# --------------------------------------------------------------------------- PoseBusters examples


def build_posebusters(key: str) -> None:
    from rdkit import Chem

    pdb_id, code, chains, cofactor = POSEBUSTERS[key]
    spec = importlib.util.find_spec("posebusters")
    if spec is None or spec.origin is None:
        raise SystemExit("posebusters is not installed: it holds the example complexes")
    folder = Path(spec.origin).parent / "datasets" / "pdb" / key
    raw = Chem.MolFromMolFile(str(folder / f"{key}_ligand.sdf"), sanitize=False, removeHs=False)
    ligand = ligand_from(raw, code, f"{pdb_id}_{code}", f"PDB {pdb_id} {code}, via posebusters' datasets/pdb/{key}")
    out = RECEPTORS / key
    out.mkdir(parents=True, exist_ok=True)
    lines = (folder / f"{key}_protein_one_lig_removed.pdb").read_text().splitlines()
    protein = [ln for ln in lines if ln.startswith("ATOM") and ln[21] in chains]
    _receptor(
        protein,
        ligand,
        out,
        pdb_id,
        f"{pdb_id} CHAINS {''.join(chains)} FROM POSEBUSTERS' EXAMPLES, CROPPED",
        f"--only {key}",
    )
    if cofactor is not None:
        _add_cofactor(lines, cofactor, out)
    _write_sdf(ligand, out / f"ligand_{code}.sdf")
    _site(
        ligand,
        out,
        {
            "pdb_id": pdb_id,
            "chains": chains,
            "ligand_resname": code,
            "reference_ligand": f"ligand_{code}.sdf",
            **({"cofactor": f"{cofactor[0]} {cofactor[1]}{cofactor[2]}"} if cofactor else {}),
        },
        f"the {pdb_id} ligand site, from the co-crystal {code}",
        key,
    )
    print(f"{pdb_id}: receptor {out}")


def _receptor(atom_lines: list[str], ligand, out: Path, pdb_id: str, title: str, only: str) -> None:
    """Crop to whole residues near the ligand (TER at every break), fix, protonate, type for Vina."""
    xyz = ligand.GetConformer().GetPositions()
    residues: dict[tuple[str, int], list[str]] = {}
    near: set[tuple[str, int]] = set()
    for line in atom_lines:
        key = (line[21], int(line[22:26]))
        residues.setdefault(key, []).append(line)
        p = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
        if np.min(np.linalg.norm(xyz - p, axis=1)) <= CROP_ANGSTROM:
            near.add(key)
    order = list(residues)
    keep = [i for i, key in enumerate(order) if key in near]
    for i, j in zip(keep, keep[1:]):  # fill gaps of up to 4 residues of one chain
        if 1 < j - i <= 5 and order[i][0] == order[j][0]:
            keep += range(i + 1, j)
    segments: list[list[tuple[str, int]]] = []
    for i in sorted(set(keep)):
        key = order[i]
        if segments and segments[-1][-1][0] == key[0] and segments[-1][-1][1] == key[1] - 1:
            segments[-1].append(key)
        else:
            segments.append([key])
    kept: list[str] = []
    for seg in segments:
        if len(seg) >= 3:  # a lone residue or dipeptide has no amber14 terminal templates worth having
            kept += [line for key in seg for line in residues[key]] + ["TER"]
    header = [
        f"REMARK   1 {title} TO RESIDUES WITHIN {CROP_ANGSTROM:.0f} A OF THE LIGAND (BREAKS = TER)",
        f"REMARK   1 REBUILD: python data/prepare_pose_panel.py {only}",
    ]
    _fix_protein("\n".join(kept + ["END"]) + "\n", out / "receptor.pdb", header)
    _place_oxt(out / "receptor.pdb")
    _write_pdbqt(out / "receptor.pdb", out / "receptor.pdbqt")


def _place_oxt(pdb: Path) -> None:
    """Put every terminal OXT where an sp2 carboxylate has it: in the CA-C-O plane, opposite the bisector.

    pdbfixer sometimes adds the OXT of a chain break 1.8 A from CA (the restrained minimisation does not
    always undo it), and meeko then refuses the residue (carbon with five bonds).
    """
    lines = pdb.read_text().splitlines()
    xyz = lambda ln: np.array([float(ln[30:38]), float(ln[38:46]), float(ln[46:54])])  # noqa: E731
    atoms = {(ln[21], ln[22:27], ln[12:16].strip()): ln for ln in lines if ln.startswith("ATOM")}
    for i, ln in enumerate(lines):
        if ln.startswith("ATOM") and ln[12:16].strip() == "OXT":
            res = (ln[21], ln[22:27])
            ca, c, o = (xyz(atoms[(*res, name)]) for name in ("CA", "C", "O"))
            away = (c - ca) / np.linalg.norm(c - ca) + (c - o) / np.linalg.norm(c - o)
            new = c + 1.25 * away / np.linalg.norm(away)
            lines[i] = f"{ln[:30]}{new[0]:8.3f}{new[1]:8.3f}{new[2]:8.3f}{ln[54:]}"
    pdb.write_text("\n".join(lines) + "\n")


def _add_cofactor(lines: list[str], cofactor: tuple[str, str, int], out: Path) -> None:
    """A cofactor that lines the site: bond orders from its SMILES, hydrogens, Vina types by meeko,
    appended as rigid atoms to receptor.pdbqt and as HETATM records to receptor.pdb (for PoseBusters)."""
    from meeko import MoleculePreparation, PDBQTWriterLegacy
    from rdkit import Chem

    name, chain, resid = cofactor
    block = [
        ln
        for ln in lines
        if ln.startswith("HETATM") and ln[17:20] == name and ln[21] == chain and int(ln[22:26]) == resid
    ]
    raw = Chem.MolFromPDBBlock("\n".join(block) + "\nEND\n", removeHs=True, sanitize=False)
    mol = ligand_from(raw, name, f"{name}_{chain}{resid}", "cofactor")
    setup = MoleculePreparation().prepare(mol)[0]
    pdbqt, ok, err = PDBQTWriterLegacy.write_string(setup)
    if not ok:
        raise SystemExit(f"{name}: meeko cannot type the cofactor: {err}")
    rigid = [
        ln[:17] + f"{name} {chain}{resid:4d}" + ln[26:]
        for ln in pdbqt.splitlines()
        if ln.startswith(("ATOM", "HETATM"))
    ]
    with open(out / "receptor.pdbqt", "a") as fh:
        fh.write("\n".join(rigid) + "\n")
    for atom in mol.GetAtoms():
        info = Chem.AtomPDBResidueInfo(
            f"{atom.GetSymbol()}{atom.GetIdx() + 1}"[:4].ljust(4),
            residueName=name,
            residueNumber=resid,
            chainId=chain,
            isHeteroAtom=True,
        )
        atom.SetMonomerInfo(info)
    het = [ln for ln in Chem.MolToPDBBlock(mol, flavor=4).splitlines() if ln.startswith("HETATM")]
    pdb = (out / "receptor.pdb").read_text().splitlines()
    end = next((i for i, ln in enumerate(pdb) if ln.startswith("END")), len(pdb))
    (out / "receptor.pdb").write_text("\n".join(pdb[:end] + het + pdb[end:]) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
