"""Launchers: how a task placed on slots becomes a command line, composed into a :class:`ProcessRunner`.

As psij composes launchers (single, mpirun, srun) into its executors, a
backend that starts processes picks one: :class:`LocalLauncher` runs a task's
argv as it is, and an MPI task through ``mpiexec`` on this node; the srun
backend's launcher (``srun.SrunLauncher``) wraps every task in a job step.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Protocol

from ..errors import TaskError
from ..task import Task, TaskKind
from .base import find_program

# MPI on one node needs no network: UCX and libfabric (MPICH's ch4 netmods) listen on loopback only.
LOOPBACK_MPI_ENV = {"UCX_NET_DEVICES": "lo", "FI_TCP_IFACE": "lo", "FI_SOCKETS_IFACE": "lo"}


class LaunchError(Exception):
    """A task whose command cannot be built (e.g. its arguments cannot be written); the message says why."""


class Launcher(Protocol):
    def check(self, task: Task) -> None:
        """Raise TaskError at submit time for a task this launcher can never start."""

    def command(self, task: Task, cores: tuple[int, ...], gpus: tuple[int, ...]) -> list[str]:
        """The argv that runs ``task`` on these slots; raise :class:`LaunchError` if there is none."""

    def environment(self, task: Task) -> dict[str, str]:
        """Variables set before the task's own ``env``."""

    def outcome(self, task: Task, exit_code: int) -> tuple[bool, Any, float | None] | None:
        """For a function task run as a process: ``(ok, value, started)`` once it exited.

        ``value`` is the return value, or ``(exception or None, message, traceback)`` when not ok;
        ``started`` is when the call began (None: keep the launch time). None means no result
        (e.g. the process was killed): the exit code and stderr explain the failure.
        """

    def node_lost(self, node: int) -> None:
        """Node ``node`` of the allocation is gone: adjust how later tasks are launched, if need be."""

    # whether a task's process can exit 0 although its node failed under it (srun): only then does the runner
    # read an attempt's stderr after a success and ask node_failure
    reports_node_failures: bool

    def node_failure(self, stderr: str) -> str | None:
        """The node the launcher says (on one attempt's ``stderr``) failed under a task whose process exited 0,
        or None."""


class LocalLauncher:
    """This node: a task's argv as it is; an MPI task as ``mpiexec -n RANKS argv`` on loopback."""

    reports_node_failures = False

    def __init__(self, mpiexec: str | None = None) -> None:
        self.mpiexec = mpiexec or default_mpiexec()

    def check(self, task: Task) -> None:
        if task.kind is TaskKind.EXECUTABLE and task.mpi and find_program(self.mpiexec) is None:
            raise TaskError(
                f"task {task.label} is an MPI task but {self.mpiexec!r} was not found: "
                "install an MPI (e.g. `pip install mpich`) or set the local backend's mpiexec option"
            )

    def command(self, task: Task, cores: tuple[int, ...], gpus: tuple[int, ...]) -> list[str]:
        if task.mpi:
            return [self.mpiexec, "-n", str(task.ranks), *task.argv]
        return list(task.argv)

    def environment(self, task: Task) -> dict[str, str]:
        return dict(LOOPBACK_MPI_ENV) if task.mpi else {}

    def outcome(self, task: Task, exit_code: int) -> None:
        return None  # function tasks run in persistent workers here, not as processes

    def node_lost(self, node: int) -> None:
        pass  # one node: nothing to adjust

    def node_failure(self, stderr: str) -> str | None:
        return None  # the task's process ran here


def default_mpiexec() -> str:
    """The launcher for MPI tasks on this node: MPICH's ``mpiexec.gforker`` where there is one.

    gforker starts the ranks itself and serves PMI over inherited socket pairs, so it opens no
    TCP port; hydra's ``mpiexec`` listens on all interfaces (0.0.0.0) for its proxies and the
    ranks inherit that socket, which a single-node task has no use for. Looked up on PATH, then
    beside this interpreter (the ``mpich`` wheel installs both there).
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
    for name in ("mpiexec.gforker", "mpiexec"):
        found = shutil.which(name, path=search)
        if found:
            return found
    return "mpiexec"
