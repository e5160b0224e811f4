"""A run's stall events (see ``impeccable.runtime.stall``), kept in ``RUN/stalls.jsonl``.

The pilot's watchdog reports from a runtime's thread, while the campaign's own
thread owns the store, so each event is appended as one JSON line at once:
``impeccable status`` and the report read them, for a running session too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

from .runtime.stall import StallEvent

FILE = "stalls.jsonl"


class Event(Protocol):
    def to_dict(self) -> dict[str, Any]: ...

    def describe(self) -> str: ...


class EventLog:
    """Appends a session's pilot events (stalls, lost nodes) to a JSON-lines file of the run directory, one line
    each, and says so on stderr after ``says``."""

    def __init__(self, run_dir: Path, session: int, file: str = FILE, says: str = "stall watchdog: ") -> None:
        self.path = Path(run_dir) / file
        self.session = session
        self.says = says

    def append(self, event: Event) -> None:
        line = json.dumps({"session": self.session, **event.to_dict()})
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
        print(f"impeccable: {self.says}{event.describe()} (recorded in {self.path})", file=sys.stderr)


def read_stalls(run_dir: Path) -> list[dict[str, Any]]:
    """Every stall event of the run, oldest first."""
    return read_jsonl(Path(run_dir) / FILE)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The events appended to ``path``, oldest first (a torn last line, from a kill, is skipped)."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def describe(event: dict[str, Any]) -> str:
    return f"session {event['session']}: " + StallEvent(**{k: v for k, v in event.items() if k != "session"}).describe()
