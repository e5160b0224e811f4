"""Campaign emulation: the campaign's own runner on a large allocation, every payload replaced by its recorded time.

``impeccable emulate RUN_DIR --cores N`` re-runs the campaign recorded in
RUN_DIR through the real :class:`~.campaign.CampaignRunner` (its streaming,
quotas, stage dependencies and resumable store) on N advertised cores, but
each task only takes the time such a task took in RUN_DIR, drawn from the
recorded durations of its stage (per ligand for docking, per step for MD: prepare, replica,
combine; per batch for inference and training; seeded, so both sides of a comparison
draw the same). Executables sleep in a real process (a real fork/exec or
``srun`` step); function tasks sleep in the backend's persistent workers, and
under ``srun``, where each is a fresh ``python -m`` process, they first import
what the real stage imports (torch, RDKit), so the baseline pays what a
script-based campaign pays, measured rather than assumed.

Results are placeholders. Scores come from a hash of the compound id so that
selection, re-docking and MD proceed as in a campaign; they mean nothing, the
run directory is marked as an emulation, and its report says so. What is
measured is time: makespan, utilisation, launch rates, per-stage throughput.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Campaign, Filters
from .emulate_payloads import emulated_infer, emulated_md_combine, emulated_train, placeholder_score, stable_hash
from .measure import run_figures
from .runtime import Task, TaskFuture, executable_task, function_task
from .stages.library import LibraryRecord, write_library
from .stagetasks import (
    DockBatch,
    Docking,
    Inference,
    MDJob,
    MDRefinement,
    Stage,
    StageContext,
    StageTasks,
    Training,
    folder_name,
)
from .store import DockRow, Store

STAGES = ("dock", "train", "infer", "md prepare", "md replica", "md combine")
MD_STEPS = ("prepare", "replica", "combine")


EMULATE_HELP = "the recorded campaign on a large allocation, every task taking its recorded time"
EMULATE_DESCRIPTION = (
    "Runs the campaign recorded in RUN_DIR again through the real runner on N advertised cores, "
    "with each task's payload replaced by a sleep of its recorded duration (placeholders for results), "
    "through the pilot and, with --baseline srun, with every task an srun step; reports makespans, "
    "utilisation, launch rates and the ratio. An emulation measures time, not science."
)


@dataclass
class RecordedDurations:
    """Seconds per unit of work, per stage, as a recorded campaign measured them."""

    source: str
    dock_per_ligand: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    infer_per_batch: list[float] = field(default_factory=list)
    md_steps: dict[str, list[float]] = field(default_factory=lambda: {step: [] for step in MD_STEPS})

    @classmethod
    def from_run(cls, run_dir: Path) -> RecordedDurations:
        store = Store.open_existing(run_dir, readonly=True)
        try:
            sizes = store.dock_task_sizes()
            found = cls(source=str(Path(run_dir).resolve()))
            for stage, name, seconds in store.done_task_durations():
                if stage.endswith("dock") or stage == "redock":
                    key = name.split(" ", 1)[1]
                    if sizes.get(key):
                        found.dock_per_ligand.append(seconds / sizes[key])
                elif stage == "train":
                    found.train.append(seconds)
                elif stage == "infer":
                    found.infer_per_batch.append(seconds)
                elif stage == "md":
                    step = name.split(" ")[1]
                    if step not in MD_STEPS:
                        raise ValueError(
                            f"{run_dir}: its MD ran each ensemble as one task ({name!r}), recorded "
                            "before replicas were separate tasks: record a new run to emulate from"
                        )
                    found.md_steps[step].append(seconds)
        finally:
            store.close()
        missing = [
            s
            for s, v in zip(
                STAGES, (found.dock_per_ligand, found.train, found.infer_per_batch, *found.md_steps.values())
            )
            if not v
        ]
        if missing and all(s.startswith("md ") for s in missing) and recorded_campaign(run_dir).md.top_m == 0:
            missing = []  # a campaign without MD (top_m = 0) has none to record, and its emulation runs none
        if missing:
            raise ValueError(
                f"{run_dir}: no finished {', '.join(missing)} task recorded: run the campaign "
                "there first (impeccable run), or resume it until every stage has run"
            )
        return found

    def draw(self, stage: str, key: str, n: int = 1) -> float:
        """The duration of a task of ``stage`` with ``n`` units, drawn for ``key`` (the same key, the same draw)."""
        pool = {
            "dock": self.dock_per_ligand,
            "train": self.train,
            "infer": self.infer_per_batch,
            **{f"md {step}": v for step, v in self.md_steps.items()},
        }[stage]
        rng = random.Random(stable_hash(f"{stage}:{key}"))
        return sum(rng.choice(pool) for _ in range(n))

    def summary(self) -> dict[str, Any]:
        def med(v: Sequence[float]) -> float | None:
            return sorted(v)[len(v) // 2] if v else None  # None: a stage the campaign did not run (no MD)

        pools = {
            "dock_per_ligand": self.dock_per_ligand,
            "train": self.train,
            "infer_per_batch": self.infer_per_batch,
            **{f"md_{step}": v for step, v in self.md_steps.items()},
        }
        return {
            "source": self.source,
            "median_s": {k: med(v) for k, v in pools.items()},
            "samples": {k: len(v) for k, v in pools.items()},
        }


class Recorded(Stage):
    """A stage whose tasks take the time such tasks took in the recorded run."""

    def __init__(self, ctx: StageContext, durations: RecordedDurations) -> None:
        super().__init__(ctx)
        self.durations = durations

    def sleep(self, name: str, seconds: float, stage: str, r: int, **resources: Any) -> Task:
        """An executable that sleeps ``seconds`` in a real process (a real fork/exec or srun step)."""
        return executable_task(["sleep", f"{seconds:.3f}"], name=name, tags=self.ctx.tags(stage, r), **resources)


class EmulatedDocking(Recorded, Docking):
    """A docking task sleeps its compounds' recorded time; a task that ended DONE leaves placeholder scores."""

    def task(self, batch: DockBatch) -> Task:
        seconds = self.durations.draw("dock", batch.key, len(batch.records))
        d = self.c.dock
        return self.sleep(f"dock {batch.key}", seconds, batch.task_stage, batch.round, ranks=d.ranks, mpi=d.ranks > 1)

    def rows(self, batch: DockBatch, complete: bool = True) -> list[DockRow]:
        """Placeholders for a task that ended DONE; none for one that did not (its compounds run again)."""
        if not complete:
            return []
        return [
            DockRow(rec.id, rec.smiles, batch.round, batch.origin, placeholder_score(rec.id, "dock"), "", None)
            for rec in batch.records
        ]


class EmulatedTraining(Recorded, Training):
    """Training sleeps its recorded time in a worker; the model file says there is no model."""

    def task(self, r: int, scores: list[tuple[str, float]]) -> Task:
        path = self.model_path(r)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("emulation: no model\n")
        seconds = self.durations.draw("train", str(r))
        return function_task(
            emulated_train,
            seconds,
            name=f"train r{r}",
            cores_per_rank=self.c.surrogate.cores,
            gpus_per_rank=self.ctx.gpus("train"),
            tags=self.ctx.tags("train", r),
        )


class EmulatedInference(Recorded, Inference):
    """A batch sleeps its recorded time in a worker and scores its ids with placeholders."""

    def task(self, r: int, batch: int, model_path: str, ids: list[str], smiles: list[str]) -> Task:
        seconds = self.durations.draw("infer", f"{r}:{batch}")
        return function_task(
            emulated_infer,
            seconds,
            ids,
            name=f"infer r{r} b{batch:05d}",
            gpus_per_rank=self.ctx.gpus("infer"),
            tags=self.ctx.tags("infer", r),
        )


class EmulatedMD(Recorded, MDRefinement):
    """Each MD step sleeps its recorded time; nothing is on disk, so every step runs."""

    def job(self, r: int, cid: str, pose_sdf: str) -> MDJob:
        return MDJob(r, cid, self.ctx.work / "md" / folder_name(cid), self.c.md.replicas, "emulation")

    def prepared(self, job: MDJob) -> bool:
        return False

    def replica_done(self, job: MDJob, index: int) -> bool:
        return False

    def prepare_task(self, job: MDJob) -> Task:
        return self._step(job, "prepare", job.cid)

    def replica_task(self, job: MDJob, index: int) -> Task:
        return self._step(job, f"replica {index}", f"{job.cid}:{index}", self.ctx.gpus("md"))

    def _step(self, job: MDJob, step: str, key: str, gpus: int = 0) -> Task:
        seconds = self.durations.draw(f"md {step.split()[0]}", key)
        name = f"md {step} {job.cid}"
        return self.sleep(name, seconds, "md", job.round, cores_per_rank=self.c.md.cores, gpus_per_rank=gpus)

    def combine_task(self, job: MDJob) -> Task:
        seconds = self.durations.draw("md combine", job.cid)
        return function_task(
            emulated_md_combine, seconds, name=f"md combine {job.cid}", tags=self.ctx.tags("md", job.round)
        )

    def outcome(self, future: TaskFuture, job: MDJob) -> dict[str, Any]:
        return {"binding_energy_kcal_mol": placeholder_score(job.cid, "md"), "stderr_kcal_mol": 0.0, "emulation": True}


class EmulatedStageTasks(StageTasks):
    """Each stage's task takes its recorded time and produces placeholders the runner can go on with (the
    library's preparation is not emulated: an emulated campaign's library needs none)."""

    def __init__(self, campaign: Campaign, run_dir: Path, durations: RecordedDurations) -> None:
        super().__init__(campaign, run_dir)
        self.durations = durations
        self.docking = EmulatedDocking(self.ctx, durations)
        self.training = EmulatedTraining(self.ctx, durations)
        self.inference = EmulatedInference(self.ctx, durations)
        self.md = EmulatedMD(self.ctx, durations)


# ------------------------------------------------------------------ the emulated campaign
def emulated_campaign(
    recorded: Campaign,
    library: Path,
    cores: int,
    scale: int,
    granularity: str,
    routes: dict[str, str],
    nodes: int = 1,
    srun_max_running: int | None = None,
    gpus: int = 0,
) -> Campaign:
    """The recorded campaign at ``scale``: library, seed sample, top-K and top-M multiplied; N cores and ``gpus``
    emulated GPUs (GPU tasks hold their slots for their recorded time)."""
    if granularity not in ("task", "ligand"):
        raise ValueError(f"granularity: 'task' or 'ligand', got {granularity!r}")
    c = recorded
    options = {k: dict(v) for k, v in c.pilot.options.items()}
    if srun_max_running is not None:
        options.setdefault("srun", {})["max_running"] = srun_max_running
    update = {
        # the recorded library as one CSV, screened as it is: the library stage is not emulated
        "library": c.library.model_copy(
            update={
                "path": library,
                "sources": [],
                "limit": None,
                "id_column": "id",
                "smiles_column": "smiles",
                "standardize": False,
                "tautomer": False,
                "deduplicate": False,
                "filters": Filters(),
            }
        ),
        "dock": c.dock.model_copy(
            update={
                "seed_sample": c.dock.seed_sample * scale,
                "ligands_per_task": 1 if granularity == "ligand" else c.dock.ligands_per_task,
            }
        ),
        "redock": c.redock.model_copy(update={"top_k": c.redock.top_k * scale}),
        "md": c.md.model_copy(update={"top_m": c.md.top_m * scale}),
        "hits": c.hits.model_copy(update={"check_poses": 0}),  # placeholder poses: nothing to check
        "pilot": c.pilot.model_copy(
            update={
                "cores": cores,
                "nodes": nodes,
                "gpus": gpus,
                "oversubscribe": True,
                "routes": routes,
                "options": options,
                "exclusive": False,
            }
        ),
        "campaign": c.campaign.model_copy(update={"name": f"{c.name}-emulated"}),
    }
    return c.model_copy(update=update)


def scaled_library(recorded: Campaign, scale: int, path: Path) -> Path:
    """The recorded library's screened compounds, ``scale`` times over with new ids (E<copy>-<id>)."""
    from .library_stage import raw_records

    rows = [LibraryRecord(rec.id, rec.smiles) for rec in raw_records(recorded)]
    write_library((LibraryRecord(f"E{copy}-{rec.id}", rec.smiles) for copy in range(scale) for rec in rows), path)
    return path


def recorded_campaign(run_dir: Path) -> Campaign:
    """The campaign a run directory holds (its settings as stored by ``impeccable run``)."""
    store = Store.open_existing(run_dir, readonly=True)
    try:
        settings = store.get_meta("campaign")
    finally:
        store.close()
    if not settings:
        raise ValueError(f"{run_dir}: no campaign recorded here")
    return Campaign.model_validate(json.loads(settings), strict=False)


def run_emulation(
    run_dir: Path,
    out_dir: Path,
    *,
    cores: int,
    scale: int = 1,
    granularity: str = "task",
    routes: dict[str, str] | None = None,
    nodes: int = 1,
    srun_max_running: int | None = None,
    progress: Any = None,
    gpus: int = 0,
) -> dict[str, Any]:
    """One emulated campaign into ``out_dir`` (made afresh); its figures from the task records."""
    from .campaign import CampaignRunner

    recorded = recorded_campaign(run_dir)
    durations = RecordedDurations.from_run(run_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    library = scaled_library(recorded, scale, out_dir / "library.csv")
    campaign = emulated_campaign(
        recorded,
        library,
        cores,
        scale,
        granularity,
        routes or {"executable": "local", "function": "local"},
        nodes,
        srun_max_running,
        gpus,
    )
    runner = CampaignRunner(
        campaign,
        out_dir / "run",
        progress=progress,
        stages=EmulatedStageTasks(campaign, (out_dir / "run").resolve(), durations),
    )
    meta = {"recorded_run": durations.source, "scale": scale, "granularity": granularity, "cores": cores, "gpus": gpus}
    runner.store.set_meta("emulation", json.dumps(meta))
    meta["library_cpu_s_per_compound"] = _library_cpu_s_per_compound(campaign)
    cpu = _cpu_s()
    t0 = time.thread_time()
    with runner.progress:
        runner.run()
    # The manager's own time (the model's service time): main-thread CPU from its first task to the end
    # (handlers, store, submissions), start-up apart; the dispatchers' CPU is the backends' launch cost,
    # which the model charges through their launch rates, not here.
    main = time.thread_time() - t0
    first = runner.tasks.first_submit[0] if runner.tasks and runner.tasks.first_submit else t0
    meta["manager_startup_cpu_s"] = first - t0
    meta["manager_dispatch_cpu_s"] = main - (first - t0)
    meta["process_cpu_s"] = _cpu_s() - cpu  # everything, dispatchers and progress included (not the model's)
    runner.store.set_meta("emulation", json.dumps(meta))
    result = run_figures(runner.store)
    result["durations"] = durations.summary()
    tasks = max(result["tasks"], 1)
    result["manager_cpu_s_per_task"] = meta["manager_dispatch_cpu_s"] / tasks
    result["manager_startup_cpu_s"] = meta["manager_startup_cpu_s"]
    result["library_cpu_s_per_compound"] = meta["library_cpu_s_per_compound"]
    result["process_cpu_s_per_task"] = meta["process_cpu_s"] / tasks
    return result


STEP_COST_TIMEOUT_S = 120.0  # a null step that takes longer is killed and left out


def step_costs(backend: str, runs: int = 5) -> dict[str, Any]:
    """What one step costs alone (the model's start-up work for each task kind, which it shares out over the
    machine's cores when many start at once; contention.py): the median time from cores to end of ``runs``
    null executable steps (``true``) and null function steps (an inference payload's imports, no work), one at
    a time on a quiet pilot. A failure here costs the figure, never the emulation it follows: the model then
    says it falls back to the records' contended cold start."""
    from .runtime import Allocation, Pilot

    seconds: dict[str, list[float]] = {"executable": [], "function": []}
    result: dict[str, Any] = {"backend": backend, "runs": runs, "machine_cores": machine_cores()}
    try:
        with Pilot(Allocation(cores=1), routes={"executable": backend, "function": backend}) as pilot:
            for _ in range(runs):
                for kind, task in (
                    ("executable", executable_task(["true"], name="null step", timeout_s=STEP_COST_TIMEOUT_S)),
                    (
                        "function",
                        function_task(
                            emulated_infer, 0.0, [], name="null function step", timeout_s=STEP_COST_TIMEOUT_S
                        ),
                    ),
                ):
                    record = pilot.run([task])[0]
                    if record.finished is not None and record.scheduled is not None and record.state.value == "DONE":
                        seconds[kind].append(record.finished - record.scheduled)
    except Exception as exc:  # noqa: BLE001 - reported in the figures, the emulation's results kept
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["median_s"] = {kind: sorted(v)[len(v) // 2] if v else None for kind, v in seconds.items()}
    return result


def machine_cores() -> int:
    """The cores this process may use: its CPU affinity, or fewer where a cgroup quota says so (a container
    started with ``--cpus``)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _library_cpu_s_per_compound(campaign: Campaign) -> float:
    """Main-thread CPU of reading one compound of the library, as the manager streams it."""
    from .library_stage import raw_records

    t0, n = time.thread_time(), 0
    for _ in raw_records(campaign):
        n += 1
    return (time.thread_time() - t0) / max(n, 1)


# ------------------------------------------------------------------ the command
def register(sub: Any) -> None:
    p = sub.add_parser("emulate", help=EMULATE_HELP, description=EMULATE_DESCRIPTION)
    p.add_argument("run_dir", type=Path, help="a run directory made by `impeccable run` (its durations are drawn)")
    p.add_argument("--cores", type=int, required=True, help="cores to advertise (may far exceed the machine's)")
    p.add_argument("--nodes", type=int, default=1, help="nodes the cores spread over (emulated; default 1)")
    gpus = "GPUs over all nodes (emulated: surrogate and MD tasks hold GPU slots for their recorded time; default 0)"
    p.add_argument("--gpus", type=int, default=0, help=gpus)
    p.add_argument("--scale", type=int, default=1, help="multiply library, seed sample, top-K and top-M (default 1)")
    p.add_argument(
        "--granularity",
        choices=("task", "ligand"),
        default="task",
        help="ligand: one ligand per docking task, as campaigns at scale dock (default: as recorded)",
    )
    p.add_argument(
        "--routes",
        default="executable=auto,function=auto",
        help="the pilot's routes, e.g. executable=flux,function=dragon (default auto)",
    )
    p.add_argument("--baseline", choices=("srun",), default=None, help="also run every task as an srun step")
    ceiling = "outstanding srun steps at once, a site's ceiling (default: none beyond the cores)"
    p.add_argument("--srun-max-running", type=int, default=None, help=ceiling)
    p.add_argument("--local-slurm", action="store_true", help="a throwaway one-node Slurm of --cores CPUs (root)")
    p.add_argument("--out", type=Path, help="folder for the emulated runs (default RUN_DIR/emulations/<cores>x<scale>)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    p.set_defaults(handler=_emulate)


def _emulate(args: Any) -> int:

    from .errors import UserError
    from .fileio import write_json
    from .sidebyside import explain, write_side_by_side

    if args.cores < 1 or args.scale < 1 or args.nodes < 1:
        raise UserError("--cores, --scale and --nodes must be at least 1")
    try:
        routes = dict(part.split("=", 1) for part in args.routes.split(","))
    except ValueError:
        raise UserError(
            f"--routes {args.routes!r}: write kind=backend pairs, e.g. executable=flux,function=dragon"
        ) from None
    out = args.out or args.run_dir / "emulations" / f"{args.cores}x{args.scale}-{args.granularity}"
    try:
        durations = RecordedDurations.from_run(args.run_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    sides: dict[str, dict[str, Any]] = {}
    common = dict(cores=args.cores, scale=args.scale, granularity=args.granularity, nodes=args.nodes, gpus=args.gpus)
    print(f"== pilot ({args.routes}) on {args.cores} emulated cores into {out / 'pilot'}")
    sides["pilot"] = run_emulation(args.run_dir, out / "pilot", routes=routes, **common)
    if args.baseline:
        cluster = None
        if args.local_slurm:
            from .runtime.backends.slurm.local import start

            os.environ["IMPECCABLE_SLURM_CPUS"] = str(args.cores)
            cluster = start()
            if not cluster.ok:
                raise UserError(f"--local-slurm: could not start a local Slurm: {cluster.reason}")
        try:
            print(f"== {args.baseline} on {args.cores} emulated cores into {out / args.baseline}")
            sides["baseline"] = run_emulation(
                args.run_dir,
                out / args.baseline,
                routes={"executable": args.baseline, "function": args.baseline},
                srun_max_running=args.srun_max_running or args.cores,
                **common,
            )
            sides["baseline"]["step_costs"] = step_costs(args.baseline)  # alone, once the campaign is over
        finally:
            if cluster is not None:
                cluster.stop()
    result = emulation_result(sides, args.baseline, durations, args)
    result["runs"] = {
        "pilot": str((out / "pilot" / "run").resolve()),
        "baseline": str((out / args.baseline / "run").resolve()) if args.baseline else None,
    }
    if args.baseline:
        compare_form = {
            "baseline": args.baseline,
            "pilot": sides["pilot"],
            args.baseline: sides["baseline"],
            "makespan_ratio": result["makespan_ratio"],
        }
        summary = (
            f"<p><b>EMULATION</b>: every task took a duration drawn from those recorded in "
            f"{durations.source}; results are placeholders. makespan ratio pilot/{args.baseline}: "
            f"<b>{result['makespan_ratio']:.2f}</b></p>"
        )
        stores = {label: Store.open_existing(out / label / "run", readonly=True) for label in ("pilot", args.baseline)}
        page = write_side_by_side(
            out / "emulation.html",
            f"Emulated campaign: pilot vs {args.baseline}",
            summary,
            [(label, compare_form[label], stores[label]) for label in ("pilot", args.baseline)],
            explain(compare_form),
        )
        print(f"report: {page}")
    for label, fig in sides.items():
        print(
            f"{label}: makespan {fig['makespan_s']:.1f} s (ideal {fig['ideal_makespan_s']:.1f} s), utilisation "
            f"{100 * fig['utilization']:.1f} %, {fig['tasks']} tasks, launch rate "
            f"{fig['launch_rate_tasks_per_s']:.1f}/s"
        )
    if result["makespan_ratio"]:
        print(f"makespan ratio pilot/{args.baseline}: {result['makespan_ratio']:.3f}")
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0


def emulation_result(
    sides: dict[str, dict[str, Any]], baseline: str | None, durations: RecordedDurations, args: Any
) -> dict[str, Any]:
    pilot, base = sides["pilot"], sides.get("baseline")
    return {
        "makespan_ratio": pilot["makespan_s"] / base["makespan_s"] if base and base["makespan_s"] else None,
        "emulation": True,
        "recorded_run": durations.source,
        "settings": {
            "cores": args.cores,
            "nodes": args.nodes,
            "gpus": args.gpus,
            "scale": args.scale,
            "granularity": args.granularity,
            "routes": args.routes,
            "baseline": baseline,
            "srun_max_running": args.srun_max_running,
        },
        "durations": durations.summary(),
        "pilot": pilot,
        "baseline": base,
    }
