"""Starting and stopping a Flux instance that advertises exactly the cores and GPUs it is given.

    flux start --test-size=N -c CONFDIR sh -c 'echo $FLUX_URI; exec cat'

The config advertises the given slots (``[resource] path = R``, written by
``flux R encode``, with ``noverify = true``), so an instance may advertise
cores and GPUs this machine does not physically have; each of the N brokers
is like a node. A pilot's partition also advertises as many spare cores and
GPUs (``spare``): the pilot decides which slot a job runs on, and gives a
job's slots back as soon as its processes have ended (Flux's ``finish``
event); the next job placed there is then allocated at once, while Flux still
winds the old one down, instead of waiting for Flux to free its resources.
The initial program prints the instance's URI and waits on
stdin: when the pilot closes it (shutdown), or dies, the instance ends, so no
broker outlives the pilot. Used by the Flux backend's partitions and by the
raw ``FluxExecutor`` baseline of ``impeccable bench``.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ...errors import BackendUnavailable
from ..base import signal_group

NOT_FOUND = "flux not found: install flux-core (HPC module/spack) or set PATH"
STOP_GRACE_S = 10.0


class FluxInstance:
    """One ``flux start`` child whose brokers advertise ``cores`` and ``gpus``, split evenly over ``brokers``.

    With ``hosts`` (nodes of the Slurm job this runs in, one broker each) the brokers are started there by
    ``srun -N K --mpi=pmi2 --overlap flux start`` and bootstrap through Slurm's PMI, as ``srun flux start``
    does on a cluster; without, all brokers run on this machine (``--test-size``).
    """

    def __init__(
        self,
        name: str,
        cores: Sequence[int],
        gpus: Sequence[int] = (),
        brokers: int = 1,
        spare: bool = False,
        hosts: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.cores = tuple(cores)
        self.gpus = tuple(gpus)
        self.brokers = brokers
        self.spare = spare
        self.hosts = tuple(hosts)
        if self.hosts and len(self.hosts) != brokers:
            raise ValueError(f"flux partition {name}: {brokers} brokers but {len(self.hosts)} hosts")
        self.per_broker_cores = len(self.cores) // brokers
        self.per_broker_gpus = len(self.gpus) // brokers
        self.process: subprocess.Popen | None = None
        self.log_path = ""

    def launch(self, tmp: str, flux: str | None = None) -> None:
        """Write this instance's R and config under ``tmp`` and start ``flux start`` (returns at once)."""
        flux = flux or flux_command() or "flux"
        confdir = os.path.join(tmp, f"partition-{self.name}")
        os.makedirs(confdir)
        r_path = os.path.join(confdir, "R.json")
        host = socket.gethostname()
        ranks = []
        c, g = self.per_broker_cores, self.per_broker_gpus
        for rank in range(self.brokers):
            cores, gpus = self.cores[rank * c : (rank + 1) * c], self.gpus[rank * g : (rank + 1) * g]
            if self.spare:  # ids past every real one: Flux binds nothing to them (cpu and gpu affinity off)
                cores = (*cores, *range(max(self.cores) + 1, max(self.cores) + 1 + len(cores)))
                gpus = (*gpus, *range(max(self.gpus, default=-1) + 1, max(self.gpus, default=-1) + 1 + len(gpus)))
            ranks.append(_encode_r(flux, rank, cores, gpus, self.hosts[rank] if self.hosts else host))
        r_text = ranks[0] if len(ranks) == 1 else _run([flux, "R", "append"], "\n".join(ranks))
        with open(r_path, "w") as f:
            f.write(r_text)
        with open(os.path.join(confdir, "resource.toml"), "w") as f:
            f.write(f'[resource]\npath = "{r_path}"\nnoverify = true\n')
        self.log_path = os.path.join(tmp, f"partition-{self.name}.log")
        initial = ["sh", "-c", 'echo "$FLUX_URI"; exec cat']
        if self.hosts:  # one broker per node of the job; the job step overlaps the tasks' steps
            n = str(self.brokers)
            argv = [
                shutil.which("srun") or "srun",
                "-N",
                n,
                "-n",
                n,
                "--ntasks-per-node=1",
                "-w",
                ",".join(self.hosts),
                "--mpi=pmi2",
                "--overlap",
                "-Q",
                flux,
                "start",
                "-c",
                confdir,
                *initial,
            ]
        else:
            argv = [flux, "start", f"--test-size={self.brokers}", "-c", confdir, *initial]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches the pilot, which stops the instance in order
            )

    def read_uri(self, deadline: float) -> str:
        """The instance's FLUX_URI, as its initial program prints it (``deadline``: time.monotonic())."""
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                raise BackendUnavailable(
                    f"flux partition {self.name} did not start "
                    f"({'timed out' if not ready else 'exited'}): {self.log_tail()}"
                )
            line += chunk
        return line.decode().strip()

    def end(self) -> None:
        """Ask the instance to end (returns at once): its initial program's stdin closes, so it exits."""
        if self.process is not None:
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except OSError:
                    pass

    def close(self) -> None:
        """End the instance and wait for it; signal its process group if it does not stop in time."""
        self.end()
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait()

    def log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-5:]) or "no output"
        except OSError:
            return "no log"


# ---------------------------------------------------------------- finding flux
def flux_command() -> str | None:
    """The ``flux`` command: ``$IMPECCABLE_FLUX`` (the command or its directory), else PATH."""
    configured = os.environ.get("IMPECCABLE_FLUX")
    if configured:
        candidate = os.path.join(configured, "flux") if os.path.isdir(configured) else configured
        return candidate if os.access(candidate, os.X_OK) else None
    return shutil.which("flux")


def import_flux() -> Any:
    """``import flux`` (and ``flux.job``), trying the bindings installed beside the flux command."""
    try:
        import flux
        import flux.job  # noqa: F401

        return flux
    except ImportError as first:
        command = flux_command()
        if command is None:
            raise
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(command)))
        site = os.path.join(prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
        if not os.path.isdir(site) or site in sys.path:
            raise first
        sys.path.append(site)
        import flux
        import flux.job  # noqa: F401

        return flux


# ---------------------------------------------------------------- R and idsets
def ranges(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (an idset)."""
    out: list[str] = []
    for i in sorted(ids):
        if out and "-" in out[-1] and int(out[-1].split("-")[1]) == i - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        elif out and "-" not in out[-1] and int(out[-1]) == i - 1:
            out[-1] = f"{out[-1]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def _encode_r(flux: str, rank: int, cores: Sequence[int], gpus: Sequence[int], host: str) -> str:
    argv = [flux, "R", "encode", f"-r{rank}", f"-c{ranges(cores)}", "-H", host]
    if gpus:
        argv.append(f"-g{ranges(gpus)}")
    return _run(argv)


def _run(argv: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout
