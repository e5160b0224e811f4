"""A run's figures, from its task records: what ``compare`` and ``emulate`` report for each side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .runtime import summarize
from .store import Store


def run_figures(store: Store) -> dict[str, Any]:
    """The last session's makespan, utilisation, launch rate, queue wait, per-stage throughput and ideal makespan.

    Everything comes from the task records. The ideal makespan is a lower bound: the busy core-seconds
    spread over every core, plus the longest task of each stage in dependency order.
    """
    from .plots import stage_throughput

    session = store.sessions()[-1]
    cores = session["cores"]
    records = store.task_records(session["session"])
    rows = store.task_rows(session["session"])
    m = summarize(records, cores)
    _, stages = stage_throughput(rows)
    ideal = m.busy_core_s / cores + critical_path_s(rows)
    starts = sorted(r.started for r in records if r.started)
    span = (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    return {
        "makespan_s": m.makespan_s, "utilization": m.utilization, "tasks": m.tasks, "cores": cores,
        "launch_rate_tasks_per_s": (len(starts) - 1) / span if span > 0 else 0.0,
        "throughput_tasks_per_s": m.throughput_tasks_per_s,
        "queue_wait_median_s": m.queue_wait_median_s, "queue_wait_p95_s": m.queue_wait_p95_s,
        "launch_overhead_median_s": m.launch_overhead_median_s,
        "busy_core_s": m.busy_core_s, "ideal_makespan_s": ideal, "makespan_over_ideal": m.makespan_s / ideal if ideal else None,
        "routes": json.loads(session["routes"] or "{}"), "stages": stages, "failed": m.failed,
    }


def critical_path_s(rows: Sequence[dict[str, Any]]) -> float:
    """A lower bound on the campaign's chain of dependent work: the longest task of each stage, in order
    (seed docking, then training, inference, re-docking and MD of each round)."""
    longest: dict[str, float] = {}
    for r in rows:
        if r.get("started") and r.get("finished"):
            key = f"{r['stage']} {r.get('round', 0)}"
            longest[key] = max(longest.get(key, 0.0), r["finished"] - r["started"])
    return sum(longest.values())
