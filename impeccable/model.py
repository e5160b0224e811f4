"""A discrete-event model of a campaign on a large allocation: the makespan predicted where it cannot be measured.

The model runs the campaign's own runner (its streaming, quotas and stage
dependencies) against a simulated pilot on a virtual clock, with the task
durations an emulation uses (drawn from a recorded run). What the model adds is
the runtime's cost, per backend, in three parameters:

- ``launch_rate`` (tasks/s): the most task starts per second a backend sustains
  (one launcher serving tasks one after the other: srun and slurmctld, a Flux
  broker, the Dragon server);
- ``latency_s``: the time from a task getting its cores to its payload starting;
- ``cold_start_s``: what a function task pays when it runs as a fresh process
  (interpreter and imports: srun), nothing in a persistent worker;

plus ``max_running`` (a site's ceiling on outstanding steps). Parameters come
from measurements on this machine (``impeccable bench``, emulation records;
:func:`calibrate`) or from published figures where nothing can be measured
here (:data:`PUBLISHED`), and every prediction says which it used. A model is
only as good as its validation: :func:`validate` compares it with measured
emulations, and the README shows both.
"""

from __future__ import annotations

import collections
import gc
import heapq
import itertools
import json
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .campaign import CampaignRunner
from .contention import SharedCores, core_shares
from .emulate import EmulatedStageTasks, RecordedDurations, emulated_campaign, recorded_campaign, scaled_library
from .events import InterruptGuard
from .gpuplan import requests, shares_per_device
from .measure import run_figures
from .runtime import Allocation, Task, TaskFuture, TaskKind, TaskState
from .runtime.records import TaskRecord
from .sizing_v2 import V2Campaign, v2_sizing
from .store import Store
from .timeline import median, peak_rate

MODEL_HELP = "predict the makespan of a recorded campaign on large allocations (a model, not a measurement)"
MODEL_DESCRIPTION = (
    "Validates the model against measured emulations (--validate), or predicts the pilot and the "
    "srun baseline from 8 to 1,024 nodes (--nodes) with launch rates published for Frontier and the costs "
    "measured here; every figure it writes is labelled as predicted."
)


@dataclass(frozen=True)
class BackendModel:
    """One backend's cost, as the model sees it."""

    name: str
    launch_rate: float  # tasks/s
    latency_s: float = 0.0
    cold_start_s: float = 0.0  # added to each function task (a fresh process per task)
    max_running: int | None = None
    ceiling_group: str = ""  # models with one group share max_running (srun's ceiling covers both task kinds)
    # CPU seconds a task spends starting (srun, slurmstepd, a fresh interpreter), measured alone; shared with the
    # other tasks starting at once over the simulator's real cores (contention.py), or at full speed without
    startup_cpu_s: float = 0.0
    source: str = "assumed"  # where the numbers come from: "measured ...", "published ..."

    @property
    def group(self) -> str:
        return self.ceiling_group or self.name


# Figures from the reference study (Frontier), for sizes this machine cannot reach; labelled as such.
PUBLISHED = {
    "srun": BackendModel(
        "srun", launch_rate=152.0, latency_s=0.03, source="published: srun peak 152 tasks/s (reference study, Frontier)"
    ),
    "flux": BackendModel(
        "flux",
        launch_rate=930.0,
        latency_s=0.01,
        source="published: RP+Flux 930 tasks/s with partitions (reference study)",
    ),
    "dragon": BackendModel(
        "dragon",
        launch_rate=1500.0,
        latency_s=0.002,
        source="published: Flux+Dragon over 1,500 tasks/s (reference study)",
    ),
}


FINISH, ARRIVE, CHECK = 0, 1, 2  # the simulator's events: a task ends; a start-up begins; one may be done


@dataclass
class _Backend:
    model: BackendModel
    queue: collections.deque[tuple[int, TaskFuture]] = field(default_factory=collections.deque)  # by submission
    launcher_free_at: float = 0.0


class Simulator:
    """Cores and GPU slots, backends, a virtual clock and its events: tasks finishing, and, where a backend's
    tasks have start-up work and the machine's cores are shared (an emulation's), start-ups beginning and ending.

    The manager handles one finished task at a time, for ``manager_s_per_task`` (its measured main-thread
    time per task), plus ``library_s_per_compound`` for each compound of an inference batch it streams."""

    def __init__(
        self,
        cores: int,
        routes: dict[TaskKind, BackendModel],
        manager_s_per_task: float = 0.0,
        gpus: int = 0,
        library_s_per_compound: float = 0.0,
        real_cores: float | None = None,
    ) -> None:
        """``real_cores``: the machine whose cores every task's start-up work shares (an emulation's); None: each
        task starts on cores of its own, as on a real allocation."""
        self.cores = cores
        self.manager_s_per_task = manager_s_per_task
        self.library_s_per_compound = library_s_per_compound
        self.manager_free_at = 0.0
        self.free = cores
        self.free_gpus = gpus
        self.clock = 0.0
        self.routes = routes
        self.backends = {m.name: _Backend(m) for m in routes.values()}
        self.events: list[tuple[float, int, int, Any]] = []  # (when, seq, FINISH/ARRIVE/CHECK, what)
        self._seq = itertools.count()
        self.starting: SharedCores[tuple[TaskFuture, float]] | None = SharedCores(real_cores) if real_cores else None
        self._check = 0  # the one CHECK event that counts (the others were overtaken by a change)
        self.records: list[TaskRecord] = []
        self.group_running: dict[str, int] = {m.group: 0 for m in routes.values()}

    def submit(self, task: Task) -> TaskFuture:
        backend = self.backends[self.routes[task.kind].name]
        record = task.new_record(self.clock, backend.model.name)
        future = TaskFuture(task, record)
        self.records.append(record)
        backend.queue.append((next(self._seq), future))
        self._schedule()
        return future

    def next_finished(self) -> TaskFuture | None:
        """Advance the clock to the next task that finishes; None when nothing runs."""
        while self.events:
            when, _, kind, what = heapq.heappop(self.events)
            if kind == FINISH:
                return self._finish(when, what)
            self._start_up(when, kind, what)
        return None

    def _finish(self, when: float, future: TaskFuture) -> TaskFuture:
        record = future.record
        record.finished, record.state = when, TaskState.DONE
        self.free += future.task.cores
        self.free_gpus += future.task.gpus
        self.group_running[self.backends[record.backend].model.group] -= 1
        # the manager handles finished tasks one at a time: what its handler submits starts from then
        self.clock = max(when, self.manager_free_at)
        self.manager_free_at = self.clock + self.manager_s_per_task + self._streamed(future.task)
        future.set_result(record if future.task.kind is TaskKind.EXECUTABLE else _result(future.task))
        self._schedule()
        return future

    def _schedule(self) -> None:
        """Start queued tasks, oldest first across backends, while cores (and each launcher) allow."""
        while True:
            heads = [
                (b.queue[0][0], b)
                for b in self.backends.values()
                if b.queue
                and (b.model.max_running is None or self.group_running[b.model.group] < b.model.max_running)
                and b.queue[0][1].task.cores <= self.free
                and b.queue[0][1].task.gpus <= self.free_gpus
            ]
            if not heads:
                return
            _, backend = min(heads, key=lambda h: h[0])
            _, future = backend.queue.popleft()
            task, m = future.task, backend.model
            self.free -= task.cores
            self.free_gpus -= task.gpus
            self.group_running[m.group] += 1
            launch = max(self.clock, backend.launcher_free_at)
            backend.launcher_free_at = launch + 1.0 / m.launch_rate
            start = launch + m.latency_s
            record = future.record
            record.scheduled, record.state = self.clock, TaskState.RUNNING
            record.slots = tuple(range(task.cores))  # the model counts cores and GPU slots, not which ones
            record.gpu_slots = tuple(range(task.gpus))
            future.set_running_or_notify_cancel()
            seconds = task_seconds(task) + (m.cold_start_s if task.kind is TaskKind.FUNCTION else 0.0)
            if m.startup_cpu_s and self.starting is not None:  # its start-up shares the machine's cores
                heapq.heappush(self.events, (start, next(self._seq), ARRIVE, (future, seconds, m.startup_cpu_s)))
                continue
            self._run(future, start + m.startup_cpu_s, seconds)

    def _run(self, future: TaskFuture, start: float, seconds: float) -> None:
        future.record.started = start
        heapq.heappush(self.events, (start + seconds, next(self._seq), FINISH, future))

    def _start_up(self, when: float, kind: int, what: Any) -> None:
        """A task begins its start-up work (ARRIVE), or the earliest start-up may be done (CHECK)."""
        assert self.starting is not None
        if kind == ARRIVE:
            future, seconds, work = what
            self.starting.add(when, work, (future, seconds))
        elif what != self._check:
            return  # a later change moved the next completion: that CHECK is the one
        for future, seconds in self.starting.done_by(when):
            self._run(future, when, seconds)
        self._check += 1
        if len(self.starting):
            heapq.heappush(self.events, (self.starting.next_done(), next(self._seq), CHECK, self._check))

    def _streamed(self, task: Task) -> float:
        """The library reading an inference batch's handler pays for the next batch it submits."""
        if task.kind is TaskKind.FUNCTION and task.function.endswith(":emulated_infer"):
            return self.library_s_per_compound * len(task.args[1])
        return 0.0


def task_seconds(task: Task) -> float:
    """The recorded time an emulated task takes (its sleep)."""
    return float(task.argv[1]) if task.kind is TaskKind.EXECUTABLE else float(task.args[0])


def _result(task: Task) -> Any:
    fn = task.function.rsplit(":", 1)[1]
    from . import emulate_payloads

    if fn == "emulated_infer":  # the payload's placeholders, without its sleep
        return emulate_payloads.placeholder_predictions(task.args[1])
    return {"emulation": True, "val_spearman": float("nan")}


class _ModelLoop:
    """The runner's task loop on the simulator's clock (the same interface as :class:`~.tasks.TaskLoop`)."""

    def __init__(self, sim: Simulator, session: int) -> None:
        self.sim = sim
        self.session = session
        self.handlers: dict[int, Any] = {}
        self.draining = False
        self.failed: list[str] = []
        self.guard = InterruptGuard()  # the runner defers Ctrl-C through it; never entered here: no handler

    def submit(self, task: Task, handler: Any) -> None:
        future = self.sim.submit(task)
        self.handlers[id(future)] = handler

    def run(self) -> None:
        while (future := self.sim.next_finished()) is not None:
            self.handlers.pop(id(future))(future)

    def failed_task(self, future: TaskFuture, stage: str) -> bool:
        return future.record.state is not TaskState.DONE

    def close(self) -> None:
        pass


class _ModelRunner(CampaignRunner):
    def __init__(self, *args: Any, sim: Simulator, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sim = sim

    def _run_session(self, session: int) -> None:
        self.tasks = _ModelLoop(self.sim, session)  # type: ignore[assignment]
        self.library.prepare(self.tasks, self.pilot.allocation.cores, then=self._plan)
        self.tasks.run()
        self.store.add_task_records(session, self.sim.records)
        self.store.end_session(session, "done")


class _ModelPilot:
    """What the runner asks of a pilot before its session: the allocation and the routes."""

    def __init__(self, cores: int, routes: dict[TaskKind, BackendModel], gpus: int = 0, gpu_shares: int = 1) -> None:
        self.allocation = Allocation(cores=cores, gpus=gpus * gpu_shares, gpu_shares=gpu_shares)
        self.routes = {kind: m.name for kind, m in routes.items()}


@dataclass(frozen=True)
class Calibration:
    """The model's parameters: each kind's backend, and the manager's time per finished task."""

    routes: dict[TaskKind, BackendModel]
    manager_s_per_task: float = 0.0
    source: str = ""
    library_s_per_compound: float = 0.0
    real_cores: float | None = None  # the machine every task's start-up work shares (an emulation's); None: none

    def as_dict(self) -> dict[str, Any]:
        return {
            "routes": {k.value: asdict(m) for k, m in self.routes.items()},
            "manager_s_per_task": self.manager_s_per_task,
            "library_s_per_compound": self.library_s_per_compound,
            "real_cores": self.real_cores,
            "source": self.source,
        }


def predict(
    run_dir: Path, *, cores: int, calibration: Calibration, scale: int = 1, granularity: str = "task", gpus: int = 0
) -> dict[str, Any]:
    """The campaign recorded in ``run_dir`` at ``scale`` on ``cores`` cores and ``gpus`` GPUs (one node), simulated:
    run_figures of it. GPU tasks hold their GPU slots (the campaign's shares) for their recorded time."""
    recorded = recorded_campaign(run_dir)
    durations = RecordedDurations.from_run(run_dir)
    with tempfile.TemporaryDirectory(prefix="impeccable-model-") as tmp:
        work = Path(tmp)
        library = scaled_library(recorded, scale, work / "library.csv")
        routes = calibration.routes
        campaign = emulated_campaign(
            recorded, library, cores, scale, granularity, {k.value: m.name for k, m in routes.items()}, gpus=gpus
        )
        shares = shares_per_device(requests(campaign, cores, gpus)) if gpus else 1
        sim = Simulator(
            cores,
            routes,
            calibration.manager_s_per_task,
            gpus * shares,
            calibration.library_s_per_compound,
            calibration.real_cores,
        )
        runner = _ModelRunner(
            campaign,
            work / "run",
            stages=EmulatedStageTasks(campaign, work / "run", durations),
            pilot=_ModelPilot(cores, routes, gpus, shares),  # type: ignore[arg-type]
            sim=sim,
        )
        enabled = gc.isenabled()
        gc.disable()  # tens of thousands of long-lived tasks and records: the collector's passes cost a third
        try:
            runner.run()
        finally:
            if enabled:
                gc.enable()
        figures = run_figures(runner.store)
        runner.store.close()
    figures["model"] = calibration.as_dict()
    return figures


def launch_rate(backend: str, kind: TaskKind, cores: int, tasks: int = 2000) -> float:
    """A backend's launch ceiling on this machine: ``impeccable bench``'s throughput of null tasks, which
    do nothing but start and end, on ``cores`` advertised cores."""
    from .runtime.bench import run_pilot

    workload = "null-exec" if kind is TaskKind.EXECUTABLE else "null-func"
    return float(run_pilot(backend, workload, tasks, cores).metrics["throughput_tasks_per_s"])


def calibrate(emulation_dir: Path, rates: dict[TaskKind, float] | None = None) -> Calibration:
    """The model's parameters from a measured emulation's records (and a saturating benchmark's rates).

    Launch rate: ``rates`` (from :func:`launch_rate`), else the most starts in any one-second window of
    the records (a floor: the launcher may not have been the limit); latency: the median time from cores
    to start; the manager's time per task: its main thread's CPU from its first task to the end (handlers,
    store, submissions) per task, start-up apart, and its library reading per compound. An emulation recorded
    before these were kept apart gives its whole process's CPU per task (an overestimate, labelled).
    """
    store = Store.open_existing(emulation_dir, readonly=True)
    try:
        rows = store.task_rows(store.sessions()[-1]["session"])
        meta = json.loads(store.get_meta("emulation") or "{}")
    finally:
        store.close()
    found: dict[TaskKind, BackendModel] = {}
    for kind in TaskKind:
        mine = [r for r in rows if r["kind"] == kind.value and r["started"] and r["scheduled"]]
        if not mine:
            continue
        backend = mine[0]["backend"]
        latency = median([r["started"] - r["scheduled"] for r in mine])
        rate = (rates or {}).get(kind) or max(peak_rate(sorted(r["started"] for r in mine)), 1.0)
        how = "bench null tasks" if (rates or {}).get(kind) else "peak starts/s in the records"
        found[kind] = BackendModel(
            f"{backend}:{kind.value}",
            launch_rate=rate,
            latency_s=latency,
            source=f"measured: launch rate from {how}, latency from {emulation_dir}",
        )
    if "manager_dispatch_cpu_s" in meta:
        manager, how = meta["manager_dispatch_cpu_s"] / max(len(rows), 1), "main-thread dispatch CPU per task"
    else:
        manager, how = meta.get("manager_cpu_s", 0.0) / max(len(rows), 1), "whole-process CPU per task (older record)"
    return Calibration(
        found,
        manager,
        source=f"measured on this machine ({how}): {emulation_dir}",
        library_s_per_compound=meta.get("library_cpu_s_per_compound", 0.0),
    )


def last_session_rows(emulation_dir: Path) -> list[dict[str, Any]]:
    """The task records of a run's last session (an emulation has one)."""
    store = Store.open_existing(emulation_dir, readonly=True)
    try:
        return store.task_rows(store.sessions()[-1]["session"])
    finally:
        store.close()


def loaded_function_start_up(emulation_dir: Path, recorded: RecordedDurations, real_cores: float) -> float:
    """The CPU seconds a function step's start-up took under the emulation's load: the mean over its function
    steps of their share of the machine's cores from launch to the start of their payload (its stage's recorded
    median), processor sharing among them (contention.core_shares)."""
    rows = last_session_rows(emulation_dir)
    payload = {
        "infer": median(recorded.infer_per_batch),
        "train": median(recorded.train),
        "md": median(recorded.md_steps["combine"]),
    }
    # every step counts, a failed one too (srun failing a launch on a saturated slurmd spent its time there): the
    # simulator fails no step and runs the whole campaign. Counting only the completed steps' shares gave +13 %
    # and +56 % at 256 and 512 emulated cores, where 73 and 387 steps failed (docs/performance.md)
    intervals = [
        (r["started"], max(r["started"], r["finished"] - payload.get(r["stage"], 0.0)))
        for r in rows
        if r["kind"] == "function" and r["started"] and r["finished"]
    ]
    shares = core_shares(intervals, real_cores)
    return sum(shares) / len(shares) if shares else 0.0


def cold_start(emulation_dir: Path, recorded: RecordedDurations) -> float:
    """The median extra run time of the function tasks over their recorded durations: what each pays for
    its interpreter and imports when it runs as a fresh process (srun), measured."""
    rows = last_session_rows(emulation_dir)
    base = median(recorded.infer_per_batch)
    extra = [
        r["finished"] - r["started"] - base
        for r in rows
        if r["kind"] == "function" and r["stage"] == "infer" and r["started"] and r["finished"]
    ]
    return max(0.0, median(extra))


def uncontended_cold_start(runs: int = 3) -> float:
    """Median wall time of a fresh ``python -m impeccable.runtime.run_function`` that makes an inference task's
    imports (torch, RDKit) and returns at once: what an srun function step costs on a core of its own, as on a
    real allocation. Emulations on this machine measure it under contention (thousands of starts on 2 cores)."""
    import pickle
    import subprocess
    import sys
    import time

    from .runtime.backends.slurm.srun import RUN_FUNCTION

    seconds = []
    with tempfile.TemporaryDirectory(prefix="impeccable-cold-") as tmp:
        args = Path(tmp) / "args.pkl"
        args.write_bytes(pickle.dumps(((0.0, []), {})))
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    RUN_FUNCTION,
                    "impeccable.emulate_payloads:emulated_infer",
                    "--args",
                    str(args),
                    "--result",
                    str(Path(tmp) / "out.pkl"),
                ],
                check=True,
            )
            seconds.append(time.perf_counter() - t0)
    return median(seconds)


# ------------------------------------------------------------------ the command
def register(sub: Any) -> None:
    p = sub.add_parser("model", help=MODEL_HELP, description=MODEL_DESCRIPTION)
    p.add_argument("run_dir", type=Path, help="the recorded run the emulations drew their durations from")
    p.add_argument(
        "--validate",
        type=Path,
        nargs="+",
        metavar="EMULATION.json",
        help="emulations (from impeccable emulate --json) to predict and compare with",
    )
    p.add_argument("--nodes", default="", help="node counts to predict, e.g. 8,16,32,64,128,256,512,1024")
    p.add_argument("--cores-per-node", type=int, default=56, help="default 56 (Frontier)")
    size = "campaign size at each node count, in ligand-granularity tasks per core (default 1)"
    p.add_argument("--tasks-per-core", type=float, default=1.0, help=size)
    p.add_argument(
        "--calibrate-from",
        type=Path,
        metavar="EMULATION.json",
        help="with --validate: calibrate on this emulation (e.g. a smaller one) and predict the others, "
        "instead of calibrating each on itself",
    )
    p.add_argument(
        "--measured",
        type=Path,
        nargs="+",
        metavar="RUN_DIR",
        help="with --validate: real runs of the same campaign at the emulation's size (the pilot's, then "
        "the baseline's), e.g. the two sides of `compare --nodes 4` that an emulation at 4 x the "
        "per-node cores replays: the emulation's and the model's makespan error against them",
    )
    p.add_argument(
        "--costs-from",
        type=Path,
        metavar="EMULATION.json",
        help="a measured emulation against srun: its manager time per task and function cold start",
    )
    p.add_argument(
        "--sizing",
        choices=("ligand", "v2"),
        default="ligand",
        help="with --nodes: ligand (this campaign, one ligand per docking task, --tasks-per-core) or v2: also the "
        "reference study's campaign shape (docking batches of minutes, 10 waves per core, MD ensembles as one "
        "MPI task; sizing_v2.py)",
    )
    p.add_argument("--json", type=Path, metavar="FILE")
    p.set_defaults(handler=_model)


def _model(args: Any) -> int:
    from .errors import UserError
    from .fileio import write_json

    if not args.validate and not args.nodes:
        raise UserError("give --validate EMULATION.json ... or --nodes N,N,...")
    result: dict[str, Any] = {"model": True, "recorded_run": str(args.run_dir.resolve())}
    if args.validate:
        result["validation"] = [validate_one(args.run_dir, path, args.calibrate_from) for path in args.validate]
        for row in result["validation"]:
            against_real_runs(row, args.measured or [])
            for side in ("pilot", "baseline"):
                if row.get(side):
                    v = row[side]
                    print(
                        f"{row['cores']} cores (calibrated at {row['calibration_cores']}), {side}: measured "
                        f"{v['measured_makespan_s']:.1f} s, predicted {v['predicted_makespan_s']:.1f} s "
                        f"(error {100 * v['error']:+.1f} %)"
                    )
                    print(f"  fitted on {row['calibrated_on']} ({side}): {_parameters(v['calibration'])}")
                    if "real_run" in v:
                        r = v["real_run"]
                        print(
                            f"  against the real run {r['run_dir']} ({r['makespan_s']:.1f} s on {', '.join(r['nodes'])}): "
                            f"emulation {100 * r['emulation_error']:+.1f} %, model {100 * r['model_error']:+.1f} %"
                        )
        errors = [
            abs(row[side]["error"]) for row in result["validation"] for side in ("pilot", "baseline") if row.get(side)
        ]
        result["model_error_max"] = max(errors) if errors else None
        if errors:
            print(f"model error, worst over the emulations and both sides: {100 * result['model_error_max']:.1f} %")
    if args.sizing != "ligand" and not args.nodes:
        raise UserError(f"--sizing {args.sizing} sizes the predictions: give --nodes N,N,... too")
    if args.nodes:
        costs = args.costs_from or _costs_source(args.validate)
        if not (json.loads(costs.read_text()).get("runs") or {}).get("baseline"):
            raise UserError(f"{costs}: an emulation without the srun side (emulate --baseline srun) has no srun costs")
        nodes = [int(n) for n in args.nodes.split(",") if n]
        sizings = ("ligand", "v2") if args.sizing == "v2" else ("ligand",)
        result["prediction"] = predict_scaling(
            args.run_dir, costs, nodes, args.cores_per_node, args.tasks_per_core, sizings
        )
        _print_predictions(result["prediction"])
        v2 = {row["nodes"]: row for row in result["prediction"].get("rows_v2", [])}
        if 1024 in v2:
            result["predicted_ratio_1024_v2"] = v2[1024]["makespan_ratio"]
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0


def _parameters(calibration: dict[str, Any]) -> str:
    """A calibration in one line: each route's launch rate, latency and start-up work, the manager's time."""
    parts = [
        f"{kind} {m['name']} {m['launch_rate']:.0f}/s, latency {1000 * m['latency_s']:.0f} ms"
        + (f", start-up work {m['startup_cpu_s']:.2f} CPU-s" if m["startup_cpu_s"] else "")
        + (f", cold start {m['cold_start_s']:.2f} s" if m["cold_start_s"] else "")
        for kind, m in calibration["routes"].items()
    ]
    shared = f"; start-ups share {calibration['real_cores']:g} real cores" if calibration["real_cores"] else ""
    return f"{'; '.join(parts)}; manager {1000 * calibration['manager_s_per_task']:.3f} ms per task{shared}"


def _costs_source(validate: list[Path] | None) -> Path:
    """The emulation whose measured costs a prediction uses when --costs-from is not given: the largest of those
    validated that ran both sides."""
    from .errors import UserError

    loaded = {path: json.loads(path.read_text()) for path in validate or []}
    both = [path for path, e in loaded.items() if (e.get("runs") or {}).get("baseline")]
    if not both:
        raise UserError("--nodes needs --costs-from EMULATION.json (a measured emulation against srun) or --validate")
    return max(both, key=lambda path: loaded[path]["settings"]["cores"])


def _print_predictions(prediction: dict[str, Any]) -> None:
    for row in prediction["rows"]:
        print(
            f"{row['nodes']:5d} nodes, one ligand per task: pilot {row['pilot_makespan_s']:.0f} s, srun "
            f"{row['srun_makespan_s']:.0f} s, ratio {row['makespan_ratio']:.2f} (predicted)"
        )
    for row in prediction.get("rows_v2", []):
        print(
            f"{row['nodes']:5d} nodes, study-shaped ({row['tasks']:,} tasks): pilot {row['pilot_makespan_s']:.0f} s, "
            f"srun {row['srun_makespan_s']:.0f} s, makespan ratio {row['makespan_ratio']:.2f}, peak start rate "
            f"x{row['peak_start_rate_ratio'] or float('nan'):.1f} (predicted)"
        )


def validate_one(run_dir: Path, emulation_json: Path, calibrate_from: Path | None = None) -> dict[str, Any]:
    """Predict one measured emulation and give the model's error on each side.

    By default each side is calibrated on the emulation it predicts (does the model's structure hold?);
    with ``calibrate_from`` (another emulation, usually at another size) it is calibrated there and predicts
    this one: the test of whether the model extrapolates, which is what a prediction at scale relies on.
    """
    measured = json.loads(emulation_json.read_text())
    source = json.loads(calibrate_from.read_text()) if calibrate_from else measured
    settings = measured["settings"]
    row: dict[str, Any] = {
        "emulation": str(emulation_json),
        "cores": settings["cores"],
        "scale": settings["scale"],
        "calibrated_on": str(calibrate_from or emulation_json),
        "calibration_cores": source["settings"]["cores"],
    }
    srun_ceiling = settings.get("srun_max_running") or settings["cores"]  # as the predicted run had it
    for side in ("pilot", "baseline"):
        if not (measured.get("runs") or {}).get(side) or not (source.get("runs") or {}).get(side):
            continue
        calibration = _calibrate_side(run_dir, source, side, srun_ceiling=srun_ceiling)
        predicted = predict(
            run_dir,
            cores=settings["cores"],
            calibration=calibration,
            scale=settings["scale"],
            granularity=settings["granularity"],
        )
        m = measured[side]["makespan_s"]
        row[side] = {
            "measured_makespan_s": m,
            "predicted_makespan_s": predicted["makespan_s"],
            "error": (predicted["makespan_s"] - m) / m,
            "measured_tasks": measured[side]["tasks"],
            "predicted_tasks": predicted["tasks"],
            "calibration": calibration.as_dict(),
        }
    return row


def against_real_runs(row: dict[str, Any], runs: list[Path]) -> None:
    """Add to each side of a validation row the real run of that side (``runs``: the pilot's, then the
    baseline's): its makespan and nodes, and the emulation's and the model's relative error against it."""
    from .measure import run_figures
    from .store import Store

    for side, run in zip(("pilot", "baseline"), runs):
        if not row.get(side):
            continue
        store = Store.open_existing(run, readonly=True)
        try:
            real = run_figures(store)
        finally:
            store.close()
        v, m = row[side], real["makespan_s"]
        v["real_run"] = {
            "run_dir": str(run),
            "makespan_s": m,
            "nodes": real["nodes"],
            "cores": real["cores"],
            "emulation_error": (v["measured_makespan_s"] - m) / m,
            "model_error": (v["predicted_makespan_s"] - m) / m,
        }


def _calibrate_side(run_dir: Path, emulation: dict[str, Any], side: str, srun_ceiling: int) -> Calibration:
    """One side's parameters from a measured emulation: its records, and a launch-rate bench at its size for
    the routes this machine can bench (srun's rate comes from the records).

    The kinds routed to srun share ``srun_ceiling`` outstanding steps (the site's limit as the predicted
    run has it), so a function step and an executable step never exceed it together.
    """
    cores = emulation["settings"]["cores"]
    backends = emulation[side]["routes"]
    srun_kinds = {kind for kind in TaskKind if backends[kind.value] == "srun"}
    rates = {kind: launch_rate(backends[kind.value], kind, cores) for kind in TaskKind if kind not in srun_kinds}
    calibration = calibrate(Path(emulation["runs"][side]), rates)
    costs = dict((emulation[side].get("step_costs") or {}).get("median_s") or {})
    if srun_kinds and all(costs.get(kind.value) for kind in srun_kinds):
        # each step's start-up shares the machine's cores with the steps starting beside it (contention.py): an
        # executable step's as measured alone; a function step's (a fresh interpreter's imports) as its records
        # show it under this machine's load, which costs more than alone (many interpreters on 2 cores)
        real = emulation[side]["step_costs"]["machine_cores"]
        if TaskKind.FUNCTION in srun_kinds:
            loaded = loaded_function_start_up(Path(emulation["runs"][side]), RecordedDurations.from_run(run_dir), real)
            costs["function"] = max(costs["function"], loaded)
        routes = {
            kind: replace(m, max_running=srun_ceiling, ceiling_group="srun", startup_cpu_s=costs[kind.value])
            if kind in srun_kinds
            else m
            for kind, m in calibration.routes.items()
        }
        source = f"{calibration.source}; step start-up shared over the machine's {real} cores"
        return replace(calibration, routes=routes, real_cores=real, source=source)
    if srun_kinds:
        why = (emulation[side].get("step_costs") or {}).get("error") or "no step_costs in it (an older emulation)"
        print(
            f"note: {emulation['settings']['cores']}-core emulation, {side}: srun steps' start-up alone not measured "
            f"({why}); function steps pay the records' contended cold start instead, which is far less accurate"
        )
    # an older emulation: a function step pays the cold start measured in its records (contended), no more
    cold = (
        cold_start(Path(emulation["runs"][side]), RecordedDurations.from_run(run_dir))
        if TaskKind.FUNCTION in srun_kinds
        else 0.0
    )
    routes = {
        kind: (
            replace(
                m,
                max_running=srun_ceiling,
                ceiling_group="srun",
                cold_start_s=cold if kind is TaskKind.FUNCTION else m.cold_start_s,
            )
            if kind in srun_kinds
            else m
        )
        for kind, m in calibration.routes.items()
    }
    return replace(calibration, routes=routes)


def predict_scaling(
    run_dir: Path,
    costs_from: Path,
    nodes: list[int],
    cores_per_node: int,
    tasks_per_core: float,
    sizings: tuple[str, ...] = ("ligand",),
) -> dict[str, Any]:
    """Pilot (Flux + Dragon, published rates) and srun (published peak, site ceiling) from ``nodes``;
    the manager's time per task (from ``costs_from``) and the function cold start (uncontended, measured now;
    the contended one of ``costs_from`` is reported beside it) measured here. ``sizings``: "ligand" (our
    campaign, one ligand per docking task, ``tasks_per_core``) and "v2" (the study's shape: sizing_v2.py).
    Predicted, not measured."""
    measured = json.loads(costs_from.read_text())
    recorded = RecordedDurations.from_run(run_dir)
    pilot_run, base_run = Path(measured["runs"]["pilot"]), Path(measured["runs"]["baseline"])
    measured_costs = calibrate(pilot_run)
    manager, library = measured_costs.manager_s_per_task, measured_costs.library_s_per_compound
    contended = cold_start(base_run, recorded)
    cold = uncontended_cold_start()  # at scale every step has a core of its own
    pilot = Calibration(
        {TaskKind.EXECUTABLE: PUBLISHED["flux"], TaskKind.FUNCTION: PUBLISHED["dragon"]},
        manager,
        "published rates (reference study), manager time measured here",
        library,
    )
    srun = Calibration(
        {TaskKind.EXECUTABLE: PUBLISHED["srun"], TaskKind.FUNCTION: replace(PUBLISHED["srun"], cold_start_s=cold)},
        manager,
        "published srun peak; function cold start measured here, uncontended",
        library,
    )
    result: dict[str, Any] = {
        "predicted": True,
        "cores_per_node": cores_per_node,
        "tasks_per_core": tasks_per_core,
        "manager_s_per_task": manager,
        "library_s_per_compound": library,
        "function_cold_start_s": cold,
        "function_cold_start_contended_s": contended,
        "rows": [],
    }
    if "ligand" in sizings:
        for n in nodes:
            cores = n * cores_per_node
            scale = max(1, round(tasks_per_core * cores / _tasks_at_scale_one(run_dir)))
            p = predict(run_dir, cores=cores, calibration=pilot, scale=scale, granularity="ligand")
            b = predict(run_dir, cores=cores, calibration=srun, scale=scale, granularity="ligand")
            result["rows"].append(
                {
                    "nodes": n,
                    "cores": cores,
                    "scale": scale,
                    "tasks": p["tasks"],
                    "pilot_makespan_s": p["makespan_s"],
                    "srun_makespan_s": b["makespan_s"],
                    "makespan_ratio": p["makespan_s"] / b["makespan_s"],
                    "pilot_utilization": p["utilization"],
                    "srun_utilization": b["utilization"],
                }
            )
    if "v2" in sizings:
        result["rows_v2"] = [
            _predict_v2(run_dir, recorded, n * cores_per_node, pilot, srun) | {"nodes": n} for n in nodes
        ]
    return result


def _predict_v2(
    run_dir: Path, recorded: RecordedDurations, cores: int, pilot: Calibration, srun: Calibration
) -> dict[str, Any]:
    """Both sides of the study-shaped campaign (sizing_v2.py) at ``cores`` cores."""
    from .errors import UserError

    c = recorded_campaign(run_dir)
    try:
        sizing = v2_sizing(cores, recorded, replicas=c.md.replicas, md_cores=c.md.cores)
    except ValueError as exc:
        raise UserError(f"--sizing v2 at {cores} cores: {exc}") from None
    sides = {}
    for label, cal in (("pilot", pilot), ("srun", srun)):
        sim = Simulator(cores, cal.routes, cal.manager_s_per_task, real_cores=cal.real_cores)
        sides[label] = V2Campaign(sizing, recorded, c.infer.batch_size).run(sim)
    p, b = sides["pilot"], sides["srun"]
    return {
        "cores": cores,
        "sizing": sizing.as_dict(),
        "tasks": p["tasks"],
        "pilot_makespan_s": p["makespan_s"],
        "srun_makespan_s": b["makespan_s"],
        "makespan_ratio": p["makespan_s"] / b["makespan_s"],
        "throughput_ratio": p["tasks_per_s"] / b["tasks_per_s"],
        "peak_start_rate_ratio": p["peak_starts_per_s"] / b["peak_starts_per_s"] if b["peak_starts_per_s"] else None,
        "pilot_peak_starts_per_s": p["peak_starts_per_s"],
        "srun_peak_starts_per_s": b["peak_starts_per_s"],
        "pilot_utilization": p["utilization"],
        "srun_utilization": b["utilization"],
        "pilot_stage_ends_s": p["stage_ends_s"],
        "srun_stage_ends_s": b["stage_ends_s"],
    }


def _tasks_at_scale_one(run_dir: Path) -> int:
    """Tasks of the recorded campaign at scale 1 with one ligand per docking task (seed + re-dock + batches +
    training + MD: prepare, replicas and combine per compound)."""
    c = recorded_campaign(run_dir)
    from .library_stage import raw_records

    library = sum(1 for _ in raw_records(c))  # the first library.limit
    return (
        c.dock.seed_sample + c.redock.top_k + c.md.top_m * (c.md.replicas + 2) + -(-library // c.infer.batch_size) + 1
    )
