"""Peak memory and CPU time of a process and everything it started, sampled from /proc (Linux).

Why not ``resource.getrusage``: the campaign's function workers are children of
a forkserver, not of the manager, so their usage never reaches the manager's
``RUSAGE_CHILDREN``; and a benchmark wants each worker's peak, not the largest
child's. The kernel keeps each process's peak resident set (``VmHWM``), so a
sample every fraction of a second misses no peak of a live process; CPU time
is the last sample's (it misses at most one interval of a process that exits).

    python -m impeccable.procwatch PID [--out watch.json]   # watch a running campaign until it ends
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessPeak:
    """One process as last seen: its role in the tree, peak resident memory and CPU seconds so far."""

    role: str  # manager, forkserver, worker (a forkserver's child) or the start of its command line
    peak_rss_bytes: int = 0
    cpu_s: float = 0.0


class TreeWatch:
    """Samples ``pid`` (default: this process) and its descendants on a thread until stopped."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.25) -> None:
        self.pid = pid or os.getpid()
        self.interval_s = interval_s
        self.seen: dict[int, ProcessPeak] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TreeWatch:
        self._thread = threading.Thread(target=self._loop, name="procwatch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> bool:
        """One look at the tree; False once the watched process is gone."""
        parents = _parents()
        if self.pid not in parents:
            return False
        tree = _descendants(self.pid, parents)
        roles = {self.pid: "manager"}
        for pid in tree:
            roles[pid] = _role(pid, parents.get(pid), roles)
        for pid, role in roles.items():
            status = _status(pid)
            if status is None:
                continue
            peak = self.seen.setdefault(pid, ProcessPeak(role))
            peak.peak_rss_bytes = max(peak.peak_rss_bytes, status[0])
            peak.cpu_s = max(peak.cpu_s, status[1])
        return True

    def summary(self) -> dict[str, Any]:
        """Peaks in MiB per role (the largest process of each), CPU seconds per role (summed)."""
        out: dict[str, Any] = {"processes": len(self.seen)}
        for role in sorted({p.role for p in self.seen.values()}):
            group = [p for p in self.seen.values() if p.role == role]
            key = role if role in ("manager", "forkserver", "worker") else f"other:{role}"
            out[f"{key}_peak_rss_mib"] = round(max(p.peak_rss_bytes for p in group) / 2**20, 1)
            out[f"{key}_cpu_s"] = round(sum(p.cpu_s for p in group), 2)
            out[f"{key}_count"] = len(group)
        return out


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
        out[int(name)] = int(fields[1])
    return out


def _descendants(root: int, parents: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _role(pid: int, ppid: int | None, roles: dict[int, str]) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "forkserver" in cmdline:
        return "worker" if roles.get(ppid or -1) == "forkserver" else "forkserver"
    words = cmdline.split()
    return " ".join(Path(w).name if i == 0 else w for i, w in enumerate(words[:3]))[:60]


def _status(pid: int) -> tuple[int, float] | None:
    """(peak resident bytes, CPU seconds) of a live process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    hwm = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    fields = stat[stat.rfind(")") + 2 :].split()
    return hwm, (int(fields[11]) + int(fields[12])) / _TICK


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m impeccable.procwatch", description=__doc__.split("\n\n")[0])
    p.add_argument("pid", type=int)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--out", type=Path, help="rewrite this JSON summary after every sample")
    a = p.parse_args(argv)
    watch = TreeWatch(a.pid, a.interval)
    started = time.time()
    while watch.sample():
        if a.out:
            a.out.write_text(
                json.dumps({"pid": a.pid, "watched_s": round(time.time() - started), **watch.summary()}, indent=1)
            )
        time.sleep(a.interval)
    print(json.dumps(watch.summary(), indent=1))
    return 0 if watch.seen else 1


if __name__ == "__main__":
    sys.exit(main())
