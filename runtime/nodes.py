"""The nodes of the allocation this process runs in: from Slurm's job environment or Flux's resource set.

Inside a Slurm job, ``SLURM_JOB_NODELIST`` names the nodes in Slurm's hostlist
form (``node[0-3]``), expanded by ``scontrol show hostnames`` (Slurm's own
parser, for forms this module's does not know) or by :func:`expand_hostlist`
where there is no ``scontrol``; ``SLURM_JOB_CPUS_PER_NODE`` (``4(x3),2``) gives
each node's CPUs. Inside a Flux instance (``FLUX_URI``), ``flux resource R``
gives the nodes (``execution.nodelist``) and the cores of each broker rank.
A pilot spreads its slots evenly over nodes, so a node counts with the cores
the smallest one has.

Kept apart from the GPU discovery (``gpus.py``): a node list and a core count
are all this module answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

_COMMAND_TIMEOUT_S = 20


@dataclass(frozen=True)
class NodeList:
    """The nodes of a real allocation, in the manager's order, and the cores each may give the pilot."""

    names: tuple[str, ...]
    cores_per_node: int
    manager: str  # "slurm" or "flux": who starts processes on the other nodes

    def index_of_this_host(self) -> int | None:
        """Which of the nodes this process runs on (by host name, short or full), or None (a login node)."""
        return host_index(self.names)


def discover(environ: Mapping[str, str] | None = None) -> NodeList | None:
    """The allocation's nodes: Flux's resource set inside a Flux instance (the more specific of the two
    when Flux runs inside a Slurm job), else Slurm's job node list; None outside any allocation."""
    env = os.environ if environ is None else environ
    if env.get("FLUX_URI"):
        found = from_flux(env)
        if found is not None:
            return found
    if env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"):
        return from_slurm(env)
    return None


def from_slurm(environ: Mapping[str, str]) -> NodeList:
    """The job's nodes (``SLURM_JOB_NODELIST``) and CPUs per node (``SLURM_JOB_CPUS_PER_NODE``).

    Raises ValueError naming the variable when one cannot be read."""
    text = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or ""
    names = slurm_hostnames(text)
    cpus = cpus_per_node(environ.get("SLURM_JOB_CPUS_PER_NODE", ""))
    if cpus and len(cpus) != len(names):
        raise ValueError(
            f"SLURM_JOB_CPUS_PER_NODE={environ.get('SLURM_JOB_CPUS_PER_NODE')!r} describes {len(cpus)} "
            f"nodes but SLURM_JOB_NODELIST={text!r} names {len(names)}"
        )
    return NodeList(tuple(names), min(cpus) if cpus else len(os.sched_getaffinity(0)), "slurm")


def slurm_hostnames(text: str) -> list[str]:
    """A Slurm hostlist expanded: by ``scontrol show hostnames`` where it runs, else :func:`expand_hostlist`."""
    if shutil.which("scontrol"):
        try:
            done = subprocess.run(
                ["scontrol", "show", "hostnames", text],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.split():
            return done.stdout.split()
    return expand_hostlist(text)


def from_flux(environ: Mapping[str, str]) -> NodeList | None:
    """The instance's nodes and cores per broker rank from ``flux resource R``; None if Flux does not answer."""
    flux = shutil.which("flux", path=environ.get("PATH"))
    if flux is None:
        return None
    try:
        done = subprocess.run(
            [flux, "resource", "R"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            env=dict(environ),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return nodes_from_r(json.loads(done.stdout))


def nodes_from_r(r: dict) -> NodeList:
    """Nodes (rank order) and the fewest cores of any rank, from a Flux ``R`` (version 1) object."""
    execution = r.get("execution", {})
    names = [name for part in execution.get("nodelist", []) for name in expand_hostlist(part)]
    cores: dict[int, int] = {}
    for entry in execution.get("R_lite", []):
        n_cores = len(idset(entry.get("children", {}).get("core", "")))
        for rank in idset(entry["rank"]):
            cores[rank] = n_cores
    if not names:
        names = [f"rank{rank}" for rank in sorted(cores)]
    if len(cores) != len(names):
        raise ValueError(f"Flux R names {len(names)} nodes but gives cores for {len(cores)} broker ranks")
    return NodeList(tuple(names), min(cores.values()) if cores else 1, "flux")


# ---------------------------------------------------------------------- parsing
_BRACKET = re.compile(r"\[([^\]]*)\]")


def expand_hostlist(text: str) -> list[str]:
    """``node[0-2,5],login`` -> ``[node0, node1, node2, node5, login]``; zero padding is kept
    (``n[08-10]`` -> ``n08 n09 n10``) and several bracket groups multiply (``r[1-2]n[1-2]``)."""
    names: list[str] = []
    for part in _split_top(text.strip()):
        match = _BRACKET.search(part)
        if match is None:
            names.append(part)
            continue
        head, tail = part[: match.start()], part[match.end() :]
        for item in match.group(1).split(","):
            lo, _, hi = item.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(f"cannot read the host list {text!r}: {item!r} is not a number or a range")
            width = len(lo) if lo.startswith("0") else 0
            for i in range(int(lo), int(hi or lo) + 1):
                names.extend(expand_hostlist(f"{head}{str(i).zfill(width)}{tail}"))
    return names


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def cpus_per_node(text: str) -> list[int]:
    """``SLURM_JOB_CPUS_PER_NODE`` (``36(x2),4``) -> ``[36, 36, 4]``; [] when empty."""
    counts: list[int] = []
    for part in filter(None, text.split(",")):
        count, _, repeat = part.partition("(x")
        repeat = repeat.rstrip(")")
        if not count.isdigit() or (repeat and not repeat.isdigit()):
            raise ValueError(f"cannot read SLURM_JOB_CPUS_PER_NODE={text!r}: {part!r}")
        counts.extend([int(count)] * (int(repeat) if repeat else 1))
    return counts


def idset(text: str) -> list[int]:
    """A Flux idset: ``"0-2,5"`` -> ``[0, 1, 2, 5]``."""
    ids: list[int] = []
    for part in filter(None, str(text).split(",")):
        lo, _, hi = part.partition("-")
        ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids


def host_index(names: tuple[str, ...] | list[str]) -> int | None:
    """The index of this host among ``names``, matching the full or the short host name."""
    full = socket.gethostname()
    for candidate in (full, full.split(".")[0]):
        for i, name in enumerate(names):
            if name == candidate or name.split(".")[0] == candidate:
                return i
    return None
