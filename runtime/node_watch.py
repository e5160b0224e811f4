"""Losing a node: the pilot's watch on the nodes of a real Slurm allocation.

Slurm declares a node DOWN once its slurmd stops answering for
``SlurmdTimeout`` seconds; a job started with ``--no-kill`` keeps its other
nodes. A timer thread asks ``sinfo`` for the allocation's nodes every
``interval_s`` seconds (one cheap query to slurmctld, none to the nodes) and
reports each node it finds down, drained or failed, once, to the pilot, which
takes the node's slots out of the pool and tells every backend; a backend that
can (the process runner behind local and srun) kills what it ran there and
runs it again on the other nodes without spending a retry. Nothing committed
is touched: a campaign's store holds only results of tasks that finished.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .ticker import Ticker

DEFAULT_INTERVAL_S = 2.0
LOST_STATES = ("down", "fail")  # sinfo %T, lower case, flags ("*": not responding) stripped


@dataclass(frozen=True)
class NodeEvent:
    """A node of the allocation was found lost."""

    node: str
    state: str  # what the manager said, e.g. "down*"
    when: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"node {self.node} lost at {time.strftime('%H:%M:%S', time.localtime(self.when))} "
            f"(Slurm: {self.state}); its tasks ran again on the other nodes"
        )


def slurm_node_states(nodes: Sequence[str]) -> dict[str, str]:
    """``{node: state}`` from ``sinfo -N`` (Slurm's long state names, lower case, e.g. ``mixed``, ``down*``);
    empty when sinfo fails (the controller may be busy: no verdict then)."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return {}
    try:
        done = subprocess.run(
            [sinfo, "-h", "-N", "-n", ",".join(nodes), "-o", "%N %T"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if done.returncode != 0:
        return {}
    states: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, state = line.strip().partition(" ")
        if name:
            states[name] = state.strip().lower()
    return states


def is_lost(state: str) -> bool:
    return state.rstrip("*~#!%$@^-").startswith(LOST_STATES)


class NodeWatch(Ticker):
    """Reports each node of ``nodes`` that the manager says is lost, once, through ``on_lost(node, state)``."""

    def __init__(
        self,
        nodes: Sequence[str],
        on_lost: Callable[[str, str], None],
        interval_s: float = DEFAULT_INTERVAL_S,
        states: Callable[[Sequence[str]], dict[str, str]] = slurm_node_states,
    ) -> None:
        super().__init__("impeccable-node-watch", interval_s, join_timeout_s=30)
        self.nodes = tuple(nodes)
        self.on_lost = on_lost
        self.interval_s = interval_s
        self.states = states
        self.lost: set[str] = set()

    def tick(self) -> None:
        self.check()

    def check(self) -> None:
        """One look at the nodes (the thread's loop; tests call it directly)."""
        for node, state in self.states([n for n in self.nodes if n not in self.lost]).items():
            if node in self.nodes and node not in self.lost and is_lost(state):
                self.lost.add(node)
                self.on_lost(node, state)
