"""Docking with AutoDock Vina: ligands prepared with RDKit (``ligands``) and typed with meeko.

One Vina object per receptor computes the grid maps for the box once and is
reused for every ligand of a batch (maps cost seconds; a ligand at low
exhaustiveness costs about as much). With a fixed seed a ligand's result does
not depend on which batch or rank docked it, so re-runs and other backends
reproduce the same scores.

Entry point, one process or many ranks (``mpiexec -n N``, ``srun -n N``, Flux):

    python -m impeccable.stages.dock --receptor data/receptors/4jsv --ligands shard.csv --out-dir out/

Rank r of N docks the records whose index modulo N is r (``library.iter_shard``)
and writes ``out/dock.rank<r>.jsonl`` atomically. Ranks share nothing, so the
rank and size come from the launcher's environment (PMI, Open MPI, Slurm, Flux)
and MPI itself is not initialised: the same command runs under any launcher.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign

from .errors import StageInputError
from .library import iter_shard
from .ligands import LigandFailure, PreparedLigand, prepare_ligand
from .receptor import BindingSite, Receptor, load_receptor, load_site

__all__ = ["DEFAULT_DOCK_SEED", "DockResult", "Docker", "dock_ligands", "redock_reference", "read_dock_results", "mpi_rank_size", "main"]


DEFAULT_DOCK_SEED = 42


@dataclass(frozen=True)
class DockResult:
    id: str
    smiles: str
    score_kcal_mol: float  # Vina score of the best pose (lower is better)
    pose_sdf: str  # best pose, with hydrogens, as an MDL molblock
    runtime_s: float


class Docker:
    """Vina with the receptor and box loaded once; ``dock(id, smiles)`` per ligand."""

    def __init__(self, receptor: Receptor, *, site: BindingSite | None = None, exhaustiveness: int = 8,
                 n_poses: int = 1, seed: int = DEFAULT_DOCK_SEED, cpu: int = 1) -> None:
        from vina import Vina

        if exhaustiveness < 1:
            raise StageInputError(f"exhaustiveness must be >= 1, got {exhaustiveness}")
        self.exhaustiveness, self.n_poses = exhaustiveness, n_poses
        site = site or receptor.site
        self.vina = Vina(sf_name="vina", cpu=cpu, seed=seed, verbosity=0)
        self.vina.set_receptor(rigid_pdbqt_filename=str(receptor.pdbqt_path))
        self.vina.compute_vina_maps(center=list(site.center_angstrom), box_size=list(site.size_angstrom))

    def dock(self, cid: str, smiles: str, *, exhaustiveness: int | None = None) -> DockResult | LigandFailure:
        """Prepare and dock one molecule; never raises for a bad molecule."""
        prepared = prepare_ligand(cid, smiles)
        if isinstance(prepared, LigandFailure):
            return prepared
        try:
            return self.dock_prepared(prepared, exhaustiveness=exhaustiveness)
        except Exception as exc:  # noqa: BLE001 - one bad molecule must not end a batch
            return LigandFailure(cid, smiles, f"docking failed: {type(exc).__name__}: {exc}")

    def dock_prepared(self, ligand: PreparedLigand, *, exhaustiveness: int | None = None) -> DockResult:
        from meeko import MoleculePreparation, PDBQTMolecule, PDBQTWriterLegacy, RDKitMolCreate

        t0 = time.perf_counter()
        setups = MoleculePreparation().prepare(ligand.mol)
        pdbqt, ok, error = PDBQTWriterLegacy.write_string(setups[0])
        if not ok:
            raise ValueError(f"meeko could not type the ligand: {error}")
        self.vina.set_ligand_from_string(pdbqt)
        self.vina.dock(exhaustiveness=exhaustiveness or self.exhaustiveness, n_poses=self.n_poses)
        score = float(self.vina.energies(n_poses=1)[0][0])
        poses = RDKitMolCreate.from_pdbqt_mol(PDBQTMolecule(self.vina.poses(n_poses=1), skip_typing=True))
        pose = poses[0]
        pose.SetProp("_Name", ligand.id)
        return DockResult(ligand.id, ligand.smiles, score, Chem.MolToMolBlock(pose), time.perf_counter() - t0)


def dock_ligands(receptor: Receptor, records: Iterable[tuple[str, str]], *, site: BindingSite | None = None,
                 exhaustiveness: int = 8, n_poses: int = 1, seed: int = DEFAULT_DOCK_SEED,
                 cpu: int = 1) -> Iterator[DockResult | LigandFailure]:
    """Dock each (id, smiles); a molecule that fails any step yields a LigandFailure and the batch goes on."""
    docker = Docker(receptor, site=site, exhaustiveness=exhaustiveness, n_poses=n_poses, seed=seed, cpu=cpu)
    for cid, smiles in records:
        yield docker.dock(cid, smiles)


def redock_reference(receptor: Receptor, *, exhaustiveness: int = 16, seed: int = DEFAULT_DOCK_SEED) -> tuple[float, float]:
    """Re-dock the co-crystal ligand from a fresh conformer; (Vina score, heavy-atom RMSD to the crystal pose).

    The crystal coordinates are not given to Vina: the ligand is re-embedded
    from its graph, so the RMSD measures whether docking finds the pose.
    """
    if receptor.reference_ligand_path is None:
        raise StageInputError(f"{receptor.site.source}: no reference_ligand to redock")
    crystal = Chem.MolFromMolFile(str(receptor.reference_ligand_path), removeHs=False)
    if crystal is None:
        raise StageInputError(f"{receptor.reference_ligand_path}: not a readable SDF/MOL file")
    mol = Chem.AddHs(Chem.Mol(crystal, confId=-1))
    mol.RemoveAllConformers()
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise StageInputError(f"{receptor.reference_ligand_path}: the ligand could not be embedded")
    AllChem.MMFFOptimizeMolecule(mol)
    prepared = PreparedLigand("reference", Chem.MolToSmiles(crystal), Chem.MolToSmiles(crystal),
                              Chem.GetFormalCharge(mol), mol)
    result = Docker(receptor, exhaustiveness=exhaustiveness, seed=seed).dock_prepared(prepared)
    pose = Chem.RemoveHs(Chem.MolFromMolBlock(result.pose_sdf, removeHs=False))
    reference = Chem.RemoveHs(crystal)
    pose = AllChem.AssignBondOrdersFromTemplate(reference, pose)
    rmsd = rdMolAlign.CalcRMS(pose, reference)  # symmetry-aware, no fitting: the pose in the receptor frame
    return result.score_kcal_mol, float(rmsd)


def read_dock_results(out_dir: str | os.PathLike[str]) -> Iterator[dict]:
    """Every line of every ``dock.rank*.jsonl`` in ``out_dir``: a result or {"id", "smiles", "error"}."""
    for path in sorted(Path(out_dir).glob("dock.rank*.jsonl")):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def mpi_rank_size() -> tuple[int, int]:
    """(rank, size) from the launcher: mpiexec (PMI / Open MPI), srun (Slurm) or Flux; (0, 1) alone."""
    for rank_var, size_var in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                               ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"), ("FLUX_TASK_RANK", "FLUX_JOB_SIZE")):
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m impeccable.stages.dock", description=__doc__.split("\n\n")[0])
    p.add_argument("--receptor", required=True, type=Path, help="receptor folder (receptor.pdbqt, site.toml)")
    p.add_argument("--site", type=Path, help="another site.toml (box)")
    p.add_argument("--ligands", required=True, type=Path, help="CSV (id,smiles) or .smi")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--exhaustiveness", type=int, default=8)
    p.add_argument("--n-poses", type=int, default=1)
    p.add_argument("--seed", type=int, default=DEFAULT_DOCK_SEED)
    p.add_argument("--cpu", type=int, default=1, help="Vina threads per rank")
    a = p.parse_args(argv)
    rank, size = mpi_rank_size()
    try:
        receptor = load_receptor(a.receptor)
        site = load_site(a.site) if a.site else None
        records = list(iter_shard(a.ligands, rank, size)) if size > 1 else None
        if records is None:
            records = list(iter_shard(a.ligands, 0, 1))
        results = dock_ligands(receptor, records, site=site, exhaustiveness=a.exhaustiveness,
                               n_poses=a.n_poses, seed=a.seed, cpu=a.cpu)
        lines = []
        n_ok = 0
        for item in results:
            if isinstance(item, DockResult):
                n_ok += 1
                lines.append(json.dumps(asdict(item)))
            else:
                lines.append(json.dumps({"id": item.id, "smiles": item.input_smiles, "error": item.reason}))
    except StageInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _write_atomic(a.out_dir / f"dock.rank{rank}.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    print(f"rank {rank}/{size}: docked {n_ok} of {len(records)} -> {a.out_dir}")
    return 0


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
