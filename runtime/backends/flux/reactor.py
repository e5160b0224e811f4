"""One Flux instance's reactor thread: submits jobs, follows them on the job-manager journal.

It submits jobs with ``flux.job.submit_async`` and follows every job through
one stream, the job-manager journal (``flux.job.JournalConsumer``), which
carries each job's ``R`` on its ``alloc`` event: no per-job watch, no
polling. Events map to our states as follows: ``alloc`` -> resources
assigned (the slots are read from R), ``start`` -> started, ``exception``
(severity 0) -> the reason (timeout, cancel, ...), ``finish`` -> the wait
status, ``clean`` -> the final state, decided by :func:`job_outcome` (a pure
function, tested without Flux). The reactor sees its partition only through a
frozen :class:`PartitionConfig` and a :class:`PartitionLink` (inbox, wake-up
fd, slot maps, load), never the backend.
"""

from __future__ import annotations

import base64
import collections
import functools
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ...errors import BackendBroken
from ...gpus import launch_env
from ...slots import Placement, SlotView, task_processes
from ...task import Task
from ..admission import admit
from ..base import STDERR_TAIL_BYTES, Submission, file_tail, signal_name, with_stderr
from .ahead import RELEASED_URGENCY, HeldJobs


@dataclass(frozen=True)
class PartitionConfig:
    """What a partition is: its slots, its brokers, and how its jobs are built."""

    name: str
    nodes: tuple[int, ...]  # the allocation's nodes this instance spans: broker rank i runs on nodes[i]
    cores: tuple[int, ...]  # the core slots of those nodes that the pilot may lend here
    gpus: tuple[int, ...] = ()
    gpus_per_node: int = 0  # to turn a GPU slot into its index on the node (CUDA_VISIBLE_DEVICES)
    gpu_table: tuple[str, ...] = ()  # the device of each GPU slot of a node (gpus.node_table)
    validate: bool = False  # run Flux's jobspec validator on each job (costs broker time per job)
    cpu_affinity: str = "off"  # the job shell's cpu-affinity option (advertised cores need not exist)
    base_env: Mapping[str, str] = field(default_factory=dict)
    existing_uri: str | None = None  # an enclosing instance used as is (its ranks are our nodes)
    ahead: int = 0  # waiting tasks submitted ahead, held until placed (see ahead.py; one broker only)

    @property
    def brokers(self) -> int:
        return len(self.nodes)

    @property
    def per_broker_cores(self) -> int:
        return len(self.cores) // self.brokers

    @property
    def per_broker_gpus(self) -> int:
        return len(self.gpus) // self.brokers

    def fits(self, task: Task) -> bool:
        """Whether ``task`` can ever run here: a process cannot span brokers (nodes)."""
        if task.cores > len(self.cores) or task.gpus > len(self.gpus):
            return False
        _, cores, gpus = job_shape(task)
        return cores <= self.per_broker_cores and gpus <= self.per_broker_gpus


def _guarded(callback: Any) -> Any:
    """Every reactor callback is a turn: it ends with an admission pass, so slots this partition gave
    back in it are used at once (its own give-backs wake nobody: see :mod:`.admission`). A callback
    that raises must not leave tasks waiting forever (Flux's reactor would carry on): fail everything
    this partition holds, with the bug as the reason, and stop the reactor."""

    @functools.wraps(callback)
    def run(self: Reactor, *args: Any) -> Any:
        try:
            result = callback(self, *args)
            self._admit()
            return result
        except Exception as exc:  # noqa: BLE001 - reported through every task's failure
            self.stopping = True
            self._abandon(f"flux partition {self.config.name} failed: {type(exc).__name__}: {exc}")
            self.h.reactor_stop()

    return run


class PartitionLink(Protocol):
    """The partition as its reactor sees it."""

    config: PartitionConfig
    slots: SlotView  # the pilot's pool, restricted to this partition's nodes
    uri: str
    inbox: collections.deque
    wake_fd: int

    def release(self, cores: int) -> None: ...

    def add_load(self, cores: int) -> None: ...


@dataclass(frozen=True)
class JobOutcome:
    state: Literal["done", "failed", "canceled"]
    reason: str
    exit_code: int | None


def job_outcome(
    exception: tuple[str, str] | None,
    status: int | None,
    cancel_reason: str | None,
    began: bool,
    timeout_s: float | None,
) -> JobOutcome:
    """How a finished Flux job ends as a task: from its severity-0 exception (type, note), its wait
    status, whether we canceled it (and why) and whether it had been allocated."""
    exc_type, note = exception or ("", "")
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    if exc_type == "cancel" or cancel_reason is not None:
        if not began:
            return JobOutcome("canceled", cancel_reason or f"canceled in flux: {note}", code)
        return JobOutcome("canceled", f"{cancel_reason or 'canceled'} while running (flux job canceled)", code)
    if not exception and code == 0:
        return JobOutcome("done", "", 0)
    if exc_type == "timeout":
        reason = f"timed out after {timeout_s:g} s (flux: {note or 'time limit'})"
    elif exc_type:
        reason = f"flux {exc_type} exception: {note}" if note else f"flux {exc_type} exception"
    elif code is not None and code < 0:
        reason = f"killed by signal {signal_name(-code)}"
    else:
        reason = f"exit code {code}"
    return JobOutcome("failed", reason, code)


def job_shape(task: Task) -> tuple[int, int, int]:
    """(processes, cores each, GPUs each) of the Flux job for ``task``.

    An MPI task is ``ranks`` processes that Flux launches (with PMI) and may
    spread over brokers; any other task is one process on all of its cores,
    as the local backend runs it.
    """
    if task.mpi:
        return task.ranks, task.cores_per_rank, task.gpus_per_rank
    return 1, task.cores, task.gpus


def jobspec_for(task: Task, config: PartitionConfig, flux: Any, placement: Placement) -> str:
    """The encoded jobspec of ``task``, pinned to the brokers of the nodes the pilot placed it on
    (environment, cwd, time limit, output paths). A task over several nodes has them whole."""
    ranks, cores, gpus = job_shape(task)
    nodes = sorted(set(placement.nodes))
    spread = {"num_nodes": len(nodes), "exclusive": True} if len(nodes) > 1 else {}
    jobspec = flux.job.JobspecV1.from_command(
        list(task.argv), num_tasks=ranks, cores_per_task=cores, gpus_per_task=gpus or None, **spread
    )
    broker_of = {node: rank for rank, node in enumerate(config.nodes)}
    jobspec.setattr("system.constraints", {"ranks": [str(broker_of[n]) for n in nodes]})
    env = dict(config.base_env)
    env.update(task.env)
    env["OMP_NUM_THREADS"] = str(task.cores_per_rank)
    env["IMPECCABLE_TASK_UID"] = task.uid
    env.update(launch_env(placement.gpus, config.gpus_per_node, config.gpu_table))  # the pilot's (Flux's is off)
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
    jobspec.setattr_shell_option("cpu-affinity", config.cpu_affinity)
    jobspec.setattr_shell_option("gpu-affinity", "off")
    jobspec.setattr("system.job.name", task.name or task.uid)
    return jobspec.dumps()


class _Job:
    """A task on its way through one Flux instance."""

    __slots__ = (
        "sub",
        "jobid",
        "began",
        "exception",
        "status",
        "ended",
        "cancel_reason",
        "cores",
        "placement",
        "held",
        "discarded",
    )

    def __init__(self, sub: Submission) -> None:
        self.sub = sub
        self.jobid: int | None = None
        self.began = False
        self.exception: tuple[str, str] | None = None
        self.status: int | None = None
        self.ended: float | None = None  # the finish event: when the processes ended
        self.cancel_reason: str | None = None
        self.cores = sub.task.cores
        self.placement: Placement | None = None  # the pilot's slots, held from admission to the end
        self.held = False  # submitted at urgency 0, not yet let go (see ahead.py)
        self.discarded = False  # canceled in Flux as no longer wanted: its events are ignored

    def note(self, event: Any, partition: str) -> bool:
        """Follow a journal event (all but ``clean``); True when the allocation found the future canceled."""
        name, context = event.name, event.context
        if name == "alloc":
            assert self.placement is not None
            self.began = self.sub.begin(
                self.placement.cores,
                self.placement.gpus,
                partition=partition,
                when=event.timestamp,
                node=self.placement.hosts,
            )
            return not self.began
        if name == "start" and self.began:
            self.sub.started(event.timestamp)
        elif name == "exception" and context.get("severity", 0) == 0 and self.exception is None:
            self.exception = (context.get("type", "exception"), context.get("note", ""))
        elif name == "finish":
            self.status = context.get("status")
            self.ended = event.timestamp
        return False


class _Intake:
    """How a task's job gets into Flux (submitted when placed, or held ahead and let go when placed) and how
    its slots go back: the submission half of :class:`Reactor`, which runs it on the reactor thread."""

    h: Any
    flux: Any
    config: PartitionConfig
    part: PartitionLink
    jobs: dict[int, _Job]  # by Flux job id
    by_uid: dict[str, _Job]  # the tasks placed here, until they end
    early: dict[int, list[Any]]
    submitting: int
    stopping: bool
    waiting: collections.deque[Submission]
    ahead: HeldJobs[_Job]
    anywhere: Placement
    _on_event: Callable[[Any], Any]  # the journal's callback (events that came before the submit reply)

    def _submit(self, sub: Submission) -> None:
        self.waiting.append(sub)  # admitted at the end of this turn (every callback ends with a pass)

    def _launch(self, sub: Submission, placement: Placement) -> None:
        job = self.ahead.take(sub)
        if job is None:
            self.submit_job(sub, placement)
            return
        job.placement = placement
        self.by_uid[sub.task.uid] = job
        if job.jobid is not None:
            self._release(job)  # else once Flux answers the submission

    def submit_job(self, sub: Submission, placement: Placement | None) -> _Job | None:
        """Submit ``sub``'s job: placed (it runs when Flux allocates it), or held (``placement`` None, urgency
        0) until the pilot places it. None when no job was submitted."""
        job = _Job(sub)
        job.placement = placement
        job.held = placement is None
        if placement is not None:
            self.by_uid[sub.task.uid] = job
        try:
            spec = jobspec_for(sub.task, self.config, self.flux, placement or self.anywhere)
        except (ValueError, TypeError, OSError) as exc:
            if placement is not None:  # a held one fails the same way once placed, as its task's failure
                self._finish_unsubmitted(job, f"cannot build a jobspec: {exc}")
            return None
        future = self.flux.job.submit_async(
            self.h, spec, urgency=0 if job.held else RELEASED_URGENCY, novalidate=not self.config.validate
        )
        self.submitting += 1
        future.then(self._on_submitted, job)
        return job

    def _release(self, job: _Job) -> None:
        """Let a held job go now that its task has slots (:meth:`on_released` follows up)."""
        assert job.jobid is not None
        self.h.rpc("job-manager.urgency", {"id": job.jobid, "urgency": RELEASED_URGENCY}).then(self.on_released, job)

    @_guarded
    def _on_submitted(self, future: Any, job: _Job) -> None:
        self.submitting -= 1
        try:
            jobid = int(future.get_id())
        except OSError as exc:
            if self.ahead.is_held(job) or job.discarded:  # its task is submitted afresh when placed
                self.ahead.forget(job)
            else:
                self._finish_unsubmitted(job, f"flux rejected the job: {exc.strerror or exc}")
                self._maybe_done()
            return
        job.jobid = jobid
        self.jobs[jobid] = job
        if job.discarded:
            self.discard(job)
        elif job.cancel_reason is not None:
            self.flux.job.cancel_async(self.h, jobid, job.cancel_reason)
        elif job.held and job.placement is not None:
            self._release(job)  # placed while Flux was still answering
        for event in self.early.pop(jobid, ()):
            self._on_event(event)
        if not self.submitting:
            self.early.clear()  # what is left belongs to other users' jobs (an existing instance)

    def _finish_unsubmitted(self, job: _Job, reason: str) -> None:
        del self.by_uid[job.sub.task.uid]
        self._give_back(job)
        sub = job.sub
        if job.cancel_reason is not None:
            sub.cancel(job.cancel_reason)
        elif sub.begin(partition=self.config.name) and sub.fail(reason):
            self._submit(sub)
            return
        self.part.release(job.cores)

    @_guarded
    def on_released(self, future: Any, job: _Job) -> None:
        """A held job was let go; if Flux refused (the job is gone), the task runs as a fresh job."""
        try:
            future.get()
            job.held = False
        except OSError:
            # not settled meanwhile, nor canceled by the caller (then the cancel sent ends the job, and the task)
            if self.by_uid.get(job.sub.task.uid) is job and job.cancel_reason is None:
                self._resubmit(job)

    def _resubmit(self, job: _Job) -> None:
        """A held job lost in Flux after its task was placed (canceled by someone else): the task runs as a
        fresh job on the same slots; the lost one is canceled and its events ignored."""
        placement, job.placement = job.placement, None
        self.discard(job)
        self.submit_job(job.sub, placement)

    def discard(self, job: _Job) -> None:
        """Cancel a job in Flux that no task waits for any more (its events are then ignored)."""
        job.discarded = True
        if job.jobid is not None:
            self.flux.job.cancel_async(self.h, job.jobid, "no longer wanted")

    def _give_back(self, job: _Job) -> None:
        if job.placement is not None:
            self.part.slots.give_back(job.placement.cores, job.placement.gpus)
            job.placement = None

    def _maybe_done(self) -> None:
        # every submit answered: a held job discarded before its reply is canceled by then (an existing instance)
        if self.stopping and not self.by_uid and not self.waiting and not self.part.inbox and not self.submitting:
            self.part.slots.schedule_pass_ends(0)
            self.h.reactor_stop()


class Reactor(_Intake):
    """The partition's thread: a Flux handle, the journal, and every job of this instance."""

    def __init__(self, part: PartitionLink, flux: Any, ready: threading.Event, failure: list[BaseException]) -> None:
        self.part = part
        self.config = part.config
        self.flux = flux
        self.ready = ready
        self.failure = failure
        self.jobs: dict[int, _Job] = {}  # by Flux job id
        self.by_uid: dict[str, _Job] = {}
        self.early: dict[int, list[Any]] = collections.defaultdict(list)  # events before the submit reply
        self.submitting = 0
        self.stopping = False
        self.waiting: collections.deque[Submission] = collections.deque()  # for the pilot's slots
        self.ahead: HeldJobs[_Job] = HeldJobs(
            self.config.ahead, self.config.brokers, lambda sub: self.submit_job(sub, None), self.discard
        )
        self.anywhere = Placement((), (), (self.config.nodes[0],))  # what a held job's jobspec is built for

    def run(self) -> None:
        flux = self.flux
        try:
            self.h = flux.Flux(self.part.uri)
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
            self._abandon(f"flux partition {self.config.name} failed: {type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise
        finally:
            try:
                self.journal.stop()
            except Exception:  # noqa: BLE001 - the instance may be gone
                pass
            self.waker.stop()

    # ------------------------------------------------------------ inbox
    @_guarded
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
                    while self.waiting:
                        self._not_admitted(self.waiting.popleft(), "canceled at shutdown")
                    for uid in list(self.by_uid):
                        self._cancel(uid, "canceled at shutdown")
        self._admit()
        self._maybe_done()

    def _admit(self) -> None:
        """Hand Flux the waiting tasks whose slots the pilot can lend now, in order (with backfill)."""
        slots = self.part.slots
        admit(self.waiting, self._place, slots, lambda: bool(slots.free_cores))
        self.ahead.top_up(self.waiting)

    def _place(self, sub: Submission) -> bool:
        task = sub.task
        placement = self.part.slots.place(task_processes(task.ranks, task.cores_per_rank, task.gpus_per_rank, task.mpi))
        if placement is None:
            return False
        self._launch(sub, placement)
        return True

    def _not_admitted(self, sub: Submission, reason: str) -> None:
        """Canceled while it waited for slots: Flux never ran it."""
        self.ahead.discard(sub.task.uid)
        self.part.release(sub.task.cores)
        sub.cancel(reason)

    def _cancel(self, uid: str, reason: str) -> None:
        waiting = next((sub for sub in self.waiting if sub.task.uid == uid), None)
        if waiting is not None:
            self.waiting.remove(waiting)
            self._not_admitted(waiting, "canceled before it started")
            return
        job = self.by_uid.get(uid)
        if job is None or job.cancel_reason is not None:
            return
        job.cancel_reason = reason
        if job.jobid is not None:
            self.flux.job.cancel_async(self.h, job.jobid, reason)

    # ------------------------------------------------------------ journal
    @_guarded
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
        ends = event.name == "clean" or (event.name == "exception" and event.context.get("severity", 0) == 0)
        if job.discarded or self.ahead.is_held(job):  # not running for any task (yet)
            if ends and not job.discarded:  # canceled in Flux by someone else: its task is submitted when placed
                self.ahead.forget(job)
                job.discarded = True
            if event.name == "clean":
                del self.jobs[jobid]
            return
        if ends and job.held and not job.began and job.cancel_reason is None:  # let go by us, lost before alloc
            self._resubmit(job)
            if event.name == "clean":
                del self.jobs[jobid]
            return
        if event.name == "clean":
            self._final(job, event.timestamp)
            self._maybe_done()
        elif job.note(event, self.config.name) and job.cancel_reason is None:  # canceled by the caller meanwhile
            job.cancel_reason = "canceled before it started"
            self.flux.job.cancel_async(self.h, jobid, job.cancel_reason)
        elif event.name == "finish" and self.config.existing_uri is None:
            self._give_back(job)  # its processes have ended: the slots are the pilot's again (see instance.py)

    def _final(self, job: _Job, when: float) -> None:
        assert job.jobid is not None  # only submitted jobs reach their end
        del self.jobs[job.jobid]
        sub = job.sub
        outcome = job_outcome(job.exception, job.status, job.cancel_reason, job.began, sub.task.timeout_s)
        when = job.ended or when
        if outcome.state == "failed" and job.began and not sub.task.stderr:
            # the reason gets the last line of stderr, from the job's output eventlog (failures only)
            lookup = self.flux.job.job_info_lookup(self.h, job.jobid, keys=["guest.output"])
            lookup.then(self._on_output, job, when, outcome)
            return
        failed = outcome.state == "failed" and job.began
        self._settle(job, when, outcome, file_tail(sub.task.stderr) if failed else "")

    @_guarded
    def _on_output(self, future: Any, job: _Job, when: float, outcome: JobOutcome) -> None:
        try:
            tail = _stderr_tail(future.get().get("guest.output", ""))
        except (OSError, ValueError, AttributeError):
            tail = ""
        self._settle(job, when, outcome, tail)
        self._maybe_done()

    def _settle(self, job: _Job, when: float, outcome: JobOutcome, tail: str) -> None:
        """The task's final state (or its retry), once everything about the job is known."""
        del self.by_uid[job.sub.task.uid]
        self.part.release(job.cores)
        self._give_back(job)
        self._admit()
        sub = job.sub
        if not job.began and sub.future.done():
            return  # canceled by the caller before it was allocated: begin() already recorded it
        if outcome.state == "canceled":
            sub.cancel(outcome.reason, when=when)
        elif outcome.state == "done":
            sub.complete(when=when, exit_code=0)
        else:
            if not job.began:
                sub.begin(partition=self.config.name, when=when)  # counts the attempt
            if sub.fail(
                with_stderr(outcome.reason, tail), when=when, exit_code=outcome.exit_code, traceback=tail or None
            ):
                self.part.add_load(job.cores)
                self._submit(sub)

    def _abandon(self, reason: str) -> None:
        broken = BackendBroken(reason)
        subs = list(self.waiting) + [job.sub for job in self.by_uid.values()]
        for job in self.by_uid.values():
            self._give_back(job)
        self.waiting.clear()
        self.ahead.discard_all()
        self.by_uid.clear()
        self.jobs.clear()
        for sub in subs:
            if not sub.future.done():
                sub.fail(reason, final=True, exception=broken)


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
