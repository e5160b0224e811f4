"""A run's lost nodes (see ``impeccable.runtime.node_watch``), kept in ``RUN/nodes.jsonl``.

Like the stall events beside them, each is appended as one JSON line the
moment the pilot reports it (from the node watch's thread; the campaign's
thread owns the store), so the report and ``impeccable status`` see it while
the run goes on, and a run killed later keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .runtime.node_watch import NodeEvent
from .stalls import EventLog, read_jsonl

FILE = "nodes.jsonl"


def log_pilot_events(pilot: Any, run_dir: Path, session: int) -> None:
    """Record the pilot's stall and node-loss events in the run directory, as they happen."""
    pilot.on_stall = EventLog(run_dir, session).append
    pilot.on_node_lost = EventLog(run_dir, session, FILE, says="").append


def read_node_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every node loss of the run, oldest first."""
    return read_jsonl(Path(run_dir) / FILE)


def describe(event: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """One loss in words, with the tasks that ran there and ran again (their records keep the reason)."""
    text = NodeEvent(event["node"], event["state"], event["when"]).describe()
    rerun = [
        r
        for r in rows
        if r.get("session") == event["session"] and (r.get("error") or "").startswith(f"node {event['node']} lost")
    ]
    done = sum(1 for r in rerun if r.get("state") == "DONE")
    return (
        f"session {event['session']}: {text}: {len(rerun)} task(s) were running there and went back to the "
        f"queue, {done} of them then finished elsewhere"
    )
