"""Stress with the real runtimes: every task reaches a final state, no stall, on every route.

Many short rounds of mixed executables and function calls with random durations (zero included),
random failures and cancellations, in phases that flip between the runtimes (executables only,
functions only, both at once), on local routes always and on Dragon and Flux where installed.
The pilot's stall watchdog runs with a short fuse; a round fails on any stall event, or if any task is
left unfinished. The simulation (test_liveness_sim.py) explores interleavings; this checks the real
threads, processes and sockets.
"""

from __future__ import annotations

import concurrent.futures
import random
import shutil

import pytest

from impeccable.runtime import Allocation, Pilot, TaskState, backend_class, executable_task, function_task, probes

pytestmark = pytest.mark.slow

SLEEP, SH = shutil.which("sleep"), shutil.which("sh")
DURATIONS = (0.0, 0.0, 0.01, 0.05, 0.2)
ROUTES = {
    "local+local": {"executable": "local", "function": "local"},
    "local+dragon": {"executable": "local", "function": "dragon"},
    "flux+dragon": {"executable": "flux", "function": "dragon"},
    "flux+local": {"executable": "flux", "function": "local"},
}


def _route_or_skip(name: str) -> dict[str, str]:
    routes = ROUTES[name]
    for backend in set(routes.values()):
        ok, why = backend_class(backend).available()
        if not ok:
            pytest.skip(f"{backend} backend unavailable: {why}")
    return routes


def _round(rng: random.Random, phase: str, n: int, cores: int) -> list:
    tasks = []
    for i in range(n):
        kind = {"exe": "exe", "fn": "fn"}.get(phase) or rng.choice(("exe", "fn"))
        width = rng.choice((1, 1, 1, 2, cores))
        duration = rng.choice(DURATIONS)
        fails = rng.random() < 0.1
        retries = rng.choice((0, 1))
        if kind == "exe":
            argv = [SH, "-c", "exit 3"] if fails else [SLEEP, f"{duration:g}"]
            tasks.append(executable_task(argv, name=f"x{i}", cores_per_rank=width, retries=retries))
        elif fails:
            tasks.append(function_task(probes.fail, "on purpose", name=f"f{i}", retries=retries))
        else:
            tasks.append(function_task(probes.sleep, duration, name=f"f{i}", cores_per_rank=width, retries=retries))
    return tasks


@pytest.mark.parametrize("route", list(ROUTES))
def test_many_short_rounds_finish_every_task_without_a_stall(route):
    routes = _route_or_skip(route)
    cores = 4
    rng = random.Random(34)
    options = {"flux": {"use_existing": False}} if "flux" in routes.values() else {}
    with Pilot(Allocation(cores=cores), routes=routes, options=options, stall_after_s=2.0) as pilot:
        for round_ in range(12):
            phase = ("exe", "fn", "both")[round_ % 3]
            futures = pilot.submit_many(_round(rng, phase, rng.randint(1, 30), cores))
            for future in rng.sample(futures, k=len(futures) // 8):
                pilot.cancel(future)
            done, not_done = concurrent.futures.wait(futures, timeout=120)
            left = [(f.record.name, f.record.backend, f.record.state.value) for f in not_done]
            pools = [broker.state() for broker in pilot._brokers] if left else []  # who holds the cores
            assert not left, f"round {round_} ({phase}): not final after 120 s: {left}; stalls: {pilot.stalls}; {pools}"
            states = {f.record.state for f in futures}
            assert states <= {TaskState.DONE, TaskState.FAILED, TaskState.CANCELED}
        assert pilot.stalls == [], [event.describe() for event in pilot.stalls]
