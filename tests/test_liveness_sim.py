"""Liveness of the shared slot pool, proven by simulation (see tests/liveness_sim.py).

Thousands of seeded interleavings of submissions, completions, failures,
launch failures, worker deaths, Flux rejections and cancellations, across 2-4
runtimes (local dispatcher, function pools growing or Dragon-like, Flux
partitions) on 1-3 nodes with cores and GPUs. Every one must end with every
task final, no slot held twice or lost, and no runtime asleep with work it
could place. A failure prints the shrunk scenario and its event trace; replay
one seed with ``SIM_SEED=N python -m pytest tests/test_liveness_sim.py -k one_seed -s``.
"""

from __future__ import annotations

import os

import pytest
from liveness_sim import Scenario, SimTask, minimal_failure, replay_text, run, scenario

SEEDS = int(os.environ.get("SIM_SEEDS", "2000"))


def _check(outcome) -> None:
    if not outcome.ok:
        small = minimal_failure(outcome)
        pytest.fail(f"seed {outcome.scenario.seed} failed; shrunk replay:\n{replay_text(small)}", pytrace=False)


@pytest.mark.parametrize("block", range(8))
def test_thousands_of_interleavings_stay_live(block):
    for seed in range(block, SEEDS, 8):
        _check(run(scenario(seed)))


@pytest.mark.skipif("SIM_SEED" not in os.environ, reason="replays one seed: set SIM_SEED=N")
def test_one_seed():
    outcome = run(scenario(int(os.environ["SIM_SEED"])))
    print(replay_text(outcome))
    _check(outcome)


def test_functions_arriving_while_another_runtime_holds_every_core_run_when_it_frees_them():
    """The hang of issue 34: executables take every core, then function calls arrive, then the cores
    free. With the old "is a core free?" check before asking the broker, the function runtime was
    never registered as waiting and nobody woke it."""
    tasks = (
        SimTask("x0", 0, "exe", batch=0),
        SimTask("x1", 0, "exe", batch=0),
        SimTask("f0", 1, "fn", batch=1),
        SimTask("f1", 1, "fn", batch=1),
    )
    script = ["batch 0", "wake 0", "batch 1", "wake 1", "exit exe0", "exit exe0"]
    for fn_kind in ("dragon", "fn", "local"):
        for seed in range(20):
            sc = Scenario(
                seed=seed,
                nodes=1,
                cores_per_node=2,
                gpus_per_node=0,
                runtimes=(("exe", 1), (fn_kind, 1)),
                tasks=tasks,
                gates=(None, None),
                faults=False,
            )
            outcome = run(sc, script)
            assert "exe0: x1 starts on cores" in " ".join(outcome.trace)  # the script ran as written
            _check(outcome)


def test_a_flux_launch_rejected_after_its_pass_admits_the_next_task():
    """Flux refuses a job after the pass that admitted it: its slots go back outside any pass, and the
    reactor must admit what waits (every callback ends with an admission pass)."""
    tasks = tuple(SimTask(f"x{i}", 0, "exe", cores_per_rank=2) for i in range(4))
    for seed in range(200):
        _check(
            run(
                Scenario(
                    seed=seed,
                    nodes=1,
                    cores_per_node=2,
                    gpus_per_node=0,
                    runtimes=(("flux", 1), ("fn", 1)),
                    tasks=tasks + (SimTask("f", 1, "fn"),),
                    gates=(None,),
                )
            )
        )
