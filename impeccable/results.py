"""Ranking, status and export of a run directory's results (read from the store only)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .leftout import skip_counts, skipped
from .store import Store, md_details

MD_FIELDS = ("replica_means_kcal_mol", "ligand_rmsd_mean_angstrom", "hinge_hbond_occupancy", "hinge_residue")
RANK_ORDERS = ("vina", "ligand_efficiency", "surrogate", "mmgbsa")
DEFAULT_ORDER = "vina"
ORDER_NOTE = (
    "Ranked by Vina score (best state), the one score every docked compound has, computed the same way "
    "for all. Separate ranks by ligand efficiency, surrogate prediction and MM/GBSA stand beside it; "
    "MM/GBSA ranks only the compounds that had MD, and having MD never moves a compound up."
)


@dataclass(frozen=True)
class Hit:
    rank: int
    id: str
    smiles: str
    dock_score: float
    predicted: float | None
    mmgbsa: float | None
    mmgbsa_stderr: float | None
    origin: str
    state_smiles: str | None = None  # the docked state that gave the score (stereo and charges)
    pose_check: str = ""  # PoseBusters: "passed", "failed: <checks>", or "" where not checked
    ligand_efficiency: float | None = None  # -Vina score / heavy atoms, kcal/mol per heavy atom
    ranks: dict[str, int] = field(default_factory=dict)  # order name -> rank (1 = best), where it has a value
    md: dict[str, Any] | None = None  # MD_FIELDS of the MD result: replica means, ligand RMSD, hinge occupancy

    @property
    def implausible(self) -> bool:
        return self.pose_check.startswith("failed")

    @property
    def mmgbsa_text(self) -> str:
        """The MM/GBSA mean with its t interval from 3 replicas on, else the replica values (never a bare +/-)."""
        from .stages.intervals import describe_replicas

        if self.mmgbsa is None:
            return ""
        means = (self.md or {}).get("replica_means_kcal_mol")
        return describe_replicas(means) if means else f"{self.mmgbsa:.1f} (replicas not stored)"

    @property
    def mmgbsa_ci95(self) -> tuple[float, float] | None:
        from .stages.intervals import t_interval

        got = t_interval((self.md or {}).get("replica_means_kcal_mol") or [])
        return None if got is None else (got[1], got[2])


def ranked_hits(store: Store, order: str = DEFAULT_ORDER) -> list[Hit]:
    """Docked compounds, best first by ``order`` (default: Vina score; see ORDER_NOTE), each with every rank.

    Compounds without a value for ``order`` (no MM/GBSA, no prediction) follow those with one, by Vina
    score. Ties go by id.
    """
    if order not in RANK_ORDERS:
        raise ValueError(f"order: one of {', '.join(RANK_ORDERS)}, got {order!r}")
    md = store.md_results()
    details = {cid: {k: doc.get(k) for k in MD_FIELDS} for cid, doc in md_details(store).items()}
    scores = store.dock_scores()
    # a compound's first prediction (for a re-docked one: before it was docked), read batch by batch
    predicted = store.first_predictions(cid for cid, _, _ in scores)
    origins = store.dock_origins()
    states = store.state_smiles()
    checks = store.pose_checks()
    le = {cid: _ligand_efficiency(score, states.get(cid) or smi) for cid, smi, score in scores}
    values = {  # lower is better for each
        "vina": {cid: score for cid, _, score in scores},
        "ligand_efficiency": {cid: -v for cid, v in le.items() if v is not None},
        "surrogate": {cid: predicted[cid] for cid, _, _ in scores if cid in predicted},
        "mmgbsa": {cid: md[cid][0] for cid, _, _ in scores if cid in md and md[cid][0] is not None},
    }
    ranks = {
        name: {cid: i + 1 for i, cid in enumerate(sorted(v, key=lambda c: (v[c], c)))} for name, v in values.items()
    }
    first, vina = ranks[order], ranks["vina"]
    ordered = sorted(scores, key=lambda row: (row[0] not in first, first.get(row[0], 0), vina[row[0]]))
    return [
        Hit(
            i + 1,
            cid,
            smi,
            score,
            predicted.get(cid),
            values["mmgbsa"].get(cid),
            md[cid][1] if cid in md else None,
            origins.get(cid, ""),
            states.get(cid),
            _verdict(checks.get(cid)),
            le[cid],
            {n: r[cid] for n, r in ranks.items() if cid in r},
            details.get(cid),
        )
        for i, (cid, smi, score) in enumerate(ordered)
    ]


def md_cell(h: Hit) -> str:
    """The MD observables of a hit in words: ligand RMSD over the frames, hinge H-bond occupancy."""
    md = h.md or {}
    parts = []
    if md.get("ligand_rmsd_mean_angstrom") is not None:
        parts.append(f"ligand RMSD {md['ligand_rmsd_mean_angstrom']:.1f} A")
    if md.get("hinge_hbond_occupancy") is not None:
        parts.append(f"{md.get('hinge_residue') or 'hinge'} H-bond {100 * md['hinge_hbond_occupancy']:.0f}%")
    return ", ".join(parts)


def _ligand_efficiency(score: float, smiles: str) -> float | None:
    """-score / heavy atoms of the docked state (or the library SMILES): kcal/mol per heavy atom."""
    from rdkit import Chem

    from .stages.quiet import quiet_rdkit

    with quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    frags = Chem.GetMolFrags(mol, asMols=True)
    heavy = max(f.GetNumHeavyAtoms() for f in frags) if frags else 0  # a counterion is not docked
    return -score / heavy if heavy else None


def _verdict(check: tuple[bool, list[str]] | None) -> str:
    if check is None:
        return ""
    return "passed" if check[0] else "failed: " + ", ".join(check[1])


def _receptor_pdb(store: Store) -> Path | None:
    try:
        path = Path(json.loads(store.get_meta("campaign") or "{}")["receptor"]["path"]) / "receptor.pdb"
    except (KeyError, TypeError, ValueError):
        return None
    return path if path.is_file() else None


def print_top(hits: Sequence[Hit]) -> None:
    """The top table `impeccable run` prints (``hits``: e.g. ``Run.ranked(10)``)."""
    table = Table(title=f"top {len(hits)} compounds")
    for col in ("rank", "id", "dock (kcal/mol)", "LE", "surrogate", "MM/GBSA (kcal/mol)", "SMILES"):
        table.add_column(col)
    for hit in hits:
        pred = "" if hit.predicted is None else f"{hit.predicted:.2f}"
        le = "" if hit.ligand_efficiency is None else f"{hit.ligand_efficiency:.2f}"
        table.add_row(str(hit.rank), hit.id, f"{hit.dock_score:.2f}", le, pred, hit.mmgbsa_text, hit.smiles)
    Console().print(table)


def stage_counts(store: Store) -> list[tuple[str, int, int, int]]:
    """(stage, done, failed, tasks) from the results and task records."""
    from .library_store import LibraryStore

    lib = LibraryStore(store).counts()
    out = (
        [
            (
                f"library (kept {lib.kept}, filtered {lib.filtered}, duplicates {lib.duplicates})",
                lib.rows - lib.failed,
                lib.failed,
                lib.batches,
            )
        ]
        if lib.batches
        else []
    )
    for origin, label in (("seed", "seed dock"), ("redock", "re-dock")):
        ok, bad = store.dock_counts(origin)
        out.append((f"{label} (compounds)", ok, bad, 0))
    for r, report in store.models():
        n, scored, filtered, failed = store.inference_counts(r)
        out.append((f"train r{r} (val Spearman {report.get('val_spearman', float('nan')):.2f})", 1, 0, 0))
        out.append((f"infer r{r} (compounds)", scored + filtered, failed, n))
    ok, bad = store.md_counts()
    out.append(("md (compounds)", ok, bad, 0))
    return out


def sessions_with_liveness(store: Store, run_dir: Path) -> list[dict[str, Any]]:
    """The store's sessions, where one still marked 'running' is checked against the run directory's lock:
    'running (pid N on HOST, since ...)' if a live process holds it, 'killed' if none does."""
    from .lock import describe, live_holder

    sessions = store.sessions()
    holder = live_holder(run_dir)
    for i, session in enumerate(sessions):
        if session["status"] == "running":
            live = holder is not None and i == len(sessions) - 1
            session["status"] = f"running ({describe(holder)})" if live else "killed (no live process: resume it)"
    return sessions


@dataclass(frozen=True)
class StageCount:
    """Results of one stage: units done (compounds, or tasks for training) and units failed."""

    stage: str
    done: int
    failed: int


@dataclass(frozen=True)
class RunStatus:
    """Where a run directory stands, as plain data (``impeccable status`` prints it)."""

    name: str
    run_dir: Path
    sessions: list[dict[str, Any]]  # one per `run` of the directory: started, finished, status, cores, routes
    stages: list[StageCount]
    task_states: list[tuple[str, str, int]]  # (stage, state, tasks) over every session
    failed_tasks: list[str]  # "stage name: reason" of the tasks of the last session that ended FAILED
    stalls: list[str]  # what the stall watchdog reported, one line each
    left_out: list[tuple[str, str, int]]  # (stage, reason category, compounds) left out (`export` -> skipped.csv)
    unlisted_library_rows: int  # library rows skipped for an empty id or SMILES beyond the first 1,000 listed

    @property
    def state(self) -> str:
        """How the last session stands ("done", "done-with-failures", "interrupted", "running (pid ...)",
        "killed (...)"), or "none" before the first session."""
        return self.sessions[-1]["status"] if self.sessions else "none"


def run_status(store: Store, run_dir: Path) -> RunStatus:
    """The status of the run directory whose store is ``store``."""
    from .stalls import describe, read_stalls

    sessions = sessions_with_liveness(store, run_dir)
    failed = [
        f"{r['stage']} {r['name']}: {r['error']}"
        for r in (store.task_rows(sessions[-1]["session"]) if sessions else [])
        if r["state"] == "FAILED"
    ]
    return RunStatus(
        name=store.get_meta("name") or Path(run_dir).name,
        run_dir=Path(run_dir),
        sessions=sessions,
        stages=[StageCount(stage, done, bad) for stage, done, bad, _ in stage_counts(store)],
        task_states=store.task_state_counts(),
        failed_tasks=failed,
        stalls=[describe(event) for event in read_stalls(run_dir)],
        left_out=skip_counts(store),
        unlisted_library_rows=_unlisted_library_skips(store),
    )


def print_status(status: RunStatus) -> None:
    console = Console()
    console.print(f"[bold]{status.name}[/] in {status.run_dir}: {len(status.sessions)} session(s), last {status.state}")
    table = Table()
    table.add_column("stage")
    table.add_column("done", justify="right")
    table.add_column("failed", justify="right")
    for count in status.stages:
        table.add_row(count.stage, str(count.done), str(count.failed))
    console.print(table)
    if status.left_out:
        left = Table(title="compounds left out (each one: impeccable export -> skipped.csv)")
        for col in ("stage", "reason", "compounds"):
            left.add_column(col)
        for stage, category, n in status.left_out:
            left.add_row(stage, category, str(n))
        console.print(left)
    if status.unlisted_library_rows:
        console.print(
            f"{status.unlisted_library_rows} more library rows skipped for an empty id or SMILES (only the first 1,000 "
            "are listed one by one)"
        )
    tasks = Table(title="task records")
    for col in ("stage", "state", "tasks"):
        tasks.add_column(col)
    for stage, state, n in status.task_states:
        tasks.add_row(str(stage), state, str(n))
    console.print(tasks)
    for line in status.stalls:
        console.print(f"[bold red]stall watchdog[/]: {line}", highlight=False)


def _unlisted_library_skips(store: Store) -> int:
    scan = json.loads(store.get_meta("library_scan") or "{}")
    listed = sum(1 for _, stage, _, _ in skipped(store) if stage == "library")
    return max(0, int(scan.get("skipped_count", 0)) - listed)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A text cell a spreadsheet shows as text: one that starts like a formula (``=``, ``+``, ``-``, ``@``,
    tab, carriage return; OWASP's list) gets a leading ``'``, so that a hostile id such as
    ``=HYPERLINK(...)`` is never evaluated. Numbers are written by us and are not text cells."""
    return "'" + text if text.startswith(FORMULA_START) else text


EXTRA_COLUMNS = (
    "ligand_efficiency",
    "rank_vina",
    "rank_ligand_efficiency",
    "rank_surrogate",
    "rank_mmgbsa",
    "mmgbsa_replicas_kcal_mol",
    "mmgbsa_ci95_low_kcal_mol",
    "mmgbsa_ci95_high_kcal_mol",
    "md_ligand_rmsd_angstrom",
    "md_hinge_hbond_occupancy",
    "md_hinge_residue",
)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _extra(h: Hit) -> list[str]:
    """The export's columns after pose_check: ligand efficiency, each rank, the MD replicas and observables."""
    md = h.md or {}
    ci = h.mmgbsa_ci95
    return [
        _num(h.ligand_efficiency),
        *[str(h.ranks.get(n, "")) for n in RANK_ORDERS],
        ";".join(f"{v:.3f}" for v in md.get("replica_means_kcal_mol") or []),
        _num(ci[0] if ci else None),
        _num(ci[1] if ci else None),
        _num(md.get("ligand_rmsd_mean_angstrom")),
        _num(md.get("hinge_hbond_occupancy")),
        md.get("hinge_residue") or "",
    ]


def export(
    store: Store, folder: Path, top: int | None = None, annotate: Callable[[str], dict[str, str]] | None = None
) -> tuple[Path, Path, int]:
    """Ranked hits as CSV (scores from every stage) and SDF (docked poses with the scores as properties).

    ``pose_check`` is the run's PoseBusters verdict (``[hits] check_poses``: the best 20 by default), naming
    the failed checks; empty where the run checked none.
    ``annotate(id)`` adds columns (and SDF properties) per compound: :func:`impeccable.picks.export_picks`
    adds the interactions and clusters.
    """
    from rdkit import Chem

    from .library_store import compound_sources

    folder.mkdir(parents=True, exist_ok=True)
    hits = ranked_hits(store)[:top] if top else ranked_hits(store)
    sources = compound_sources(store, [h.id for h in hits])
    csv_path, sdf_path = folder / "hits.csv", folder / "hits.sdf"
    tmp_csv, tmp_sdf = csv_path.with_suffix(".csv.tmp"), sdf_path.with_suffix(".sdf.tmp")
    extra = {h.id: annotate(h.id) for h in hits} if annotate else {}
    extra_columns = list(next(iter(extra.values()), {}))
    with open(tmp_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "rank",
                "id",
                "smiles",
                "dock_score_kcal_mol",
                "surrogate_prediction",
                "mmgbsa_kcal_mol",
                "mmgbsa_stderr_kcal_mol",
                "origin",
                "state_smiles",
                "pose_check",
                *EXTRA_COLUMNS,
                "source",
                "source_ids",
                *extra_columns,
            ]
        )
        for h in hits:
            writer.writerow(
                [
                    h.rank,
                    spreadsheet_safe(h.id),
                    spreadsheet_safe(h.smiles),
                    f"{h.dock_score:.3f}",
                    _num(h.predicted),
                    _num(h.mmgbsa),
                    _num(h.mmgbsa_stderr),
                    h.origin,
                    spreadsheet_safe(h.state_smiles or ""),
                    spreadsheet_safe(h.pose_check),
                    *_extra(h),
                    *map(spreadsheet_safe, [*sources[h.id], *extra.get(h.id, {}).values()]),
                ]
            )
    writer = Chem.SDWriter(str(tmp_sdf))
    for h in hits:
        block = store.pose(h.id)
        mol = Chem.MolFromMolBlock(block, removeHs=False) if block else None
        if mol is None:
            continue
        mol.SetProp("_Name", h.id)
        for key, value in (
            ("rank", h.rank),
            ("smiles", h.smiles),
            ("dock_score_kcal_mol", h.dock_score),
            ("mmgbsa_kcal_mol", h.mmgbsa),
            ("mmgbsa_stderr_kcal_mol", h.mmgbsa_stderr),
            ("state_smiles", h.state_smiles),
            ("pose_check", h.pose_check or None),
            *zip(EXTRA_COLUMNS, _extra(h)),
            ("source", sources[h.id][0]),
            ("source_ids", sources[h.id][1]),
            *extra.get(h.id, {}).items(),
        ):
            if value is not None and value != "":
                mol.SetProp(key, str(value))
        writer.write(mol)
    writer.close()
    os.replace(tmp_csv, csv_path)
    os.replace(tmp_sdf, sdf_path)
    export_dropped(store, folder / "library_dropped.csv")
    write_skipped(store, folder / "skipped.csv")
    return csv_path, sdf_path, len(hits)


def export_dropped(store: Store, path: Path) -> int:
    """Every compound the library stage did not keep, with why (``failed``, ``filtered`` naming the rule and the
    value, ``duplicate`` naming the compound kept), streamed to CSV; nothing is written for a library screened
    as it is. Returns the rows written."""
    from .library_store import LibraryStore

    lib = LibraryStore(store)
    if not lib.counts().batches:
        return 0
    n, tmp = 0, path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "dropped_as", "reason"])
        for row in lib.dropped():
            writer.writerow([spreadsheet_safe(cell) for cell in row])
            n += 1
    os.replace(tmp, path)
    return n


def write_skipped(store: Store, path: Path) -> int:
    """Every compound left out (id, stage, category, reason) as CSV; returns how many."""
    tmp = path.with_suffix(".csv.tmp")
    n = 0
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "stage", "category", "reason"])
        for row in skipped(store):
            writer.writerow([spreadsheet_safe(cell) for cell in row])
            n += 1
    os.replace(tmp, path)
    return n
