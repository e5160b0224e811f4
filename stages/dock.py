"""AutoDock Vina docking of prepared ligands into a receptor's site box.

Why this shape: computing Vina's grid maps costs about as much as docking one
small molecule, so one :class:`Docker` per receptor computes them once and
docks every ligand of a batch against them. Each compound is docked as every
one of its states (:func:`ligands.prepare_states`: salts stripped,
stereoisomers of unassigned centres, microstates at pH 7.4, each embedded) and
scores as its best state, each state's Vina score plus its microstate penalty
(0 for the dominant microstate); the result names that state. Ligands are typed for
Vina by meeko. A molecule that fails anywhere (SMILES, embedding, meeko, Vina)
in every state is reported as a :class:`LigandFailure` and the batch goes on.
With a fixed seed a ligand's result does not depend on which batch or rank
docked it.

Command line, one process or many ranks (``mpiexec -n N``, ``srun -n N``, Flux)::

    python -m impeccable.stages.dock --receptor data/receptors/4jsv \\
        --ligands lib.csv --out-dir out/ [--exhaustiveness 8] [--seed S] [--cpu 1] [--site site.toml]
        [--max-stereoisomers 8] [--max-protomers 2] [--ph 7.4]

Rank ``r`` of ``n`` docks records ``r, r+n, ...`` of the library
(:func:`library.iter_shard`) and writes ``OUT_DIR/dock.rank{r}.jsonl``
one line per molecule, flushed as each molecule ends (:mod:`.rankfiles`), so a
rank killed at any instant leaves every molecule it finished: one JSON object per molecule, ``{"id", "smiles",
"score_kcal_mol", "pose_sdf", "runtime_s", "state_smiles", "n_states",
"state_scores_kcal_mol", "state_penalties_kcal_mol", "penalty_kcal_mol"}`` or
``{"id", "smiles", "error"}``. ``state_smiles`` is the best state (stereo and
charges), ``n_states`` how many states were docked, ``state_scores_kcal_mol``
their Vina scores in enumeration order and ``state_penalties_kcal_mol`` their
microstate penalties (0 for the dominant state at the pH); a compound's
``score_kcal_mol`` is its best state's Vina score plus that state's penalty.
Ranks share nothing, so rank and size come from the launcher's environment
and MPI is only initialised (mpi4py) if a launcher set a rank but no size.
:func:`read_dock_results` reads every complete line of every rank file back.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem

from .errors import StageInputError
from .library import iter_shard
from .ligands import LigandFailure, PreparedLigand, StateOptions, prepare_states
from .quiet import quiet_rdkit
from .rankfiles import RankLines, rank_file, read_rank_files
from .receptor import BindingSite, Receptor, load_receptor

__all__ = [
    "DEFAULT_DOCK_SEED",
    "DockResult",
    "RedockResult",
    "StateOptions",
    "LigandFailure",
    "Docker",
    "dock_ligands",
    "dock_one",
    "redock_reference",
    "heavy_atom_rmsd",
    "read_dock_results",
    "result_to_json",
    "rank_file",
    "mpi_rank_size",
    "command",
    "main",
]

DEFAULT_DOCK_SEED = 42


@dataclass(frozen=True)
class DockResult:
    """The best pose of one ligand: Vina score (kcal/mol, lower binds better) and the pose as SDF."""

    id: str
    smiles: str  # the input SMILES, as in the library
    score_kcal_mol: float
    pose_sdf: str  # molblock with hydrogens, in the receptor's frame
    runtime_s: float  # preparation + docking of every state of this ligand
    state_smiles: str = ""  # the best state: canonical isomeric SMILES with stereo and charges
    n_states: int = 1  # states docked (those that failed to embed or dock are not counted)
    state_scores_kcal_mol: tuple[float, ...] = ()  # every docked state's Vina score, in enumeration order
    state_penalties_kcal_mol: tuple[float, ...] = ()  # each state's microstate penalty, same order
    penalty_kcal_mol: float = 0.0  # the best state's penalty: score_kcal_mol = its Vina score + this


class Docker:
    """A Vina object with the receptor's maps computed once, reused for every ligand."""

    def __init__(
        self,
        receptor: Receptor,
        *,
        site: BindingSite | None = None,
        exhaustiveness: int = 8,
        n_poses: int = 1,
        seed: int = DEFAULT_DOCK_SEED,
        cpu: int = 1,
        states: StateOptions = StateOptions(),
    ):
        from vina import Vina

        if exhaustiveness < 1:
            raise StageInputError(f"exhaustiveness: must be >= 1, got {exhaustiveness}")
        if cpu < 1:
            raise StageInputError(f"cpu: must be >= 1, got {cpu}")
        site = site or receptor.site
        self.receptor, self.site, self.seed, self.states = receptor, site, seed, states
        self.exhaustiveness, self.n_poses = exhaustiveness, max(1, n_poses)
        self.vina = Vina(sf_name="vina", cpu=cpu, seed=seed, verbosity=0)
        try:
            self.vina.set_receptor(rigid_pdbqt_filename=str(receptor.pdbqt_path))
            self.vina.compute_vina_maps(center=list(site.center_angstrom), box_size=list(site.size_angstrom))
        except (RuntimeError, TypeError, ValueError) as exc:
            raise StageInputError(f"{receptor.pdbqt_path}: Vina cannot use this receptor/box: {exc}") from None

    def dock(self, cid: str, smiles: str, *, exhaustiveness: int | None = None) -> DockResult | LigandFailure:
        """Dock every state of one (id, SMILES) and keep the best; never raises for a bad molecule."""
        t0 = time.perf_counter()
        with quiet_rdkit():
            states = prepare_states(cid, smiles, self.states)
            if isinstance(states, LigandFailure):
                return states
            docked: list[tuple[float, Chem.Mol, str, float]] = []
            reason = ""
            for state in states:
                try:
                    score, pose = self.dock_prepared(state, exhaustiveness=exhaustiveness)
                except Exception as exc:  # meeko/Vina raise assorted types for odd chemistry
                    reason = reason or f"docking failed for state {state.smiles}: {type(exc).__name__}: {exc}"
                    continue
                docked.append((score, pose, state.smiles, state.penalty_kcal_mol))
        if not docked:
            return LigandFailure(cid, smiles, reason)
        score, pose, state_smiles, penalty = min(docked, key=lambda d: d[0] + d[3])  # ties: the first state
        pose.SetProp("_Name", cid)
        pose.SetProp("vina_score_kcal_mol", f"{score:.3f}")
        pose.SetProp("state_penalty_kcal_mol", f"{penalty:.3f}")
        pose.SetProp("state_smiles", state_smiles)
        return DockResult(
            cid,
            smiles,
            score + penalty,
            Chem.MolToMolBlock(pose),
            round(time.perf_counter() - t0, 4),
            state_smiles,
            len(docked),
            tuple(round(d[0], 3) for d in docked),
            tuple(round(d[3], 3) for d in docked),
            round(penalty, 3),
        )

    def dock_prepared(self, ligand: PreparedLigand, *, exhaustiveness: int | None = None) -> tuple[float, Chem.Mol]:
        """Dock one prepared ligand; return (best score in kcal/mol, best pose with hydrogens).

        Raises RuntimeError with a reason if meeko or Vina cannot handle the molecule.
        """
        from meeko import MoleculePreparation, PDBQTMolecule, PDBQTWriterLegacy, RDKitMolCreate

        setups = MoleculePreparation().prepare(ligand.mol)
        if len(setups) != 1:
            raise RuntimeError(f"meeko: expected one molecule setup, got {len(setups)}")
        pdbqt, ok, err = PDBQTWriterLegacy.write_string(setups[0])
        if not ok:
            raise RuntimeError(f"meeko: cannot write PDBQT: {err.strip()}")
        self.vina.set_ligand_from_string(pdbqt)
        self.vina.dock(exhaustiveness=exhaustiveness or self.exhaustiveness, n_poses=self.n_poses)
        score = float(self.vina.energies(n_poses=1)[0][0])
        poses = PDBQTMolecule(self.vina.poses(n_poses=1), poses_to_read=1, skip_typing=True)
        mols = RDKitMolCreate.from_pdbqt_mol(poses)
        if not mols or mols[0] is None:
            raise RuntimeError("meeko: cannot rebuild the docked pose as an RDKit molecule")
        return score, mols[0]


def dock_ligands(
    receptor: Receptor, records: Iterable[tuple[str, str]], **options: Any
) -> Iterator[DockResult | LigandFailure]:
    """Dock each (id, smiles) record into the site box; one result or failure per record, in order.

    ``options`` are :class:`Docker`'s (``site``, ``exhaustiveness``, ``n_poses``, ``seed``, ``cpu``,
    ``states``). Maps are computed when the first record is requested.
    """
    docker = Docker(receptor, **options)
    for cid, smiles in records:
        yield docker.dock(cid, smiles)


def dock_one(receptor: Receptor, cid: str, smiles: str, **options: object) -> DockResult | LigandFailure:
    """Dock a single molecule (computes the maps: for batches use :func:`dock_ligands`)."""
    return next(dock_ligands(receptor, [(cid, smiles)], **options))


@dataclass(frozen=True)
class RedockResult:
    """One redocking of a co-crystal ligand: the best-scoring state's pose against the crystal pose."""

    seed: int
    score_kcal_mol: float
    rmsd_angstrom: float  # symmetry-corrected, heavy atoms, in place (no fitting)
    state_smiles: str
    n_states: int


def redock_reference(
    receptor: Receptor,
    *,
    exhaustiveness: int = 8,
    seed: int = DEFAULT_DOCK_SEED,
    cpu: int = 1,
    states: StateOptions = StateOptions(),
) -> RedockResult:
    """Redock the co-crystal ligand from scratch, as the campaign docks a library compound.

    The crystal SDF supplies only the molecular graph (with its stereo): the
    ligand goes through the same state enumeration as any library compound and
    is re-embedded (the crystal pose is not given away). The pose of the
    best-scoring state is compared with the crystal pose (:func:`heavy_atom_rmsd`).
    """
    if receptor.reference_ligand_path is None:
        raise StageInputError(f"{receptor.site.source}: no reference_ligand to redock")
    crystal = Chem.MolFromMolFile(str(receptor.reference_ligand_path), removeHs=True)
    if crystal is None:
        raise StageInputError(f"{receptor.reference_ligand_path}: not a readable SDF molecule")
    docker = Docker(receptor, exhaustiveness=exhaustiveness, seed=seed, cpu=cpu, states=states)
    result = docker.dock("reference", Chem.MolToSmiles(crystal))
    if isinstance(result, LigandFailure):
        raise StageInputError(f"{receptor.reference_ligand_path}: {result.reason}")
    pose = Chem.MolFromMolBlock(result.pose_sdf, removeHs=False, sanitize=False)
    return RedockResult(
        seed, result.score_kcal_mol, heavy_atom_rmsd(pose, crystal), result.state_smiles, result.n_states
    )


def heavy_atom_rmsd(pose: Chem.Mol, reference: Chem.Mol) -> float:
    """Symmetry-corrected heavy-atom RMSD in angstrom, in place (no fitting), by spyrmsd.

    spyrmsd matches atoms by element and connectivity only, so a pose and a
    reference that differ in protonation, bond-order writing or aromaticity
    flags (a meeko pose against a crystal SDF) still match, and the equivalent
    oxygens of a phosphate or carboxylate are interchangeable. Hydrogens are ignored.
    """
    from spyrmsd.rmsd import symmrmsd

    a, b = _skeleton(pose), _skeleton(reference)
    if a.GetNumAtoms() != b.GetNumAtoms():
        raise StageInputError(f"pose has {a.GetNumAtoms()} heavy atoms, reference {b.GetNumAtoms()}")
    return float(
        symmrmsd(
            b.GetConformer().GetPositions(),
            a.GetConformer().GetPositions(),
            np.array([x.GetAtomicNum() for x in b.GetAtoms()]),
            np.array([x.GetAtomicNum() for x in a.GetAtoms()]),
            Chem.GetAdjacencyMatrix(b),
            Chem.GetAdjacencyMatrix(a),
            center=False,
            minimize=False,
        )
    )


def read_dock_results(out_dir: str | os.PathLike[str]) -> Iterator[dict]:
    """Yield the record of every complete line of every ``dock.rank*.jsonl`` in ``out_dir``, rank 0 first
    (a line cut short by a killed rank is left out: that molecule was not finished)."""
    return read_rank_files(out_dir)


def result_to_json(result: DockResult | LigandFailure) -> dict:
    """The JSON-lines record of one molecule (see the module doc)."""
    if isinstance(result, DockResult):
        return asdict(result)
    return {"id": result.id, "smiles": result.input_smiles, "error": result.reason}


def mpi_rank_size() -> tuple[int, int]:
    """(rank, size) from the launcher: mpiexec (PMI/PMIx/Open MPI), srun (Slurm) or Flux; (0, 1) alone."""
    for rank_var, size_var in (
        ("PMI_RANK", "PMI_SIZE"),
        ("PMIX_RANK", "PMIX_SIZE"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"),
        ("FLUX_TASK_RANK", "FLUX_JOB_SIZE"),
    ):
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    if "PMI_RANK" in os.environ or "PMIX_RANK" in os.environ:  # a launcher that does not export the size
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    return 0, 1


# --------------------------------------------------------------------------- CLI


def command(
    receptor: str | os.PathLike[str],
    ligands: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    exhaustiveness: int,
    seed: int,
    cpu: int = 1,
    site: str | os.PathLike[str] | None = None,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The command line of :func:`main` for one docking task (each MPI rank runs it on its shard)."""
    argv = [
        sys.executable,
        "-m",
        "impeccable.stages.dock",
        "--receptor",
        str(receptor),
        "--ligands",
        str(ligands),
        "--out-dir",
        str(out_dir),
        "--exhaustiveness",
        str(exhaustiveness),
        "--seed",
        str(seed),
        "--cpu",
        str(cpu),
        *extra,
    ]
    if site is not None:
        argv += ["--site", str(site)]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Dock this rank's shard of a library; exit 0 when the batch ran, 2 for bad inputs."""
    p = argparse.ArgumentParser(prog="python -m impeccable.stages.dock", description=__doc__.split("\n\n")[0])
    p.add_argument("--receptor", required=True, type=Path, help="receptor folder (receptor.pdbqt, site.toml)")
    p.add_argument("--site", type=Path, help="another site.toml (box) instead of the receptor's")
    p.add_argument("--ligands", required=True, type=Path, help="library .csv (id,smiles) or .smi")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--exhaustiveness", type=int, default=8)
    p.add_argument("--n-poses", type=int, default=1)
    p.add_argument("--seed", type=int, default=DEFAULT_DOCK_SEED)
    p.add_argument("--cpu", type=int, default=1, help="Vina threads per rank")
    p.add_argument(
        "--max-stereoisomers",
        type=int,
        default=StateOptions.max_stereoisomers,
        help="states per compound: stereoisomers of unassigned centres, at most",
    )
    p.add_argument(
        "--max-protomers",
        type=int,
        default=StateOptions.max_protomers,
        help="states per stereoisomer: protonation states, most probable first",
    )
    p.add_argument("--ph", type=float, default=StateOptions.ph)
    p.add_argument(
        "--metals",
        choices=("auto", "keep", "remove"),
        default="auto",
        help="metal ions of the receptor folder's heterogens.toml to keep (stages/metals.py)",
    )
    a = p.parse_args(argv)
    rank, size = mpi_rank_size()
    t0 = time.perf_counter()
    out = rank_file(a.out_dir, rank)
    n_ok = n_fail = 0
    try:
        receptor = load_receptor(a.receptor, site_file=a.site, metals=a.metals)  # validates the box too
        records = iter_shard(a.ligands, rank, size)
        first = next(records, None)  # an empty or malformed library fails here, before the maps are built
        try:
            states = StateOptions(ph=a.ph, max_stereoisomers=a.max_stereoisomers, max_protomers=a.max_protomers)
        except ValueError as exc:
            raise StageInputError(f"--{str(exc).replace('_', '-')}") from None
        docker = Docker(
            receptor, exhaustiveness=a.exhaustiveness, n_poses=a.n_poses, seed=a.seed, cpu=a.cpu, states=states
        )
        with RankLines(out) as sink:
            for cid, smiles in _chain([first] if first else [], records):
                result = docker.dock(cid, smiles)
                sink.write(result_to_json(result))
                n_ok += isinstance(result, DockResult)
                n_fail += isinstance(result, LigandFailure)
    except StageInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"rank {rank}/{size} on {socket.gethostname()}: {n_ok} docked, {n_fail} failed in "
        f"{time.perf_counter() - t0:.1f} s -> {out}"
    )
    return 0


# --------------------------------------------------------------------------- helpers


def _chain(head: list, tail: Iterator) -> Iterator:
    yield from head
    yield from tail


def _skeleton(mol: Chem.Mol) -> Chem.Mol:
    """Heavy atoms only, neutral, so protonation states do not change the atom matching."""
    m = Chem.RWMol(Chem.RemoveHs(mol, sanitize=False))
    for atom in m.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetNoImplicit(False)
        atom.SetNumExplicitHs(0)
    m = m.GetMol()
    m.UpdatePropertyCache(strict=False)
    return m


if __name__ == "__main__":
    raise SystemExit(main())
