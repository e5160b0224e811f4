"""A throwaway single-node Slurm for trying the srun baseline: reuse one that answers, else start one.

``slurm-local.sh`` beside this file does the work (install Debian's slurmctld,
slurmd and munge if missing, write a config, start the daemons, wait for
``idle``); it needs root and Slurm installed or apt-get to install it. When it
cannot, :func:`start` says why (tests skip with that reason; ``impeccable
compare --local-slurm`` stops with it). ``IMPECCABLE_SLURM_TESTS=0`` keeps the
tests from starting one. Never for a production site: use its own Slurm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "slurm-local.sh"
UP_TIMEOUT_S = 900  # a first install downloads five packages


@dataclass
class Cluster:
    ok: bool
    reason: str = ""
    started_here: bool = False

    def stop(self) -> None:
        """Stop the daemons if this helper started them (a cluster found running is left alone)."""
        if self.started_here:
            subprocess.run([str(SCRIPT), "stop"], stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
            self.started_here = False


def start() -> Cluster:
    """A cluster ready for ``srun``, or ``Cluster(ok=False, reason=...)``."""
    from .srun import slurm_available

    if shutil.which("srun") and slurm_available()[0]:
        return Cluster(ok=True)
    if os.environ.get("IMPECCABLE_SLURM_TESTS", "1") == "0":
        return Cluster(ok=False, reason="IMPECCABLE_SLURM_TESTS=0: not starting a Slurm cluster")
    if os.geteuid() != 0:
        return Cluster(ok=False, reason="no Slurm cluster answers and starting one needs root")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        return Cluster(ok=False, reason="no Slurm installed and no apt-get to install it")
    try:
        done = subprocess.run(
            [str(SCRIPT), "up"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=UP_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Cluster(ok=False, reason=f"{SCRIPT.name} up failed: {exc}")
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return Cluster(ok=False, reason=f"{SCRIPT.name} up failed (exit {done.returncode}): {tail}")
    ok, why = slurm_available()
    cluster = Cluster(ok=ok, reason=why, started_here=True)
    if not ok:
        cluster.stop()
    return cluster
