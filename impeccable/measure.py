"""A run's figures, from its task records: what ``compare`` and ``emulate`` report for each side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .runtime import summarize
from .runtime.metrics import per_node_utilization
from .store import Store


def run_figures(store: Store) -> dict[str, Any]:
    """The last session's makespan, utilisation, launch rate, queue wait, per-stage throughput and ideal makespan.

    Everything comes from the task records. The ideal makespan is the lower bound max(busy core-seconds /
    cores, critical path): no schedule does better. ``greedy_bound_makespan_s`` (busy / cores + critical
    path) is Graham's bound, which any greedy schedule stays under.
    """
    from .plots import stage_throughput

    session = store.sessions()[-1]
    cores = session["cores"]
    nodes = json.loads(session.get("nodes") or "[]")
    records = store.task_records(session["session"])
    rows = store.task_rows(session["session"])
    m = summarize(records, cores, session["gpus"], session["gpu_shares"])
    _, stages = stage_throughput(rows)
    chain = critical_path_s(rows, store.md_batches())
    ideal = max(m.busy_core_s / cores, chain)  # no schedule beats both the work and the chain
    greedy = m.busy_core_s / cores + chain  # Graham: what any greedy (list) schedule stays under
    starts = sorted(r.started for r in records if r.started)
    span = (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    return {
        "makespan_s": m.makespan_s,
        "utilization": m.utilization,
        "tasks": m.tasks,
        "cores": cores,
        "launch_rate_tasks_per_s": (len(starts) - 1) / span if span > 0 else 0.0,
        "throughput_tasks_per_s": m.throughput_tasks_per_s,
        "queue_wait_median_s": m.queue_wait_median_s,
        "queue_wait_p95_s": m.queue_wait_p95_s,
        "launch_overhead_median_s": m.launch_overhead_median_s,
        "busy_core_s": m.busy_core_s,
        "critical_path_s": chain,
        "ideal_makespan_s": ideal,
        "greedy_bound_makespan_s": greedy,
        "makespan_over_ideal": m.makespan_s / ideal if ideal else None,
        "routes": json.loads(session["routes"] or "{}"),
        "stages": stages,
        "failed": m.failed,
        "nodes": nodes,
        "per_node_utilization": per_node_utilization(records, nodes, cores),
        "gpus": m.gpus,
        "busy_gpu_s": m.busy_gpu_s,
        "gpu_utilization": m.gpu_utilization,
    }


def critical_path_s(rows: Sequence[dict[str, Any]], md_batches: dict[str, int]) -> float:
    """The longest chain of dependent tasks, with the durations the records show.

    The campaign's dependencies: training waits for every seed docking (round 0) or for every re-docking of
    the round before; inference batch b waits for training; its re-docking waits for it; the MD of a compound
    nominated while streaming waits for its batch's re-docking (``md_batches``: compound -> batch), and the
    round end's MD for every re-docking; a compound's MD is prepare, then its replicas side by side, then
    combine. The library's preparation (its batches side by side) comes before all of it, and the pose checks
    (side by side) after. Graham's bound for a greedy schedule is then busy core-seconds / cores + this chain, the "ideal"
    makespan the figures compare with.
    """
    seconds: dict[str, float] = {}
    for r in rows:
        if r.get("started") and r.get("finished") and r.get("state") == "DONE":
            seconds[r["name"]] = r["finished"] - r["started"]
    by_round: dict[int, dict[str, dict[Any, float]]] = {}
    md_steps: dict[str, dict[str, float]] = {}
    before, after = [0.0], [0.0]  # library batches ("library bNNNNN"), pose checks ("pose check N")
    for name, t in seconds.items():
        kind, _, rest = name.partition(" ")
        if kind == "library":
            before.append(t)
        elif kind == "pose" and rest.startswith("check "):
            after.append(t)
        elif kind == "dock" and "-seed-" in rest:
            by_round.setdefault(0, {}).setdefault("seed", {})[rest] = t
        elif kind == "dock" and "-redock-" in rest:
            r = int(rest.split("-r", 1)[1].split("-", 1)[0])
            by_round.setdefault(r, {}).setdefault("redock", {})[int(rest.rsplit("-", 1)[1])] = t
        elif kind == "train":
            by_round.setdefault(int(rest[1:]), {}).setdefault("train", {})[0] = t
        elif kind == "infer":
            r_text, b_text = rest.split()
            by_round.setdefault(int(r_text[1:]), {}).setdefault("infer", {})[int(b_text[1:])] = t
        elif kind == "md":  # "md prepare CID", "md replica I CID", "md combine CID"; "md CID" (older runs)
            step, _, cid = rest.partition(" ")
            if step == "replica":
                cid = cid.partition(" ")[2]
            elif step not in ("prepare", "combine"):
                step, cid = "whole ensemble", rest
            chain = md_steps.setdefault(cid, {})
            chain[step] = max(chain.get(step, 0.0), t)  # replicas run side by side: the longest counts
    ready = max(before) + max(by_round.get(0, {}).get("seed", {0: 0.0}).values())  # round 0 trains then
    longest = ready
    md = {cid: sum(steps.values()) for cid, steps in md_steps.items()}
    for r in sorted(k for k in by_round if k >= 0):
        stages = by_round[r]
        trained = ready + stages.get("train", {}).get(0, 0.0)
        redocked = {b: trained + t + stages.get("redock", {}).get(b, 0.0) for b, t in stages.get("infer", {}).items()}
        round_end = max(redocked.values(), default=trained)
        for cid, t in md.items():
            batch = md_batches.get(cid, -1)
            longest = max(longest, redocked.get(batch, round_end) + t)
        longest = max(longest, round_end)
        ready = round_end
    return longest + max(after)
