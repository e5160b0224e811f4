"""IMPECCABLE.v2's campaign shape at scale, simulated as stage waves: the model's faithful sizing.

The model's other sizing replays our campaign with one ligand per docking task and about one task per
core: at that size the campaign is a dependency chain and no launcher matters (docs/performance.md).
The reference study's campaign was different: docking tasks that dock a batch of ligands and last
minutes, many of them per core, and each MD ensemble one MPI task. This module sizes such a campaign
for a number of cores from the durations recorded in our run, and runs it on the model's
:class:`~.model.Simulator` (the same backends, launch rates, srun ceiling and manager time per task):

- docking: batches of ``ceil(task_s / median time per ligand)`` ligands; ``seed_waves`` waves of
  them over every core, then training, then inference, then ``redock_waves`` waves of re-docking
  (8 + 2 = 10 waves per core by default, the recorded run's 4:1 seed to re-dock ratio);
- training: one task of its recorded time; inference: one wave over every core, each scoring its
  share of a library ``library_per_seed`` times the seed sample, at the recorded time per compound;
- MD: one wave of ensembles over every core, each compound a prepare task, then its ``replicas``
  replicas as one MPI task (``replicas x md.cores`` cores, as long as its longest replica), then a
  combine task.

Stages follow one another as in the study's pipeline (each waits for the whole previous one); the
manager pays its measured time per finished task. Tasks are built without compounds or files, so a
1,024-node campaign of half a million tasks simulates in seconds. Everything it gives is a prediction.
"""

from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass
from typing import Any

from .emulate import RecordedDurations
from .emulate_payloads import stable_hash
from .runtime import Task, TaskFuture, executable_task, function_task
from .timeline import median, peak_rate

DRAW_CHUNK = 10_000  # docking tasks whose ligand times are drawn at once
TRAIN = "impeccable.emulate_payloads:emulated_train"  # a function task's payload: its first argument is its time
COMBINE = "impeccable.emulate_payloads:emulated_md_combine"


@dataclass(frozen=True)
class V2Sizing:
    """How many tasks of which shape each stage has at ``cores`` cores."""

    cores: int
    ligands_per_dock_task: int
    seed_tasks: int
    redock_tasks: int
    infer_tasks: int
    compounds_per_infer_task: int
    md_ensembles: int
    replicas: int
    md_cores: int

    @property
    def tasks(self) -> int:
        return self.seed_tasks + 1 + self.infer_tasks + self.redock_tasks + 3 * self.md_ensembles

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": self.tasks}


def v2_sizing(
    cores: int,
    durations: RecordedDurations,
    *,
    replicas: int,
    md_cores: int = 1,
    task_s: float = 300.0,
    seed_waves: int = 8,
    redock_waves: int = 2,
    library_per_seed: float = 100.0,
) -> V2Sizing:
    """The study's campaign shape on ``cores`` cores (see the module docstring)."""
    if replicas * md_cores > cores:
        raise ValueError(f"an MD ensemble of {replicas} x {md_cores} cores does not fit on {cores} cores")
    per_ligand = median(durations.dock_per_ligand)
    ligands = max(1, math.ceil(task_s / per_ligand)) if per_ligand > 0 else 1
    seed_tasks = seed_waves * cores
    library = int(library_per_seed * seed_tasks * ligands)
    return V2Sizing(
        cores=cores,
        ligands_per_dock_task=ligands,
        seed_tasks=seed_tasks,
        redock_tasks=redock_waves * cores,
        infer_tasks=cores,
        compounds_per_infer_task=math.ceil(library / cores),
        md_ensembles=cores // (replicas * md_cores) if durations.md_steps.get("replica") else 0,  # no MD recorded
        replicas=replicas,
        md_cores=md_cores,
    )


class V2Campaign:
    """Drives a simulator through the stages of a :class:`V2Sizing` and says when each ended."""

    def __init__(self, sizing: V2Sizing, durations: RecordedDurations, infer_batch: int) -> None:
        """``infer_batch``: the compounds of a recorded inference batch (the time per compound is the batch's
        over this)."""
        self.s = sizing
        self.d = durations
        self.infer_s_per_compound = median(durations.infer_per_batch) / max(1, infer_batch)
        self.stage_ends: dict[str, float] = {}

    def run(self, sim: Any) -> dict[str, Any]:
        """Every stage on ``sim`` (a :class:`~.model.Simulator`); the makespan and the peak start rate."""
        enabled = gc.isenabled()
        gc.disable()  # a million long-lived tasks and records: the collector's passes over them were a third of the time
        try:
            return self._run(sim)
        finally:
            if enabled:
                gc.enable()

    def _run(self, sim: Any) -> dict[str, Any]:
        s = self.s
        order = [
            ("seed docking", lambda: self._docks("seed", s.seed_tasks)),
            ("training", lambda: [function_task(TRAIN, self.d.draw("train", "v2"), name="train")]),
            ("inference", lambda: [self._infer(i) for i in range(s.infer_tasks)]),
            ("re-docking", lambda: self._docks("redock", s.redock_tasks)),
        ]
        for stage, build in order:
            self._wait_all(sim, [sim.submit(task) for task in build()])
            self.stage_ends[stage] = sim.clock
        self._md(sim)
        self.stage_ends["MD"] = sim.clock
        starts = sorted(r.started for r in sim.records if r.started is not None)
        makespan = max(r.finished for r in sim.records if r.finished is not None)
        return {
            "makespan_s": makespan,
            "tasks": len(sim.records),
            "tasks_per_s": len(sim.records) / makespan if makespan else 0.0,
            "peak_starts_per_s": peak_rate(starts),
            "utilization": sum(r.cores * (r.finished - r.started) for r in sim.records) / (s.cores * makespan),
            "stage_ends_s": dict(self.stage_ends),
        }

    def _docks(self, origin: str, n: int) -> list[Task]:
        """``n`` docking tasks, each as long as its batch's ligands drawn from the recorded times per ligand
        (drawn in bulk: the draws are most of the model's time otherwise)."""
        import numpy as np

        rng = np.random.default_rng(stable_hash(f"v2:{origin}"))
        pool, tasks = np.asarray(self.d.dock_per_ligand, dtype=float), []
        for first in range(0, n, DRAW_CHUNK):
            size = (min(DRAW_CHUNK, n - first), self.s.ligands_per_dock_task)
            for i, seconds in enumerate(rng.choice(pool, size=size).sum(axis=1), first):
                tasks.append(executable_task(["sleep", f"{seconds:.3f}"], name=f"dock {origin} {i}"))
        return tasks

    def _infer(self, i: int) -> Task:
        seconds = self.infer_s_per_compound * self.s.compounds_per_infer_task
        return function_task(TRAIN, seconds, name=f"infer {i}")  # its own shard: nothing streamed by the manager

    def _md(self, sim: Any) -> None:
        """Each compound's prepare, ensemble (one MPI task) and combine, one after the other; compounds side by
        side."""
        s, step = self.s, {}
        for c in range(s.md_ensembles):
            step[sim.submit(self._md_prepare(c))] = (c, "prepare")
        while step:
            future = sim.next_finished()
            if future is None:
                raise RuntimeError("the simulator ran dry with MD steps still to come")
            c, done = step.pop(future, (None, ""))
            if done == "prepare":
                step[sim.submit(self._md_ensemble(c))] = (c, "ensemble")
            elif done == "ensemble":
                seconds = self.d.draw("md combine", f"v2:{c}")
                step[sim.submit(function_task(COMBINE, seconds, name=f"md combine {c}"))] = (c, "combine")

    def _md_prepare(self, c: int) -> Task:
        seconds = self.d.draw("md prepare", f"v2:{c}")
        return executable_task(["sleep", f"{seconds:.3f}"], name=f"md prepare {c}", cores_per_rank=self.s.md_cores)

    def _md_ensemble(self, c: int) -> Task:
        seconds = max(self.d.draw("md replica", f"v2:{c}:{i}") for i in range(self.s.replicas))
        return executable_task(
            ["sleep", f"{seconds:.3f}"],
            name=f"md ensemble {c}",
            ranks=self.s.replicas,
            cores_per_rank=self.s.md_cores,
            mpi=True,
        )

    @staticmethod
    def _wait_all(sim: Any, futures: list[TaskFuture]) -> None:
        left = set(futures)
        while left:
            future = sim.next_finished()
            if future is None:
                raise RuntimeError("the simulator ran dry with tasks of a stage still to finish")
            left.discard(future)
