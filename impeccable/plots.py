"""Matplotlib figures from task records and scores, returned as PNG bytes (for offline HTML reports)."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGE_COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _ran(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("started") is not None and r.get("finished") is not None]


def timeline(
    rows: Sequence[dict[str, Any]], cores: int, title: str = "task timeline", gpus: int = 0, nodes: Sequence[str] = ()
) -> bytes:
    """Gantt-like: one line per core slot, a bar per task on each slot it held, coloured by stage; the ``gpus``
    GPU slots are rows above the cores (hatched), so a GPU idle while cores are busy shows; with several
    ``nodes`` (slot i on node i // (cores / nodes)) the core slots are grouped and labelled by node."""
    ran = _ran(rows)
    lines = cores + gpus
    fig, ax = plt.subplots(figsize=(10, max(2.5, min(12, 0.25 * lines + 1.5))))
    if ran:
        t0 = min(r["submitted"] or r["started"] for r in ran)
        stages = sorted({r.get("stage") or r.get("name") or "task" for r in ran})
        colour = {s: STAGE_COLOURS[i % len(STAGE_COLOURS)] for i, s in enumerate(stages)}
        spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
        for r in ran:
            stage = r.get("stage") or r.get("name") or "task"
            for slot in [*(r.get("slots") or [0]), *(cores + g for g in (r.get("gpu_slots") or []) if gpus)]:
                spans[(slot, stage)].append((r["started"] - t0, max(r["finished"] - r["started"], 1e-4)))
        for (slot, stage), bars in spans.items():
            ax.broken_barh(
                bars,
                (slot - 0.4, 0.8),
                facecolors=colour[stage],
                edgecolor="none",
                hatch="///" if slot >= cores else None,
            )
        if gpus:
            ax.axhline(cores - 0.5, color="k", linewidth=0.8)
            ax.text(0, cores - 0.3, "GPU slots above", fontsize=8, va="bottom")
        for s in stages:
            ax.plot([], [], color=colour[s], linewidth=6, label=s)
        ax.legend(loc="upper right", fontsize=8, ncol=min(4, len(stages)))
    ax.set_xlabel("time since first submission (s)")
    ax.set_ylabel("core slot" + (f" (0-{cores - 1}), GPU slot ({cores}-{lines - 1})" if gpus else ""))
    if len(nodes) > 1:
        per = cores // len(nodes)
        for i in range(1, len(nodes)):
            ax.axhline(i * per - 0.5, color="k", linewidth=0.8)
        ax.set_yticks([i * per + (per - 1) / 2 for i in range(len(nodes))], list(nodes))
        ax.set_ylabel("node (its core slots)" + (", GPU slots above" if gpus else ""))
    ax.set_ylim(-0.6, max(lines, 1) - 0.4)
    ax.set_title(title)
    return _png(fig)


def concurrency(rows: Sequence[dict[str, Any]], cores: int, title: str = "busy cores over time") -> bytes:
    """Busy cores over time, stacked by the runtime that held them, against the allocation; the overall
    utilisation in the title. A task holds the slots it was given (whole nodes for a wide MPI task)."""
    ran = _ran(rows)
    fig, ax = plt.subplots(figsize=(10, 3))
    if ran:
        t0 = min(r["submitted"] or r["started"] for r in ran)
        width = {id(r): len(r.get("slots") or ()) or r["cores"] for r in ran}
        backends = sorted({r.get("backend") or "?" for r in ran})
        times = sorted({0.0} | {r["started"] - t0 for r in ran} | {r["finished"] - t0 for r in ran})
        index = {t: i for i, t in enumerate(times)}
        below = [0] * len(times)
        for n, backend in enumerate(backends):
            delta = [0] * (len(times) + 1)
            for r in ran:
                if (r.get("backend") or "?") == backend:
                    delta[index[r["started"] - t0]] += width[id(r)]
                    delta[index[r["finished"] - t0]] -= width[id(r)]
            top, busy = [], 0
            for i in range(len(times)):
                busy += delta[i]
                top.append(below[i] + busy)
            color = _PALETTE[n % len(_PALETTE)]
            ax.fill_between(times, below, top, step="post", alpha=0.45, color=color, label=backend, linewidth=0)
            ax.step(times, top, where="post", color=color, linewidth=1)
            below = top
        span = max(r["finished"] for r in ran) - t0
        used = sum(width[id(r)] * (r["finished"] - r["started"]) for r in ran)
        title += f" (utilisation {100 * used / (cores * span):.1f} % of {cores} cores)" if span > 0 else ""
        if len(backends) > 1:
            ax.legend(loc="upper right", fontsize=8, title="runtime")
    ax.axhline(cores, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("time since first submission (s)")
    ax.set_ylabel("busy cores")
    ax.set_title(title)
    return _png(fig)


_PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3")


def stage_throughput(rows: Sequence[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    """Tasks/s and busy time per stage; returns the figure and the table behind it."""
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _ran(rows):
        by_stage[r.get("stage") or "task"].append(r)
    table = []
    for stage, rs in sorted(by_stage.items()):
        span = max(r["finished"] for r in rs) - min(r["started"] for r in rs)
        runtimes = sorted(r["finished"] - r["started"] for r in rs)
        table.append(
            {
                "stage": stage,
                "tasks": len(rs),
                "span_s": span,
                "tasks_per_s": len(rs) / span if span > 0 else float("nan"),
                "median_runtime_s": runtimes[len(runtimes) // 2],
                "core_s": sum(r["cores"] * (r["finished"] - r["started"]) for r in rs),
            }
        )
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar([t["stage"] for t in table], [t["tasks_per_s"] for t in table], color=STAGE_COLOURS[: len(table)])
    ax.set_ylabel("tasks/s while the stage ran")
    ax.set_title("throughput per stage")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return _png(fig), table


def parity(measured: Sequence[float], predicted: Sequence[float], title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(measured, predicted, s=12, alpha=0.7)
    if measured:
        lo, hi = min(min(measured), min(predicted)), max(max(measured), max(predicted))
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=1)
    ax.set_xlabel("Vina score (kcal/mol)")
    ax.set_ylabel("surrogate prediction (kcal/mol)")
    ax.set_title(title)
    return _png(fig)


def distributions(series: dict[str, Sequence[float]]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, values in series.items():
        if len(values):
            ax.hist(values, bins=40, alpha=0.5, density=True, label=f"{name} (n={len(values)})")
    ax.set_xlabel("score (kcal/mol)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("score distributions")
    return _png(fig)


def histogram_grid(histograms: dict[str, dict[str, list[float]]], title: str) -> bytes:
    """One bar chart per property from precomputed (edges, counts), four to a row."""
    names = list(histograms)
    rows = max(1, -(-len(names) // 4))
    fig, axes = plt.subplots(rows, 4, figsize=(12, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        edges, counts = histograms[name]["edges"], histograms[name]["counts"]
        ax.bar(
            edges[:-1],
            counts,
            width=[b - a for a, b in zip(edges[:-1], edges[1:])],
            align="edge",
            color=STAGE_COLOURS[0],
        )
        used = [i for i, n in enumerate(counts) if n]
        if used:  # the range the library occupies, one bin either side
            ax.set_xlim(edges[max(used[0] - 1, 0)], edges[min(used[-1] + 2, len(edges) - 1)])
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)
