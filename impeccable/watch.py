"""Watching a campaign while it runs: ``impeccable status --watch RUN`` and ``impeccable.hits(RUN)``.

Both only read the run directory's store (SQLite in WAL mode lets a reader
see each result as the campaign commits it), so they can run beside the
campaign, in another terminal or a notebook, without slowing it.

Task records reach the store when a task finishes; tasks still running are
not in it yet, so the activity figures (tasks/s, busy cores) are measured on
the tasks that finished inside the window and trail a long task until it ends.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from .results import Hit, ranked_hits, sessions_with_liveness, stage_counts
from .store import Store


def activity(rows: list[dict[str, Any]], now: float, window_s: float) -> dict[str, Any]:
    """Per stage and in all, over the last ``window_s`` seconds: tasks finished, tasks/s, and mean busy cores
    (core-seconds of finished tasks inside the window, divided by the window)."""
    start = now - window_s
    per_stage: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["started"] is None or r["finished"] is None or r["finished"] < start:
            continue
        stage = per_stage.setdefault(r["stage"] or "task", {"finished": 0, "core_s": 0.0})
        stage["finished"] += 1
        held = len(r["slots"]) or r["cores"] or 1
        stage["core_s"] += held * max(0.0, min(r["finished"], now) - max(r["started"], start))
    total = sum(s["finished"] for s in per_stage.values())
    return {
        "window_s": window_s,
        "tasks_per_s": total / window_s,
        "busy_cores": sum(s["core_s"] for s in per_stage.values()) / window_s,
        "per_stage": {
            k: {
                "finished": v["finished"],
                "tasks_per_s": v["finished"] / window_s,
                "busy_cores": v["core_s"] / window_s,
            }
            for k, v in sorted(per_stage.items())
        },
    }


def snapshot(store: Store, run_dir: Path, window_s: float = 60.0, now: float | None = None) -> Any:
    """One screen of the live view (a rich renderable): sessions, stage counts, recent activity."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    sessions = sessions_with_liveness(store, run_dir)
    last = sessions[-1] if sessions else None
    head = Text(f"{store.get_meta('name')} in {run_dir}: ", style="bold")
    if last is None:
        head.append("no session yet")
    else:
        elapsed = (last["finished"] or now) - last["started"]
        head.append(f"session {last['session']} {last['status']}, {elapsed:.0f} s, {last['cores']} cores")
    stages = Table(title="results per stage")
    for col in ("stage", "done", "failed"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for stage, done, failed, _ in stage_counts(store):
        stages.add_row(stage, str(done), str(failed))
    act = activity(store.task_rows(last["session"]) if last else [], now, window_s)
    recent = Table(title=f"last {window_s:.0f} s (tasks that finished in it)")
    for col in ("stage", "tasks done", "tasks/s", "busy cores"):
        recent.add_column(col, justify="left" if col == "stage" else "right")
    for stage, a in act["per_stage"].items():
        recent.add_row(stage, str(a["finished"]), f"{a['tasks_per_s']:.2f}", f"{a['busy_cores']:.1f}")
    cores = f" of {last['cores']}" if last else ""
    recent.add_row(
        "all",
        str(sum(a["finished"] for a in act["per_stage"].values())),
        f"{act['tasks_per_s']:.2f}",
        f"{act['busy_cores']:.1f}{cores}",
        style="bold",
    )
    return Group(head, stages, recent)


def running(store: Store, run_dir: Path) -> bool:
    """Whether a live process still runs the directory's last session."""
    sessions = sessions_with_liveness(store, run_dir)
    return bool(sessions) and sessions[-1]["status"].startswith("running")


def watch(run_dir: Path, every_s: float = 5.0, window_s: float = 60.0, max_updates: int | None = None) -> None:
    """Redraw :func:`snapshot` every ``every_s`` seconds until the run is no longer running (or Ctrl-C)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    store = Store.open_existing(run_dir, readonly=True)
    try:
        # a terminal gets one screen redrawn in place; a log (not a terminal) gets each snapshot in turn
        live = Live(console=console, auto_refresh=False) if console.is_terminal else None
        show = (lambda view: live.update(view, refresh=True)) if live else console.print
        if live:
            live.start()
        try:
            show(snapshot(store, run_dir, window_s))
            updates = 0
            while running(store, run_dir) and (max_updates is None or updates < max_updates):
                time.sleep(every_s)
                show(snapshot(store, run_dir, window_s))
                updates += 1
        finally:
            if live:
                live.stop()
    finally:
        store.close()


def hits(run_dir: str | Path, top: int | None = None) -> Any:
    """The ranked hits of a run directory as a pandas DataFrame (one row per docked compound, best first);
    call it again to refresh while the campaign runs."""
    import pandas as pd

    store = Store.open_existing(run_dir, readonly=True)
    try:
        ranked = ranked_hits(store)
    finally:
        store.close()
    ranked = ranked[:top] if top else ranked
    columns = [f.name for f in dataclasses.fields(Hit)]
    return pd.DataFrame([dataclasses.asdict(h) for h in ranked], columns=columns).set_index("id")
