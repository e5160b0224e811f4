"""``impeccable bench --workload campaign``: what the campaign manager costs per task, at 10k to 200k tasks.

The real :class:`~.campaign.CampaignRunner` (streaming selection, quotas, the
store and its durability, resume bookkeeping) runs a synthetic campaign whose
every task is a null function call in the pilot's persistent workers, with
placeholder results: nothing but the manager, the store and the pilot's
dispatch is measured. Payloads of real campaigns take seconds to hours; this
says how many tasks per second the manager itself could feed a pilot, which is
what bounds a campaign of short tasks on a large allocation.

CPU is counted per thread (``time.thread_time`` in the main thread, the
dispatcher threads' CPU clocks): the main thread's start-up (inputs checked,
library counted, pilot started) and its library reading are reported apart
from its dispatch (submitting, handling outcomes, committing results and task
records), which is the figure that must stay small and constant per task.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .campaign import CampaignRunner
from .config import Campaign, load_campaign
from .emulate import EmulatedDocking, EmulatedMD
from .emulate_payloads import placeholder_predictions
from .library_stage import CampaignLibrary, raw_records
from .runtime import Allocation, Pilot, Task, function_task
from .stages.library import LibraryRecord, write_library
from .stagetasks import DockBatch, Inference, MDJob, StageTasks, Training

DEMO = Path(__file__).resolve().parent.parent / "campaigns" / "demo.toml"
SIZES = (10_000, 50_000, 200_000)
_ATOMS = ("C", "N", "O", "S", "F", "Cl", "Br", "P", "CC", "OC")


# ------------------------------------------------------------------ the null payloads (run in workers)
def null_call() -> None:
    return None


def null_train() -> dict[str, Any]:
    return {"benchmark": True, "val_spearman": float("nan")}


def null_infer(ids: list[str]) -> dict[str, Any]:
    return placeholder_predictions(ids)


def null_combine() -> dict[str, Any]:
    return {"benchmark": True}


class NullDocking(EmulatedDocking):
    def task(self, batch: DockBatch) -> Task:
        return function_task(null_call, name=f"dock {batch.key}", tags=self.ctx.tags(batch.task_stage, batch.round))


class NullTraining(Training):
    def task(self, r: int, scores: list[tuple[str, float]]) -> Task:
        path = self.model_path(r)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("benchmark: no model\n")
        return function_task(null_train, name=f"train r{r}", tags=self.ctx.tags("train", r))


class NullInference(Inference):
    def task(self, r: int, batch: int, model_path: str, ids: list[str], smiles: list[str]) -> Task:
        return function_task(null_infer, ids, name=f"infer r{r} b{batch:05d}", tags=self.ctx.tags("infer", r))


class NullMD(EmulatedMD):
    def prepare_task(self, job: MDJob) -> Task:
        return function_task(null_call, name=f"md prepare {job.cid}", tags=self.ctx.tags("md", job.round))

    def replica_task(self, job: MDJob, index: int) -> Task:
        return function_task(null_call, name=f"md replica {index} {job.cid}", tags=self.ctx.tags("md", job.round))

    def combine_task(self, job: MDJob) -> Task:
        return function_task(null_combine, name=f"md combine {job.cid}", tags=self.ctx.tags("md", job.round))


class NullStageTasks(StageTasks):
    """Every stage's task is a null call; outcomes are the emulation's placeholders."""

    def __init__(self, campaign: Campaign, run_dir: Path) -> None:
        super().__init__(campaign, run_dir)
        nothing_drawn: Any = None
        self.docking = NullDocking(self.ctx, nothing_drawn)
        self.training = NullTraining(self.ctx)
        self.inference = NullInference(self.ctx)
        self.md = NullMD(self.ctx, nothing_drawn)


# ------------------------------------------------------------------ the synthetic campaign
def plan(tasks: int) -> dict[str, int]:
    """A campaign of about ``tasks`` tasks, shaped like a screen: 30 % seed docking, 30 % re-docking,
    about 35 % inference batches of 8, and MD ensembles of 3 replicas for 1 % of the tasks' compounds."""
    seed = max(8, int(0.3 * tasks))
    top_k = max(1, int(0.3 * tasks))
    top_m = max(1, int(0.01 * tasks))
    batch = 10
    library = max(seed + top_k, int(0.35 * tasks) * batch)
    return {"library": library, "seed_sample": seed, "top_k": top_k, "top_m": top_m, "replicas": 3, "batch_size": batch}


def synthetic_library(n: int, path: Path) -> Path:
    """``n`` distinct small molecules (a carbon chain whose substituents spell the index)."""

    def smiles(i: int) -> str:
        return "C" + "".join(f"C({_ATOMS[int(d)]})" for d in f"{i:07d}")

    write_library((LibraryRecord(f"B{i:08d}", smiles(i)) for i in range(n)), path)
    return path


def synthetic_campaign(tasks: int, folder: Path, cores: int) -> Campaign:
    p = plan(tasks)
    c = load_campaign(DEMO)
    library = synthetic_library(p["library"], folder / "library.csv")
    return c.model_copy(
        update={
            "campaign": c.campaign.model_copy(update={"name": f"bench-{tasks}", "rounds": 1}),
            "library": c.library.model_copy(
                update={
                    "path": library,
                    "limit": None,
                    "filters": c.library.filters.model_copy(
                        update={
                            "pains": False,
                            "max_molecular_weight": None,
                            "max_rotatable_bonds": None,
                            "max_heavy_atoms": None,
                        }
                    ),
                }
            ),
            "dock": c.dock.model_copy(update={"seed_sample": p["seed_sample"], "ligands_per_task": 1}),
            "infer": c.infer.model_copy(update={"batch_size": p["batch_size"]}),
            "redock": c.redock.model_copy(update={"top_k": p["top_k"]}),
            "md": c.md.model_copy(update={"top_m": p["top_m"], "replicas": p["replicas"]}),
            "hits": c.hits.model_copy(update={"check_poses": 0}),  # placeholder poses
            "pilot": c.pilot.model_copy(update={"cores": cores, "oversubscribe": True}),
        }
    )


# ------------------------------------------------------------------ measuring
class _ThreadClocks:
    """CPU seconds of every thread but this one, from their CPU clocks (sampled before they end)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-clocks", daemon=True)

    def __enter__(self) -> _ThreadClocks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while True:
            for thread in threading.enumerate():
                if thread.ident in (me, threading.main_thread().ident, None):
                    continue
                try:
                    clock = time.pthread_getcpuclockid(thread.ident)
                    self.seconds[f"{thread.name}:{thread.ident}"] = time.clock_gettime(clock)
                except (OSError, ProcessLookupError):
                    continue
            if self._stop.wait(0.05):
                return

    def total(self, prefix: str) -> float:
        return sum(v for k, v in self.seconds.items() if k.startswith(prefix))


def run_once(tasks: int, cores: int = 16, routes: dict[str, str] | None = None) -> dict[str, Any]:
    """One synthetic campaign of about ``tasks`` tasks through a fresh pilot; CPU per task by phase."""
    routes = routes or {"executable": "local", "function": "local"}
    with tempfile.TemporaryDirectory(prefix="impeccable-bench-") as tmp:
        folder = Path(tmp)
        campaign = synthetic_campaign(tasks, folder, cores)
        library_s = _library_pass_s(campaign)
        pilot = Pilot(Allocation(cores=cores), routes=routes, options={"local": {"function_workers": 2}})
        run_dir = folder / "run"
        runner = CampaignRunner(campaign, run_dir, pilot=pilot, stages=NullStageTasks(campaign, run_dir.resolve()))
        passes = _count_library_passes(runner.library)
        with _ThreadClocks() as clocks:
            t0, wall0 = time.thread_time(), time.perf_counter()
            runner.run()
            main_s, wall_s = time.thread_time() - t0, time.perf_counter() - wall0
        loop = runner.tasks
        n = len(pilot.records)
        first_cpu, first_wall = loop.first_submit if loop is not None and loop.first_submit else (t0, wall0)
        startup_s, startup_wall_s = first_cpu - t0, first_wall - wall0
        library_in_run_s = max(0, passes[0] - 1) * library_s  # the first pass (the count) is start-up
        dispatch_s = main_s - startup_s - library_in_run_s
        return {
            "tasks": n,
            "compounds": plan(tasks)["library"],
            "manager_ms_per_task": 1e3 * dispatch_s / n,
            "manager_tasks_per_s": n / max(wall_s - startup_wall_s, 1e-9),
            "wall_s": wall_s,
            "main_thread_cpu_s": {
                "total": main_s,
                "startup": startup_s,
                "library_reading": library_in_run_s,
                "dispatch_and_record": dispatch_s,
                "handlers": loop.handler_cpu_s if loop is not None else 0.0,
                "task_records": loop.record_cpu_s if loop is not None else 0.0,
            },
            "library_passes": passes[0],
            "library_pass_s": library_s,
            "library_us_per_compound": 1e6 * library_s / plan(tasks)["library"],
            "dispatcher_threads_cpu_s": clocks.total("impeccable-"),
            "other_threads_cpu_s": sum(clocks.seconds.values()) - clocks.total("impeccable-"),
            "dispatcher_ms_per_task": 1e3 * clocks.total("impeccable-") / n,
        }


def _library_pass_s(campaign: Campaign) -> float:
    """Main-thread CPU of one pass over the library as the manager reads it."""
    t0 = time.thread_time()
    for _ in raw_records(campaign):
        pass
    return time.thread_time() - t0


def _count_library_passes(library: CampaignLibrary) -> list[int]:
    count = [0]
    records = library.records

    def counted() -> Any:
        count[0] += 1
        return records()

    library.records = counted  # type: ignore[method-assign]
    return count


def bench_campaign(sizes: Sequence[int] = SIZES, cores: int = 16, repeat: int = 1) -> dict[str, Any]:
    """Runs at each size (median of ``repeat``); the top-level figures the issue's targets name."""
    from .runtime.bench import machine_info

    runs = {}
    for size in sizes:
        results = [run_once(size, cores) for _ in range(repeat)]
        results.sort(key=lambda r: r["manager_ms_per_task"])
        runs[str(size)] = {
            **results[len(results) // 2],
            "runs_manager_ms_per_task": [r["manager_ms_per_task"] for r in results],
        }
    smallest, largest = runs[str(min(sizes))], runs[str(max(sizes))]
    return {
        "workload": "campaign",
        "cores": cores,
        "repeat": repeat,
        "manager_ms_per_task": largest["manager_ms_per_task"],
        "growth_ratio": largest["manager_ms_per_task"] / smallest["manager_ms_per_task"],
        "manager_tasks_per_s": largest["manager_tasks_per_s"],
        "sizes": runs,
        "median_manager_ms_per_task": statistics.median(r["manager_ms_per_task"] for r in runs.values()),
        "machine": machine_info(),
    }
