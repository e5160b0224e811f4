"""Executables and MPI tasks on Flux: one or several Flux instances (partitions) per backend.

Each partition is a Flux instance that owns a disjoint slice of the backend's
cores (and GPUs). The backend starts it as a child process

    flux start --test-size=N -c CONFDIR sh -c 'echo $FLUX_URI; exec cat'

whose config advertises exactly that slice (``[resource] path = R``, written
by ``flux R encode``, with ``noverify = true``, so an instance may advertise
cores and GPUs this machine does not physically have). The script prints the
instance's URI and waits on stdin: when the pilot closes it (shutdown), or
dies, the instance ends, so no broker outlives the pilot. Inside an existing
Flux allocation (``FLUX_URI`` set, with ``use_existing=True`` or no
``partitions`` option) that instance is used instead.

One thread per partition runs the Flux reactor. It submits jobs with
``flux.job.submit_async`` and follows every job through one stream, the
job-manager journal (``flux.job.JournalConsumer``), which carries each job's
``R`` on its ``alloc`` event: no per-job watch, no polling. Events map to our
states as follows: ``alloc`` -> resources assigned (the slots are read from
R), ``start`` -> started, ``exception`` (severity 0) -> the reason (timeout,
cancel, ...), ``finish`` -> the wait status, ``clean`` -> the final state.

Options:

- ``partitions``: Flux instances to start, the cores split evenly (default 1).
- ``test_size``: brokers per instance (``flux start --test-size``), each like a
  node; the ranks of an MPI task may span them (default 1).

An MPI task (``mpi=True``) is ``ranks`` processes launched by Flux (PMI from
the job shell, no mpiexec); any other task is one process on all its cores,
as in the local backend.
- ``use_existing``: use the enclosing instance (``FLUX_URI``); default: when
  ``FLUX_URI`` is set and ``partitions`` is not given.
- ``validate``: run Flux's jobspec validator on each job (default False: tasks
  are validated when built, and the validator costs broker time per job).
- ``cpu_affinity``: the job shell's ``cpu-affinity`` option (default ``"off"``:
  advertised cores need not exist on this machine).
- ``start_timeout_s``: how long an instance may take to start (default 60).

The ``flux`` command is found on PATH, or at ``$IMPECCABLE_FLUX`` (the command
itself or its ``bin`` directory, e.g. ``/opt/flux/bin``); if ``import flux``
fails, the bindings next to that command
(``<prefix>/lib/pythonX.Y/site-packages``) are tried.

A failed task's reason ends with the last line of its stderr, read back from
the job's output eventlog (only for failures, and only when the task gives
no ``stderr`` path). Limits: in an existing instance, the backend schedules on all of that
instance's cores (slots are numbered in R order) whatever its share is.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..resources import ResourceShare
from ..task import Task, TaskError, TaskKind
from .base import STDERR_TAIL_BYTES, Backend, Submission, file_tail, with_stderr
from .base import signal_group as _signal_group, signal_name as _signal_name

NOT_FOUND = "flux not found: install flux-core (HPC module/spack) or set PATH"
STOP_GRACE_S = 10.0


class FluxBackend(Backend):
    """Executable (and MPI) tasks as Flux jobs, spread least-loaded over one or more Flux instances."""

    name = "flux"
    kinds = frozenset({TaskKind.EXECUTABLE})

    def __init__(self, share: ResourceShare, **options: Any) -> None:
        super().__init__(share, **options)
        self._flux = flux_command()
        existing = os.environ.get("FLUX_URI")
        use_existing = options.get("use_existing")
        if use_existing is None:
            use_existing = bool(existing) and options.get("partitions") is None
        if use_existing and not existing:
            raise ValueError("flux backend: use_existing=True but FLUX_URI is not set (not inside a Flux instance)")
        self._existing_uri = existing if use_existing else None
        n = 1 if use_existing else int(options.get("partitions") or 1)
        if n < 1 or n > share.n_cores:
            raise ValueError(f"flux backend: partitions must be between 1 and the share's {share.n_cores} cores, got {n}")
        self._test_size = int(options.get("test_size") or 1)
        if self._test_size < 1:
            raise ValueError(f"flux backend: test_size must be at least 1, got {self._test_size}")
        self._validate = bool(options.get("validate", False))
        self._cpu_affinity = str(options.get("cpu_affinity", "off"))
        self._start_timeout_s = float(options.get("start_timeout_s", 60))
        self._partitions = [
            _Partition(self, str(i), cores, gpus)
            for i, (cores, gpus) in enumerate(zip(_split(share.cores, n), _split(share.gpus, n)))
        ]
        for part in self._partitions:
            if len(part.cores) < self._test_size:
                raise ValueError(
                    f"flux backend: partition {part.name} has {len(part.cores)} cores, fewer than "
                    f"test_size={self._test_size} brokers"
                )
        self._lock = threading.Lock()
        self._base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._closed = False

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if flux_command() is None:
            return False, NOT_FOUND
        try:
            import_flux()
        except ImportError as exc:
            return False, f"{NOT_FOUND} (the flux command exists but `import flux` fails: {exc})"
        return True, ""

    @property
    def partitions(self) -> list[str]:
        return [p.name for p in self._partitions]

    # ------------------------------------------------------------------ API
    def check(self, task: Task) -> None:
        super().check(task)
        parts = self._partitions
        if task.partition is not None:
            parts = [p for p in parts if p.name == task.partition]
            if not parts:
                raise TaskError(f"task {task.label}: no flux partition {task.partition!r}; "
                                f"this backend has {', '.join(self.partitions)}")
        if not any(p.fits(task) for p in parts):
            biggest = max(parts, key=lambda p: len(p.cores))
            ranks, cores, gpus = _shape(task)
            raise TaskError(
                f"task {task.label} needs {ranks} process(es) of {cores} cores and {gpus} GPUs each"
                f"{'' if task.mpi else ' (not MPI: one process)'}, but the largest flux partition has "
                f"{len(biggest.cores)} cores and {len(biggest.gpus)} GPUs over {self._test_size} broker(s), "
                "and a process cannot span brokers"
            )

    def start(self) -> None:
        flux = import_flux()
        if self._existing_uri is not None:
            self._partitions[0].connect(flux, self._existing_uri, owned=False)
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="impeccable-flux-")
        try:
            for part in self._partitions:  # all instances boot side by side
                part.launch(self._flux, self._tmp.name, self._test_size)
            deadline = time.monotonic() + self._start_timeout_s
            for part in self._partitions:
                part.connect(flux, part.read_uri(deadline), owned=True)
        except BaseException:
            self._stop_all(cancel_pending=True)
            raise

    def submit(self, submissions: Sequence[Submission]) -> None:
        if self._closed:
            raise RuntimeError("the flux backend is shut down")
        parts = self._partitions
        batches: dict[int, list[Submission]] = collections.defaultdict(list)
        with self._lock:
            for sub in submissions:
                candidates = [i for i, p in enumerate(parts) if p.fits(sub.task)
                              and (sub.task.partition is None or p.name == sub.task.partition)]
                # least loaded: outstanding cores relative to the partition's size
                best = min(candidates, key=lambda i: (parts[i].load + sub.task.cores) / len(parts[i].cores))
                parts[best].load += sub.task.cores
                batches[best].append(sub)
        for i, batch in batches.items():
            parts[i].post("submit", batch)

    def cancel(self, submission: Submission) -> None:
        uid = submission.task.uid
        for part in self._partitions:
            part.post("cancel", uid)

    def shutdown(self, cancel_pending: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_all(cancel_pending)

    # ------------------------------------------------------------------ helpers
    def _stop_all(self, cancel_pending: bool) -> None:
        try:
            for part in self._partitions:
                part.post("stop", cancel_pending)
            for part in self._partitions:
                part.join()
        finally:
            for part in self._partitions:  # all instances wind down side by side
                part.end_instance()
            for part in self._partitions:
                part.close_instance()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def jobspec_for(self, task: Task, flux: Any) -> str:
        """The encoded jobspec of ``task`` (environment, cwd, time limit, output paths)."""
        ranks, cores, gpus = _shape(task)
        jobspec = flux.job.JobspecV1.from_command(
            list(task.argv), num_tasks=ranks, cores_per_task=cores, gpus_per_task=gpus or None,
        )
        env = self._base_env.copy()
        env.update(task.env)
        env["OMP_NUM_THREADS"] = str(task.cores_per_rank)
        env["IMPECCABLE_TASK_UID"] = task.uid
        jobspec.environment = env
        jobspec.cwd = task.cwd or os.getcwd()
        if task.timeout_s:
            jobspec.duration = task.timeout_s
        if task.stdout or task.stderr:
            jobspec.setattr_shell_option("output.mode", "append")
            if task.stdout:
                jobspec.stdout = task.stdout
            if task.stderr:
                jobspec.stderr = task.stderr
        jobspec.setattr_shell_option("cpu-affinity", self._cpu_affinity)
        jobspec.setattr("system.job.name", task.name or task.uid)
        return jobspec.dumps()


class _Job:
    """A task on its way through one Flux instance."""

    __slots__ = ("sub", "jobid", "began", "exception", "status", "ended", "cancel_reason", "cores")

    def __init__(self, sub: Submission) -> None:
        self.sub = sub
        self.jobid: int | None = None
        self.began = False
        self.exception: tuple[str, str] | None = None
        self.status: int | None = None
        self.ended: float | None = None  # the finish event: when the processes ended
        self.cancel_reason: str | None = None
        self.cores = sub.task.cores


class _Partition:
    """One Flux instance, its reactor thread and the jobs in it."""

    def __init__(self, backend: FluxBackend, name: str, cores: tuple[int, ...], gpus: tuple[int, ...]) -> None:
        self.backend = backend
        self.name = name
        self.cores = cores
        self.gpus = gpus
        self.load = 0  # cores of the tasks handed here and not yet final (guarded by the backend's lock)
        self.process: subprocess.Popen | None = None
        self.log_path = ""
        self.uri = ""
        self.thread: threading.Thread | None = None
        self.inbox: collections.deque[tuple[str, Any]] = collections.deque()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.slot_of: dict[tuple[int, int], int] = {}
        self.gpu_of: dict[tuple[int, int], int] = {}
        self.per_rank_cores = len(cores) // backend._test_size
        self.per_rank_gpus = len(gpus) // backend._test_size

    def fits(self, task: Task) -> bool:
        if self.backend._existing_uri is not None:
            return task.cores <= len(self.cores) and task.gpus <= len(self.gpus)
        brokers = self.backend._test_size  # each advertises per_rank_* (a remainder is left unused)
        if task.cores > self.per_rank_cores * brokers or task.gpus > self.per_rank_gpus * brokers:
            return False
        _, cores, gpus = _shape(task)
        return cores <= self.per_rank_cores and gpus <= self.per_rank_gpus

    # ------------------------------------------------------------ instance
    def launch(self, flux: str, tmp: str, test_size: int) -> None:
        """Write this partition's R and config, and start ``flux start`` (returns at once)."""
        confdir = os.path.join(tmp, f"partition-{self.name}")
        os.makedirs(confdir)
        r_path = os.path.join(confdir, "R.json")
        host = socket.gethostname()
        ranks = []
        for rank in range(test_size):
            cores = self.cores[rank * self.per_rank_cores:(rank + 1) * self.per_rank_cores]
            gpus = self.gpus[rank * self.per_rank_gpus:(rank + 1) * self.per_rank_gpus]
            ranks.append(_encode_r(flux, rank, cores, gpus, host))
            self.slot_of.update({(rank, c): c for c in cores})
            self.gpu_of.update({(rank, g): g for g in gpus})
        r_text = ranks[0] if len(ranks) == 1 else _run([flux, "R", "append"], "\n".join(ranks))
        with open(r_path, "w") as f:
            f.write(r_text)
        with open(os.path.join(confdir, "resource.toml"), "w") as f:
            f.write(f'[resource]\npath = "{r_path}"\nnoverify = true\n')
        self.log_path = os.path.join(tmp, f"partition-{self.name}.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [flux, "start", f"--test-size={test_size}", "-c", confdir,
                 "sh", "-c", 'echo "$FLUX_URI"; exec cat'],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True,  # Ctrl-C reaches the pilot, which stops the instance in order
            )

    def read_uri(self, deadline: float) -> str:
        """The instance's FLUX_URI, as its initial program prints it."""
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                raise RuntimeError(
                    f"flux partition {self.name} did not start "
                    f"({'timed out' if not ready else 'exited'}): {self._log_tail()}"
                )
            line += chunk
        return line.decode().strip()

    def connect(self, flux: Any, uri: str, owned: bool) -> None:
        self.uri = uri
        ready = threading.Event()
        failure: list[BaseException] = []
        self.thread = threading.Thread(target=_Reactor(self, flux, ready, failure).run,
                                       name=f"impeccable-flux-{self.name}", daemon=True)
        self.thread.start()
        ready.wait()
        if failure:
            self.thread.join()
            raise RuntimeError(f"flux partition {self.name}: cannot connect to {uri}: {failure[0]}") from failure[0]

    def post(self, what: str, payload: Any) -> None:
        if self.thread is None or not self.thread.is_alive():
            if what == "submit":
                for sub in payload:
                    sub.fail(f"flux partition {self.name} is not running", final=True)
            return
        self.inbox.append((what, payload))
        os.eventfd_write(self.wake_fd, 1)

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def end_instance(self) -> None:
        """Ask the instance to end (returns at once): its initial program's stdin closes, so it exits."""
        if self.process is not None:
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except OSError:
                    pass

    def close_instance(self) -> None:
        """End the instance and wait for it; signal its process group if it does not stop in time."""
        self.end_instance()
        process, self.process = self.process, None
        if process is not None:
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait()
        if self.wake_fd >= 0:
            os.close(self.wake_fd)
            self.wake_fd = -1

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-5:]) or "no output"
        except OSError:
            return "no log"


class _Reactor:
    """The partition's thread: a Flux handle, the journal, and every job of this instance."""

    def __init__(self, part: _Partition, flux: Any, ready: threading.Event, failure: list[BaseException]) -> None:
        self.part = part
        self.flux = flux
        self.ready = ready
        self.failure = failure
        self.jobs: dict[int, _Job] = {}  # by Flux job id
        self.by_uid: dict[str, _Job] = {}
        self.early: dict[int, list[Any]] = collections.defaultdict(list)  # events before the submit reply
        self.submitting = 0
        self.stopping = False

    def run(self) -> None:
        flux = self.flux
        try:
            self.h = flux.Flux(self.part.uri)
            if not self.part.slot_of:
                self._map_existing_instance()
            self.journal = flux.job.JournalConsumer(self.h, full=False)
            self.journal.set_callback(self._on_event)
            self.journal.start()
            self.waker = self.h.fd_watcher_create(self.part.wake_fd, self._on_wake, events=flux.constants.FLUX_POLLIN)
            self.waker.start()
        except BaseException as exc:  # noqa: BLE001 - reported by connect()
            self.failure.append(exc)
            self.ready.set()
            return
        self.ready.set()
        try:
            self.h.reactor_run()
            if not self.stopping:
                raise RuntimeError("the reactor stopped unexpectedly")
        except BaseException as exc:
            self._abandon(f"flux partition {self.part.name} failed: {type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise
        finally:
            try:
                self.journal.stop()
            except Exception:  # noqa: BLE001 - the instance may be gone
                pass
            self.waker.stop()

    # ------------------------------------------------------------ inbox
    def _on_wake(self, *_: Any) -> None:
        try:
            os.eventfd_read(self.part.wake_fd)
        except BlockingIOError:
            return
        inbox = self.part.inbox
        while inbox:
            what, payload = inbox.popleft()
            if what == "submit":
                for sub in payload:
                    self._submit(sub)
            elif what == "cancel":
                self._cancel(payload, "canceled")
            elif what == "stop":
                self.stopping = True
                if payload:
                    for uid in list(self.by_uid):
                        self._cancel(uid, "canceled at shutdown")
        self._maybe_done()

    def _submit(self, sub: Submission) -> None:
        job = _Job(sub)
        self.by_uid[sub.task.uid] = job
        try:
            spec = self.part.backend.jobspec_for(sub.task, self.flux)
        except (ValueError, TypeError, OSError) as exc:
            self._finish_unsubmitted(job, f"cannot build a jobspec: {exc}")
            return
        future = self.flux.job.submit_async(self.h, spec, novalidate=not self.part.backend._validate)
        self.submitting += 1
        future.then(self._on_submitted, job)

    def _on_submitted(self, future: Any, job: _Job) -> None:
        self.submitting -= 1
        try:
            jobid = int(future.get_id())
        except OSError as exc:
            self._finish_unsubmitted(job, f"flux rejected the job: {exc.strerror or exc}")
            self._maybe_done()
            return
        job.jobid = jobid
        self.jobs[jobid] = job
        if job.cancel_reason is not None:
            self.flux.job.cancel_async(self.h, jobid, job.cancel_reason)
        for event in self.early.pop(jobid, ()):
            self._on_event(event)
        if not self.submitting:
            self.early.clear()  # what is left belongs to other users' jobs (an existing instance)

    def _finish_unsubmitted(self, job: _Job, reason: str) -> None:
        del self.by_uid[job.sub.task.uid]
        sub = job.sub
        if job.cancel_reason is not None:
            _cancel_unstarted(sub, job.cancel_reason)
        elif sub.begin(partition=self.part.name) and sub.fail(reason):
            self._submit(sub)
            return
        self._release(job)

    def _cancel(self, uid: str, reason: str) -> None:
        job = self.by_uid.get(uid)
        if job is None or job.cancel_reason is not None:
            return
        job.cancel_reason = reason
        if job.jobid is not None:
            self.flux.job.cancel_async(self.h, job.jobid, reason)

    # ------------------------------------------------------------ journal
    def _on_event(self, event: Any) -> None:
        if event is None:  # the journal ended: the instance is going away
            if not self.stopping or self.jobs:
                raise RuntimeError("the job-manager journal ended (instance gone?)")
            return
        jobid = int(event.jobid)
        job = self.jobs.get(jobid)
        if job is None:
            if self.submitting:  # the submit reply has not arrived yet
                self.early[jobid].append(event)
            return
        name = event.name
        if name == "alloc":
            slots, gpus = self._slots(event.R)
            job.began = job.sub.begin(slots, gpus, partition=self.part.name, when=event.timestamp)
            if not job.began and job.cancel_reason is None:  # the caller canceled the future meanwhile
                job.cancel_reason = "canceled before it started"
                self.flux.job.cancel_async(self.h, jobid, job.cancel_reason)
        elif name == "start":
            if job.began:
                job.sub.started(event.timestamp)
        elif name == "exception":
            if event.context.get("severity", 0) == 0 and job.exception is None:
                job.exception = (event.context.get("type", "exception"), event.context.get("note", ""))
        elif name == "finish":
            job.status = event.context.get("status")
            job.ended = event.timestamp
        elif name == "clean":
            self._final(job, event.timestamp)
            self._maybe_done()

    def _final(self, job: _Job, when: float) -> None:
        del self.jobs[job.jobid]  # type: ignore[index]
        sub = job.sub
        when = job.ended or when
        exc_type, note = job.exception or ("", "")
        code = os.waitstatus_to_exitcode(job.status) if job.status is not None else None
        if exc_type == "timeout":
            reason = f"timed out after {sub.task.timeout_s:g} s (flux: {note or 'time limit'})"
        elif exc_type:
            reason = f"flux {exc_type} exception: {note}" if note else f"flux {exc_type} exception"
        elif code is not None and code < 0:
            reason = f"killed by signal {_signal_name(-code)}"
        else:
            reason = f"exit code {code}"
        failed = not (exc_type == "cancel" or job.cancel_reason is not None) and (job.exception or code != 0)
        if failed and job.began and not sub.task.stderr:
            # the reason gets the last line of stderr, from the job's output eventlog (failures only)
            lookup = self.flux.job.job_info_lookup(self.h, job.jobid, keys=["guest.output"])
            lookup.then(self._on_output, job, when, reason, code)
            return
        self._settle(job, when, reason, code, file_tail(sub.task.stderr) if failed and job.began else "")

    def _on_output(self, future: Any, job: _Job, when: float, reason: str, code: int | None) -> None:
        try:
            tail = _stderr_tail(future.get().get("guest.output", ""))
        except (OSError, ValueError, AttributeError):
            tail = ""
        self._settle(job, when, reason, code, tail)
        self._maybe_done()

    def _settle(self, job: _Job, when: float, reason: str, code: int | None, tail: str) -> None:
        """The task's final state (or its retry), once everything about the job is known."""
        del self.by_uid[job.sub.task.uid]
        self._release(job)
        sub = job.sub
        if not job.began and sub.future.done():
            return  # canceled by the caller before it was allocated: begin() already recorded it
        exc_type, note = job.exception or ("", "")
        if exc_type == "cancel" or job.cancel_reason is not None:
            if not job.began:
                _cancel_unstarted(sub, job.cancel_reason or f"canceled in flux: {note}", when=when)
            else:
                sub.cancel(f"{job.cancel_reason or 'canceled'} while running (flux job canceled)", when=when)
            return
        if not job.exception and code == 0:
            sub.complete(when=when, exit_code=0)
            return
        reason = with_stderr(reason, tail)
        if not job.began:
            sub.begin(partition=self.part.name, when=when)  # counts the attempt
        if sub.fail(reason, when=when, exit_code=code, traceback=tail or None):
            with self.part.backend._lock:
                self.part.load += job.cores
            self._submit(sub)

    def _release(self, job: _Job) -> None:
        with self.part.backend._lock:
            self.part.load -= job.cores

    def _maybe_done(self) -> None:
        if self.stopping and not self.by_uid and not self.part.inbox:
            self.h.reactor_stop()

    def _abandon(self, reason: str) -> None:
        for job in list(self.by_uid.values()):
            if not job.sub.future.done():
                job.sub.fail(reason, final=True)
        self.by_uid.clear()
        self.jobs.clear()

    # ------------------------------------------------------------ slots
    def _slots(self, R: dict | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Our slot numbers for the cores and GPUs Flux assigned (R_lite: ranks, core and gpu idsets)."""
        if not R:
            return (), ()
        cores: list[int] = []
        gpus: list[int] = []
        for entry in R.get("execution", {}).get("R_lite", ()):
            children = entry.get("children", {})
            for rank in _idset(entry["rank"]):
                cores.extend(self.part.slot_of.get((rank, c), c) for c in _idset(children.get("core", "")))
                gpus.extend(self.part.gpu_of.get((rank, g), g) for g in _idset(children.get("gpu", "")))
        return tuple(sorted(cores)), tuple(sorted(gpus))

    def _map_existing_instance(self) -> None:
        """Number an existing instance's cores and GPUs in R order onto the share's slots."""
        R = self.flux.kvs.get(self.h, "resource.R")
        pairs: list[tuple[int, int]] = []
        gpu_pairs: list[tuple[int, int]] = []
        for entry in R.get("execution", {}).get("R_lite", ()):
            children = entry.get("children", {})
            for rank in _idset(entry["rank"]):
                pairs.extend((rank, c) for c in _idset(children.get("core", "")))
                gpu_pairs.extend((rank, g) for g in _idset(children.get("gpu", "")))
        for table, found, ours in ((self.part.slot_of, sorted(pairs), self.part.cores),
                                   (self.part.gpu_of, sorted(gpu_pairs), self.part.gpus)):
            top = max(ours, default=-1)
            for i, key in enumerate(found):
                table[key] = ours[i] if i < len(ours) else top + 1 + i - len(ours)


# ---------------------------------------------------------------- raw baseline (bench)
def raw_throughput(workload: str, n_tasks: int, cores: int, duration_s: float) -> float:
    """Tasks/s of plain ``FluxExecutor`` submissions on a fresh instance advertising ``cores`` cores.

    Timed from the first submit to the last result; the instance's start-up is not counted.
    """
    from ..bench import workload_kind

    if workload_kind(workload) is not TaskKind.EXECUTABLE:
        raise ValueError(f"the flux backend runs executables only, not workload {workload!r}")
    flux = import_flux()
    argv = [shutil.which("true") or "true"] if workload == "null-exec" else [shutil.which("sleep") or "sleep", f"{duration_s:g}"]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="impeccable-flux-raw-") as tmp:
        part = _Partition(_RawOwner(), "raw", tuple(range(cores)), ())
        try:
            part.launch(flux_command() or "flux", tmp, 1)
            uri = part.read_uri(time.monotonic() + 60)
            with flux.job.FluxExecutor(handle_kwargs={"url": uri}) as executor:
                t0 = time.perf_counter()
                futures = []
                for _ in range(n_tasks):
                    jobspec = flux.job.JobspecV1.from_command(argv)
                    jobspec.environment = env
                    jobspec.cwd = os.getcwd()
                    futures.append(executor.submit(jobspec))
                for future in futures:
                    future.result()
                elapsed = time.perf_counter() - t0
        finally:
            part.close_instance()
    return n_tasks / elapsed


class _RawOwner:
    """What a partition needs from its backend, for the raw baseline's instance."""

    _test_size = 1
    _existing_uri = None


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


# ---------------------------------------------------------------- small helpers
def _shape(task: Task) -> tuple[int, int, int]:
    """(processes, cores each, GPUs each) of the Flux job for ``task``.

    An MPI task is ``ranks`` processes that Flux launches (with PMI) and may
    spread over brokers; any other task is one process on all of its cores,
    as the local backend runs it.
    """
    if task.mpi:
        return task.ranks, task.cores_per_rank, task.gpus_per_rank
    return 1, task.cores, task.gpus


def _stderr_tail(eventlog: str) -> str:
    """The last STDERR_TAIL_BYTES of the stderr in a job's output eventlog (RFC 24)."""
    chunks: list[str] = []
    for line in eventlog.splitlines():
        entry = json.loads(line)
        context = entry.get("context", {})
        if entry.get("name") == "data" and context.get("stream") == "stderr" and "data" in context:
            data = context["data"]
            if context.get("encoding") == "base64":
                data = base64.b64decode(data).decode(errors="replace")
            chunks.append(data)
    return "".join(chunks)[-STDERR_TAIL_BYTES:].strip()


def _cancel_unstarted(sub: Submission, reason: str, when: float | None = None) -> None:
    """CANCELED before resources were assigned (``Submission.cancel`` also wakes ``wait()``ers)."""
    sub.cancel(reason, when=when)

def _split(items: tuple[int, ...], n: int) -> list[tuple[int, ...]]:
    """``items`` in ``n`` contiguous, nearly equal parts."""
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        parts.append(items[start:end])
        start = end
    return parts


def _ranges(ids: Sequence[int]) -> str:
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


def _idset(text: str) -> list[int]:
    ids: list[int] = []
    for part in str(text).split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids


def _encode_r(flux: str, rank: int, cores: Sequence[int], gpus: Sequence[int], host: str) -> str:
    argv = [flux, "R", "encode", f"-r{rank}", f"-c{_ranges(cores)}", "-H", host]
    if gpus:
        argv.append(f"-g{_ranges(gpus)}")
    return _run(argv)


def _run(argv: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout

