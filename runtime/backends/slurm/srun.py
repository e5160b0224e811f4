"""The Slurm ``srun`` baseline: every task is its own job step, as a script-based campaign runs it.

One allocation serves the whole run: the job this process already runs in
(``SLURM_JOB_ID``), or one this backend requests with ``salloc --no-shell``
at start and cancels at shutdown. Each task becomes

    srun --jobid=J --exact -n RANKS -c CORES_PER_RANK -Q [--mpi=pmi2] [--gpus-per-task=G] ARGV

where G is whole GPUs: a task holding a share of a GPU in the pilot (``gpu_shares`` slots per device)
asks for a whole one, since a plain step cannot hold part of a GPU (a site with Slurm's ``shard``
GRES can add its own flags through ``step_flags``). Slurm binds the step's GPUs itself (its
``CUDA_VISIBLE_DEVICES`` replaces the pilot's). An allocation this backend requests asks for the
pilot's GPUs (``salloc --gpus=N``).

and a function task runs as ``python -m impeccable.runtime.run_function
module:qualname`` in such a step (a fresh interpreter per task; arguments and
result travel as pickle files in a private directory).

Scheduling, core accounting, timeouts, retries and cancel are the shared
dispatcher and :class:`~.processes.ProcessRunner` (epoll + pidfd, no
polling); this module holds the allocation and the launcher that builds the
srun command and reads function results. Limits that come with srun:

- ``started`` is when ``srun`` was launched, not when the step's process
  began (srun does not say); function tasks record their real call start.
- Timeouts count from the srun launch; on timeout or cancel srun is sent
  SIGTERM (it forwards it to the step) and SIGKILL 2 s later.
- Exit codes are srun's: a step killed by signal N reports 128+N.
- ``MaxStepCount`` (Slurm default 40000) caps the steps one allocation may run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from ...environ import patched_environ
from ...errors import BackendUnavailable
from ...nodes import NodeList, from_slurm
from ...nodes import discover as discover_nodes
from ...slots import SlotView
from ...task import Task, TaskKind
from ..launchers import LaunchError
from ..loop import Dispatcher, ThreadedBackend
from ..options import SrunOptions
from ..processes import ProcessRunner

RUN_FUNCTION = "impeccable.runtime.run_function"


class SrunBackend(ThreadedBackend):
    """Tasks as ``srun`` steps inside one Slurm allocation.

    Options: ``max_running`` (most sruns outstanding at once, as a site caps
    it; default 16), ``mpi`` (``--mpi=`` plugin for MPI tasks, default pmi2
    when this Slurm has it), ``step_flags`` (extra srun flags, e.g.
    ``["--mem-per-cpu=1G"]`` where memory is a consumable), ``salloc_flags``
    (extra flags for the allocation, e.g. partition, account, time limit),
    ``allocation_timeout_s`` (how long salloc may wait, default 300),
    ``workdir`` (where function arguments and results are written; must be
    visible on the compute nodes, default the temp dir).
    """

    name = "srun"
    spans_nodes = True
    kinds = frozenset({TaskKind.EXECUTABLE, TaskKind.FUNCTION})
    opts: SrunOptions

    def __init__(self, slots: SlotView, **options: Any) -> None:
        super().__init__(slots, **options)
        o = self.opts
        self._max_running = o.max_running
        self._step_flags = list(o.step_flags)
        self._mpi = o.mpi
        self._workdir_parent = o.workdir
        allocation = slots.broker.allocation
        self._gpu_shares = allocation.gpu_shares
        self._allocation = SlurmAllocation(
            cores=slots.n_cores,
            gpus=slots.n_gpus // allocation.gpu_shares,
            flags=list(o.salloc_flags),
            timeout_s=o.allocation_timeout_s,
        )
        self.launcher: SrunLauncher | None = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return slurm_available()

    @property
    def job_id(self) -> str | None:
        """The allocation the steps run in (None before start)."""
        return self._allocation.job_id

    def start(self) -> None:
        job_id = self._allocation.acquire()
        try:
            mpi = self._mpi if self._mpi is not None else ("pmi2" if "pmi2" in mpi_plugins() else "")
            workdir = tempfile.mkdtemp(prefix=f"impeccable-srun-{job_id}-", dir=self._workdir_parent)
            allocation = self.slots.broker.allocation
            hosts = allocation.nodes if allocation.manager == "slurm" else ()
            self.launcher = SrunLauncher(
                job_id, workdir, mpi, self._step_flags, self._gpu_shares, hosts, allocation.cores_per_node
            )
            loop = Dispatcher(self)
            loop.serve([TaskKind.EXECUTABLE, TaskKind.FUNCTION], ProcessRunner(loop, self.launcher, self._max_running))
            self._run_dispatcher(loop)
        except BaseException:
            self._allocation.release()
            raise

    def _after_stop(self) -> None:
        self._allocation.release()
        if self.launcher is not None:
            shutil.rmtree(self.launcher.workdir, ignore_errors=True)


_NODE_FAILURE = re.compile(r"srun: error: Node failure on (\S+)")


class SrunLauncher:
    """Every task a job step: ``srun --jobid=J --exact -Q -n RANKS -c CORES ...``; a function task is
    ``python -m impeccable.runtime.run_function`` in its step, arguments and result in pickle files.

    With ``hosts`` (the job's nodes, slot i on ``hosts[i // (slots per node)]``) a step goes where the pilot
    placed the task, ``-N K -w NODES``, so the record's node is where it ran; without (one node, or nodes
    emulated on one machine) Slurm picks."""

    reports_node_failures = True  # srun exits 0 when its step's node fails

    def __init__(
        self,
        job_id: str,
        workdir: str,
        mpi: str,
        step_flags: list[str],
        gpu_shares: int = 1,
        hosts: tuple[str, ...] = (),
        cores_per_node: int = 0,
    ) -> None:
        self.workdir = workdir
        self.mpi = mpi
        self.gpu_shares = gpu_shares  # GPU slots per device in the pilot: a step asks for whole devices
        self.hosts = hosts
        self.cores_per_node = cores_per_node
        self.prefix = [shutil.which("srun") or "srun", f"--jobid={job_id}", "--exact", "-Q", *step_flags]

    def check(self, task: Task) -> None:
        pass  # MPI runs under srun's own ranks: no mpiexec needed

    def environment(self, task: Task) -> dict[str, str]:
        return {}  # steps may span nodes: the site's MPI settings apply, not loopback

    def command(self, task: Task, cores: tuple[int, ...], gpus: tuple[int, ...]) -> list[str]:
        if task.mpi:
            shape = ["-n", str(task.ranks), "-c", str(task.cores_per_rank)]
            if self.mpi:
                shape.append(f"--mpi={self.mpi}")
            if task.gpus_per_rank:
                shape.append(f"--gpus-per-task={-(-task.gpus_per_rank // self.gpu_shares)}")
        else:  # one process on all the task's cores, as the local backend runs it
            shape = ["-n", "1", "-c", str(task.cores)]
            if task.gpus:
                shape.append(f"--gpus-per-task={-(-task.gpus // self.gpu_shares)}")
        if self.hosts and cores:
            nodes = list(dict.fromkeys(self.hosts[c // self.cores_per_node] for c in cores))
            shape += ["-N", str(len(nodes)), "-w", ",".join(nodes)]
        if task.kind is TaskKind.EXECUTABLE:
            return [*self.prefix, *shape, *task.argv]
        return [*self.prefix, *shape, *self._function_command(task)]

    def outcome(self, task: Task, exit_code: int) -> tuple[bool, Any, float | None] | None:
        base = os.path.join(self.workdir, task.uid)
        result_path = base + ".result"
        try:
            with open(result_path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            data = None
        finally:
            for path in (base + ".args", result_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        if data is None:
            if exit_code == 0:
                return False, (None, "the function's process exited 0 but left no result", None), None
            return None  # killed or never started: the exit code and stderr say why
        try:
            _token, ok, value, started, _finished = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - e.g. a result class the pilot cannot import
            return False, (None, f"result cannot be unpickled in the pilot: {type(exc).__name__}: {exc}", None), None
        return ok, value, started

    def node_lost(self, node: int) -> None:
        """Once Slurm removes a lost node from the job, Slurm 22.05 no longer gives back the cores of the steps
        that end ("unable to update job's core use information due to job resizing", slurmctld): an exact
        step would wait forever for cores that are free. Later steps overlap; the pilot's slots, which never
        lend a core twice, keep them apart."""
        if "--overlap" not in self.prefix:
            self.prefix.insert(self.prefix.index("--exact") + 1, "--overlap")

    def node_failure(self, stderr: str) -> str | None:
        """srun exits 0 when a node of its step fails under it, saying "srun: error: Node failure on NODE" on its
        stderr; its tasks were killed, not finished."""
        found = _NODE_FAILURE.search(stderr)
        return found.group(1) if found else None

    def _function_command(self, task: Task) -> list[str]:
        base = os.path.join(self.workdir, task.uid)
        command = [sys.executable, "-m", RUN_FUNCTION, task.function]
        if task.args or task.kwargs:
            try:
                data = pickle.dumps((task.args, dict(task.kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - PicklingError, TypeError, AttributeError...
                raise LaunchError(f"the function's arguments cannot be pickled: {type(exc).__name__}: {exc}") from None
            with open(base + ".args", "wb") as handle:
                handle.write(data)
            command += ["--args", base + ".args"]
        return [*command, "--result", base + ".result"]


class SlurmAllocation:
    """The job the steps run in: ``SLURM_JOB_ID`` if set, else one from ``salloc --no-shell``."""

    def __init__(self, cores: int, flags: list[str] | None = None, timeout_s: float = 300.0, gpus: int = 0) -> None:
        self.cores = cores
        self.gpus = gpus
        self.flags = flags or []
        self.timeout_s = timeout_s
        self.job_id: str | None = None
        self.owned = False
        self._holder: subprocess.Popen[str] | None = None  # the salloc that holds an allocation we requested

    def acquire(self) -> str:
        inherited = os.environ.get("SLURM_JOB_ID")
        if inherited:
            self.job_id, self.owned = inherited, False
            return inherited
        # salloc holds the allocation while its command runs; the command is `cat` on a pipe from this
        # process, so the allocation ends when the pilot does, even if the pilot is killed (SIGKILL).
        argv = self.salloc_argv()
        try:
            self._holder = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendUnavailable(f"srun backend: `{' '.join(argv)}` failed: {exc}") from None
        said = ""  # raw reads: a buffered readline could hold the "Granted" line while select() waits
        deadline = time.monotonic() + self.timeout_s + 30
        fd = self._holder.stderr.fileno()  # type: ignore[union-attr]
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=deadline - time.monotonic()):
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                said += chunk.decode(errors="replace")
                found = re.search(r"Granted job allocation (\d+)", said)
                if found:
                    self.job_id, self.owned = found.group(1), True
                    return self.job_id
        self._stop_holder()
        message = " ".join(said.split()) or "no answer"
        if "Pending job allocation" in said or not said:
            message = (
                f"not granted within {self.timeout_s:g} s (the cluster is busy: raise the srun "
                f"backend's allocation_timeout_s option); salloc said: {message}"
            )
        raise BackendUnavailable(
            f"srun backend: could not get an allocation of {self.cores} cores with `{' '.join(argv)}`: {message}"
        )

    def salloc_argv(self) -> list[str]:
        """The allocation this backend requests: its cores, its GPUs (whole devices), held by ``cat``."""
        return [
            "salloc",
            "-n",
            str(self.cores),
            *([f"--gpus={self.gpus}"] if self.gpus else []),
            "-J",
            "impeccable",
            f"--immediate={max(1, int(self.timeout_s))}",
            *self.flags,
            "cat",
        ]

    def _stop_holder(self) -> None:
        holder = self._holder
        if holder is None:
            return
        try:
            holder.stdin.close()  # type: ignore[union-attr]  # cat ends, salloc releases the job
            holder.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            holder.kill()
            holder.wait()
        holder.stderr.close()  # type: ignore[union-attr]
        self._holder = None

    def release(self) -> None:
        """End the allocation if this object requested it; idempotent."""
        if self.owned and self.job_id:
            # scancel first: it ends running steps at once; salloc then exits by itself
            subprocess.run(["scancel", self.job_id], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            self._stop_holder()
        self.owned = False

    def __enter__(self) -> str:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def job_of_nodes(n_nodes: int) -> Iterator[NodeList]:
    """A Slurm job of at least ``n_nodes`` nodes: the one this process runs in, else a fresh allocation of
    whole nodes (``salloc -N N --exclusive --no-kill``: it outlives a lost node), whose ``SLURM_JOB_*``
    variables this process has while it is held, as a batch script would; released after."""
    found = discover_nodes()
    if os.environ.get("SLURM_JOB_ID"):
        if found is None or len(found.names) < n_nodes:
            raise BackendUnavailable(
                f"{n_nodes} nodes asked for, but this Slurm job (SLURM_JOB_ID="
                f"{os.environ['SLURM_JOB_ID']}) has {len(found.names) if found else 1}"
            )
        yield found
        return
    allocation = SlurmAllocation(n_nodes, ["-N", str(n_nodes), "--exclusive", "--no-kill"])
    job_id = allocation.acquire()
    try:
        with patched_environ(job_environment(job_id)):
            yield from_slurm(os.environ)
    finally:
        allocation.release()


def job_environment(job_id: str) -> dict[str, str]:
    """The ``SLURM_JOB_*`` variables of a running job, from ``squeue`` (node list, CPUs, nodes)."""
    done = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%N|%C|%D"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    fields = done.stdout.strip().split("|")
    if done.returncode != 0 or len(fields) != 3 or not fields[2].isdigit():
        raise BackendUnavailable(f"squeue cannot describe job {job_id}: {done.stderr.strip() or done.stdout.strip()}")
    nodelist, cpus, n_nodes = fields[0], int(fields[1]), int(fields[2])
    return {
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_JOB_NUM_NODES": str(n_nodes),
        "SLURM_JOB_CPUS_PER_NODE": f"{cpus // n_nodes}(x{n_nodes})",
    }


def slurm_available() -> tuple[bool, str]:
    """(True, "") if srun is on PATH and a slurmctld answers ``sinfo``."""
    if shutil.which("srun") is None:
        return False, "srun is not on PATH (no Slurm client installed)"
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%a"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"sinfo failed: {exc}"
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        return False, f"no Slurm cluster answers (sinfo: {reason})"
    if "up" not in done.stdout.split():
        return False, "sinfo lists no partition that is up"
    return True, ""


def mpi_plugins() -> set[str]:
    """The ``--mpi=`` types this srun knows."""
    try:
        done = subprocess.run(
            ["srun", "--mpi=list"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    text = done.stdout + done.stderr
    return {line.strip() for line in text.splitlines() if line.startswith(("\t", " ")) and line.strip()}
