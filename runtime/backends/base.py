"""The protocol every backend speaks, and the one state machine they share.

A backend receives :class:`Submission` objects (task + record + future) and
drives each to a final state through the methods on Submission: ``begin`` when
it takes resources, ``started`` when the work begins, then ``complete``,
``fail`` (which says whether to retry) or ``cancel``. Backends never touch
record fields or futures directly, so every backend produces the same records
and callers never learn which backend ran a task.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from typing import Any, ClassVar

from ..errors import TaskError, TaskFailed
from ..records import TaskRecord, TaskState
from ..slots import SlotView
from ..task import Task, TaskKind
from .options import parse_options


class TaskFuture(Future):
    """A ``concurrent.futures.Future`` that also carries the task and its live record."""

    def __init__(self, task: Task, record: TaskRecord) -> None:
        super().__init__()
        self.task = task
        self.record = record


class Submission:
    """One task on its way through a backend. Methods are called from the backend's thread."""

    __slots__ = ("task", "record", "future")

    def __init__(self, task: Task, record: TaskRecord, future: TaskFuture) -> None:
        self.task = task
        self.record = record
        self.future = future

    def begin(
        self,
        slots: tuple[int, ...] = (),
        gpu_slots: tuple[int, ...] = (),
        partition: str = "",
        when: float | None = None,
        node: str = "",
    ) -> bool:
        """Resources were assigned. False if the caller canceled the future meanwhile (record CANCELED)."""
        future = self.future
        if not future.running() and not future.set_running_or_notify_cancel():
            self._finalize(TaskState.CANCELED, when, error="canceled before it started")
            return False
        record = self.record
        record.attempts += 1
        record.scheduled = time.time() if when is None else when
        record.slots = slots
        record.gpu_slots = gpu_slots
        record.partition = partition
        record.node = node
        record.started = None
        return True

    def started(self, when: float | None = None) -> None:
        self.record.started = time.time() if when is None else when
        self.record.state = TaskState.RUNNING

    def complete(self, result: Any = None, when: float | None = None, exit_code: int | None = None) -> None:
        """DONE. Executables resolve the future with their record, functions with their return value."""
        self.record.exit_code = exit_code
        self._finalize(TaskState.DONE, when)
        self.future.set_result(self.record if self.task.kind is TaskKind.EXECUTABLE else result)

    def fail(
        self,
        error: str,
        when: float | None = None,
        exit_code: int | None = None,
        traceback: str | None = None,
        exception: BaseException | None = None,
        final: bool = False,
    ) -> bool:
        """Record a failed attempt. True if the retry budget allows another attempt (the caller requeues).

        ``final``: no retry whatever the budget, for failures that another attempt cannot cure
        (arguments that cannot be sent, a backend that is gone).
        """
        record = self.record
        record.exit_code = exit_code
        record.error = error
        record.traceback = traceback
        if not final and record.attempts <= self.task.retries:
            record.state = TaskState.PENDING
            record.finished = time.time() if when is None else when
            return True
        self._finalize(TaskState.FAILED, when, error=error)
        failure = TaskFailed(record)
        if exception is not None:
            failure.__cause__ = exception
        self.future.set_exception(failure)
        return False

    def lost(self, reason: str, when: float | None = None) -> None:
        """The task's node was lost while it ran: back to PENDING without spending a retry (the caller requeues
        it; another node runs it). ``error`` keeps the reason, so the record shows it even once DONE."""
        record = self.record
        record.attempts -= 1
        record.error = reason
        record.state = TaskState.PENDING
        record.finished = time.time() if when is None else when

    def cancel(self, reason: str = "canceled", when: float | None = None) -> None:
        self._finalize(TaskState.CANCELED, when, error=reason)
        future = self.future
        if future.cancel():
            # cancel() alone leaves the future invisible to concurrent.futures.wait(): notify its waiters
            future.set_running_or_notify_cancel()
        elif not future.done():
            # a running future refuses cancel(); its result() raises CancelledError all the same
            future.set_exception(CancelledError(f"task {self.record.name or self.record.uid!r}: {reason}"))

    def _finalize(self, state: TaskState, when: float | None, error: str | None = None) -> None:
        record = self.record
        record.state = state
        record.finished = time.time() if when is None else when
        if error is not None:
            record.error = error


class Backend(abc.ABC):
    """A way of running tasks on the slots the pilot lends it.

    Subclasses set ``name`` and ``kinds`` and implement ``start``, ``submit``
    and ``shutdown``. ``submit`` must never block on task execution: the pilot
    hands thousands of submissions at once. Every task is placed through
    ``self.slots`` (a :class:`~..slots.SlotView` of the pilot's one pool), so
    no two runtimes ever hold the same core.
    """

    name: ClassVar[str]
    kinds: ClassVar[frozenset[TaskKind]]
    # whether it starts tasks on other hosts of a real multi-node allocation (srun, Flux, Dragon); one that
    # does not (local) is lent only the node of the host the pilot runs on
    spans_nodes: ClassVar[bool] = False

    def __init__(self, slots: SlotView, **options: Any) -> None:
        self.slots = slots
        # typed (runtime/backends/options.py): an unknown key or a bad value is refused here, named
        self.opts: Any = parse_options(self.name, options)
        # the kinds the pilot routes here (set by the pilot), so a backend starts only what it needs
        self.serves: frozenset[TaskKind] = self.kinds
        # function tasks already found runnable, by (function, cores, gpus): thousands of tasks
        # calling one function are checked once, not once each
        self._checked_functions: set[tuple[str, int, int]] = set()
        # the pilot's hand for a node lost as the backend found it (e.g. srun's "Node failure" under a step),
        # before the pilot's node watch: ``(node name, what was seen)``; set by the pilot
        self.on_node_failure: Callable[[str, str], None] | None = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this backend can run here, and if not, why (shown when tests skip)."""
        return True, ""

    def check(self, task: Task) -> None:
        """Reject at submit time what can never run here; raise TaskError naming the task and why."""
        if task.kind is TaskKind.FUNCTION:
            key = (task.function, task.cores, task.gpus)
            if key in self._checked_functions:
                return
        if task.kind not in self.kinds:
            raise TaskError(f"task {task.label}: backend {self.name!r} does not run {task.kind.value} tasks")
        check_fits(task, self.slots, self.name)
        if task.kind is TaskKind.EXECUTABLE:
            check_executable(task)
        else:
            check_function(task)
            self._checked_functions.add((task.function, task.cores, task.gpus))

    @abc.abstractmethod
    def start(self) -> None:
        """Acquire whatever the backend needs (processes, instances); called once before submit."""

    @abc.abstractmethod
    def submit(self, submissions: Sequence[Submission]) -> None:
        """Queue submissions; returns at once."""

    def cancel(self, submission: Submission) -> None:
        """Best effort: end a queued or running task as CANCELED. Default: only queued futures."""
        submission.future.cancel()

    def node_lost(self, node: int, reason: str) -> None:  # noqa: B027 - an optional hook; default: nothing
        """Node ``node`` of the allocation is gone (the pilot has taken its slots out of the pool). A backend
        that can, ends its tasks there at once and runs them again elsewhere; default: they fail as they
        die, and are retried as their retry budget allows."""

    @abc.abstractmethod
    def shutdown(self, cancel_pending: bool = False) -> None:
        """Finish (or cancel) everything, then release every process and resource the backend owns."""


_which_cache: dict[tuple[str, str, str], str | None] = {}


def find_program(program: str, env: dict[str, str] | None = None, cwd: str | None = None) -> str | None:
    """Where ``program`` resolves with the task's PATH and cwd (cached), or None."""
    path = (env or {}).get("PATH", os.environ.get("PATH", ""))
    key = (program, path, cwd or "")
    if key not in _which_cache:
        if os.sep in program:
            full = program if os.path.isabs(program) else os.path.join(cwd or os.getcwd(), program)
            _which_cache[key] = full if os.path.isfile(full) and os.access(full, os.X_OK) else None
        else:
            _which_cache[key] = shutil.which(program, path=path)
    return _which_cache[key]


def check_fits(task: Task, slots: SlotView, backend: str) -> None:
    """A task that could never be placed: more cores or GPUs than the backend may use, or one process
    wider than a node (only an MPI task's ranks may spread over nodes)."""
    broker = slots.broker
    if task.cores > slots.n_cores:
        raise TaskError(
            f"task {task.label} asks for {task.cores} cores ({task.ranks} ranks x {task.cores_per_rank} "
            f"cores per rank) but backend {backend!r} has {slots.n_cores}"
        )
    if task.gpus > slots.n_gpus:
        raise TaskError(
            f"task {task.label} asks for {task.gpus} GPUs ({task.ranks} ranks x {task.gpus_per_rank} "
            f"GPUs per rank) but backend {backend!r} has {slots.n_gpus}"
        )
    per_process = task.cores_per_rank if task.mpi else task.cores
    per_process_gpus = task.gpus_per_rank if task.mpi else task.gpus
    if per_process > broker.cores_per_node or per_process_gpus > broker.gpus_per_node:
        raise TaskError(
            f"task {task.label}: one process needs {per_process} cores and {per_process_gpus} GPUs but a node "
            f"has {broker.cores_per_node} and {broker.gpus_per_node}"
            + ("" if task.mpi else " (not MPI: the task is one process; set mpi=True to spread ranks over nodes)")
        )


def check_executable(task: Task) -> None:
    if task.cwd is not None and not os.path.isdir(task.cwd):
        raise TaskError(f"task {task.label}: working directory {task.cwd!r} does not exist")
    program = task.argv[0]
    if find_program(program, dict(task.env), task.cwd) is None:
        raise TaskError(f"task {task.label}: executable {program!r} not found (not on PATH and not an executable file)")


def check_function(task: Task) -> None:
    """The module must be findable; if it is already imported, the attribute must exist too.

    Importing a module only to check it could cost seconds (torch), so an
    unimported module is located with ``find_spec`` instead.
    """
    module_name, _, qualname = task.function.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError) as exc:
            spec = None
            reason = str(exc)
        else:
            reason = "no such module"
        if spec is None:
            raise TaskError(
                f"task {task.label}: function {task.function!r} is not importable: module {module_name!r}: {reason}"
            )
        return
    obj: Any = module
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise TaskError(
                f"task {task.label}: function {task.function!r} is not importable: {module_name!r} has no {qualname!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise TaskError(f"task {task.label}: {task.function!r} is not callable")


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group (a task and its children); a group already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


STDERR_TAIL_BYTES = 2048


def file_tail(path: str | None, nbytes: int = STDERR_TAIL_BYTES, start: int = 0) -> str:
    """The last ``nbytes`` of a task's stderr file after byte ``start`` (what one attempt wrote to a file that
    every attempt appends to); '' if there is none. Read only when a task ended oddly."""
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(start, handle.tell() - nbytes))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


def with_stderr(reason: str, tail: str) -> str:
    """A failure reason ending with the last line of the task's stderr, which usually says what went wrong."""
    lines = tail.strip().splitlines()
    return f"{reason}; stderr: {lines[-1][-300:]}" if lines else reason


def exit_description(code: int | None) -> str:
    """How a process ended, in words: ``exit code 3``, ``killed by signal SIGKILL``."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        return f"killed by signal {signal_name(-code)}"
    return f"exit code {code}"
