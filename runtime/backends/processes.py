"""Tasks as child processes on core slots, started through a launcher.

A :class:`ProcessRunner` places a task on free slots, asks its
:class:`~.launchers.Launcher` for the command line (the task's own argv,
``mpiexec -n N argv``, ``srun ... argv``, or a ``python -m`` process for a
function task) and starts it in its own process group, so that a timeout or a
cancel reaches everything the task started. The dispatcher's epoll loop
watches a pidfd per child (its exit) and the child's stderr pipe (a bounded
tail, for the failure reason); nothing polls.
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import subprocess
import time

from .. import reaper
from ..errors import BackendBroken
from ..gpus import launch_env, node_table
from ..slots import task_processes
from ..task import TaskKind
from .base import STDERR_TAIL_BYTES, Submission, file_tail, signal_group, signal_name, with_stderr
from .launchers import Launcher, LaunchError
from .loop import Dispatcher

KILL_GRACE_S = 2.0


class _Child:
    """A running task process."""

    __slots__ = (
        "sub",
        "popen",
        "pidfd",
        "stderr_fd",
        "stderr_tail",
        "stderr_start",
        "cores",
        "gpus",
        "timed_out",
        "canceled",
        "done",
        "lost",
    )

    def __init__(self, sub: Submission, popen: subprocess.Popen, cores: tuple[int, ...], gpus: tuple[int, ...]) -> None:
        self.sub = sub
        self.popen = popen
        self.pidfd = -1
        self.stderr_fd = -1
        self.stderr_tail = bytearray()
        self.stderr_start = 0  # the size of the task's stderr file before this attempt (attempts append to it)
        self.cores = cores
        self.gpus = gpus
        self.timed_out = False
        self.canceled = False
        self.done = False
        self.lost = ""  # why: its node was lost (it runs again elsewhere, no retry spent)


class ProcessRunner:
    """Child processes on the dispatcher's slots (a :class:`~.loop.Runner`)."""

    def __init__(self, host: Dispatcher, launcher: Launcher, max_running: int | None = None) -> None:
        self.host = host
        self.launcher = launcher
        self.max_running = max_running or 1 << 62
        self.children: dict[str, _Child] = {}
        self._base_env = dict(os.environ)
        self._gpu_table = node_table(host.slots.broker.allocation)
        self._marker = reaper.task_marker()  # starts the reaper before the first task is forked

    # ------------------------------------------------------------ placement (Runner)
    def place(self, sub: Submission) -> bool:
        if len(self.children) >= self.max_running:
            return False
        task = sub.task
        placement = self.host.slots.place(task_processes(task.ranks, task.cores_per_rank, task.gpus_per_rank, task.mpi))
        if placement is None:
            return False
        cores, gpus = placement.cores, placement.gpus
        if sub.begin(cores, gpus, node=placement.hosts):
            self._launch(sub, cores, gpus)
        else:
            self.host.slots.give_back(cores, gpus)
        return True

    def can_use_slots(self) -> bool:
        return len(self.children) < self.max_running

    def has_room(self) -> bool:
        return bool(self.host.slots.free_cores) and len(self.children) < self.max_running

    def flush(self) -> None:
        pass

    def _launch(self, sub: Submission, cores: tuple[int, ...], gpus: tuple[int, ...]) -> None:
        task = sub.task
        try:
            argv = self.launcher.command(task, cores, gpus)
        except LaunchError as exc:  # the command cannot be built: another attempt cannot build it either
            self._failed_to_start(sub, cores, gpus, f"could not launch: {exc}", final=True)
            return
        env = self._base_env.copy()
        env.update(self.launcher.environment(task))
        env.update(task.env)
        env["OMP_NUM_THREADS"] = str(task.cores_per_rank)
        env["IMPECCABLE_TASK_UID"] = task.uid
        env.update(launch_env(gpus, self.host.slots.broker.gpus_per_node, self._gpu_table))
        stdout = open(task.stdout, "ab") if task.stdout else subprocess.DEVNULL
        stderr = open(task.stderr, "ab") if task.stderr else subprocess.PIPE
        stderr_start = stderr.tell() if task.stderr else 0  # type: ignore[union-attr]
        try:
            # the marker goes with it from the fork on: if the pilot dies before watch() below, even before
            # the exec, the reaper still finds this process by it (see runtime.reaper)
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=task.cwd,
                env=env,
                start_new_session=True,
                pass_fds=(self._marker,),
            )
        except OSError as exc:
            self._failed_to_start(sub, cores, gpus, f"could not start {argv[0]!r}: {exc}")
            return
        finally:
            if task.stdout:
                stdout.close()  # type: ignore[union-attr]
            if task.stderr:
                stderr.close()  # type: ignore[union-attr]
        reaper.watch(popen.pid)  # its process group dies with the pilot, even a pilot killed by SIGKILL
        sub.started()
        child = _Child(sub, popen, cores, gpus)
        child.stderr_start = stderr_start
        self.children[task.uid] = child
        child.pidfd = os.pidfd_open(popen.pid)
        selector = self.host.selector
        selector.register(child.pidfd, selectors.EVENT_READ, lambda fd, c=child: self._on_exit(c))
        if popen.stderr is not None:
            child.stderr_fd = popen.stderr.fileno()
            os.set_blocking(child.stderr_fd, False)
            selector.register(child.stderr_fd, selectors.EVENT_READ, lambda fd, c=child: self._read_stderr(c))
        if task.timeout_s:
            self.host.arm(time.time() + task.timeout_s, functools.partial(self._timed_out, child))

    def _failed_to_start(
        self, sub: Submission, cores: tuple[int, ...], gpus: tuple[int, ...], reason: str, final: bool = False
    ) -> None:
        self.host.slots.give_back(cores, gpus)
        if sub.fail(reason, final=final):
            self.host.requeue(sub)

    # ------------------------------------------------------------ events
    def _read_stderr(self, child: _Child) -> None:
        if child.stderr_fd < 0:  # closed by _on_exit earlier in the same round of events
            return
        try:
            chunk = os.read(child.stderr_fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._close_stderr(child)
            return
        tail = child.stderr_tail
        tail += chunk
        if len(tail) > STDERR_TAIL_BYTES:
            del tail[: len(tail) - STDERR_TAIL_BYTES]

    def _close_stderr(self, child: _Child) -> None:
        if child.stderr_fd >= 0:
            self.host.selector.unregister(child.stderr_fd)
            child.popen.stderr.close()  # type: ignore[union-attr]
            child.stderr_fd = -1

    def _on_exit(self, child: _Child) -> None:
        finished = time.time()
        self.host.selector.unregister(child.pidfd)
        os.close(child.pidfd)
        child.done = True
        code = child.popen.wait()
        reaper.forget(child.popen.pid)
        while child.stderr_fd >= 0:  # whatever is left in the pipe, without blocking
            before = len(child.stderr_tail)
            self._read_stderr(child)
            if child.stderr_fd >= 0 and len(child.stderr_tail) == before:
                self._close_stderr(child)
        self._ended(child, code, finished)

    def _ended(self, child: _Child, code: int, finished: float) -> None:
        """The process is gone: its slots go back, then the task settles."""
        del self.children[child.sub.task.uid]
        if code == 0 and self.launcher.reports_node_failures and not (child.lost or child.canceled or child.timed_out):
            failed = self.launcher.node_failure(self._attempt_stderr(child))
            if failed is not None and self._ran_on(child, failed):  # before its slots go back: the node leaves first
                child.lost = f"node {failed} lost (srun: node failure under the running step); run again elsewhere"
                self._node_failed(failed, child.lost)
        self.host.slots.give_back(child.cores, child.gpus)
        self._settle(child, code, finished)

    def _attempt_stderr(self, child: _Child) -> str:
        """What this attempt wrote to stderr: the pipe's tail, or the task's file after the attempt began."""
        return child.stderr_tail.decode(errors="replace") or file_tail(child.sub.task.stderr, start=child.stderr_start)

    def _ran_on(self, child: _Child, node: str) -> bool:
        broker = self.host.slots.broker
        nodes = broker.allocation.nodes
        return node in nodes and nodes.index(node) in {broker.node_of_core(c) for c in child.cores}

    def _node_failed(self, node: str, reason: str) -> None:
        """The launcher saw ``node`` fail (srun exits 0 then), possibly before the pilot's node watch: the same
        steps as a node loss the pilot reports, at once, so no retry is launched the old way or placed there."""
        broker = self.host.slots.broker
        index = broker.allocation.nodes.index(node)
        broker.mark_down(index)
        self.node_lost(index, reason)
        report = self.host.backend.on_node_failure
        if report is not None:
            report(node, "failed (srun: node failure)")

    def _settle(self, child: _Child, code: int, finished: float) -> None:
        """The task's final state (or its retry) from how its process ended."""
        sub = child.sub
        # a function run as a process leaves its result in a file; read (and remove) it in every case
        outcome = self.launcher.outcome(sub.task, code) if sub.task.kind is TaskKind.FUNCTION else None
        if child.canceled and not (outcome is not None and outcome[0]):
            sub.cancel("canceled while running (killed)", when=finished)
            return  # a function that had returned before the kill keeps its result (below)
        if child.lost:
            sub.lost(child.lost, when=finished)
            self.host.requeue(sub, front=True)
            return
        if outcome is not None and not child.timed_out:
            ok, value, started = outcome
            if started is not None:
                sub.started(started)
            if ok:
                sub.complete(value, when=finished, exit_code=code)
                return
            exception, text, trace = value
            if sub.fail(text, when=finished, exit_code=code, traceback=trace, exception=exception):
                self.host.requeue(sub)
            return
        if code == 0 and not child.timed_out:
            sub.complete(when=finished, exit_code=0)
            return
        if child.timed_out:
            reason = f"timed out after {sub.task.timeout_s:g} s (killed)"
        elif code < 0:
            reason = f"killed by signal {signal_name(-code)}"
        else:
            reason = f"exit code {code}"
        tail = self._attempt_stderr(child).strip()
        if sub.fail(with_stderr(reason, tail), when=finished, exit_code=code, traceback=tail or None):
            self.host.requeue(sub)

    # ------------------------------------------------------------ timeouts, cancel, failure
    def _timed_out(self, child: _Child) -> None:
        if child.done:
            return
        child.timed_out = True
        signal_group(child.popen.pid, signal.SIGTERM)
        self.host.arm(
            time.time() + KILL_GRACE_S, lambda: None if child.done else signal_group(child.popen.pid, signal.SIGKILL)
        )

    def cancel(self, uid: str) -> bool:
        child = self.children.get(uid)
        if child is None:
            return False
        child.canceled = True
        self._kill(child)
        return True

    def _kill(self, child: _Child) -> None:
        signal_group(child.popen.pid, signal.SIGKILL)  # its exit is reported through its pidfd

    def node_lost(self, node: int, reason: str) -> None:
        """Kill the tasks that run on ``node`` (their launcher: srun ends its step there); they run again."""
        self.launcher.node_lost(node)
        broker = self.host.slots.broker
        for child in self.children.values():
            if not child.done and any(broker.node_of_core(c) == node for c in child.cores):
                child.lost = reason
                self._kill(child)

    def cancel_everything(self) -> None:
        for uid in list(self.children):
            self.cancel(uid)

    def abandon(self, reason: str) -> None:
        for child in self.children.values():
            signal_group(child.popen.pid, signal.SIGKILL)
            if not child.sub.future.done():
                child.sub.fail(reason, final=True, exception=BackendBroken(reason))

    def drained(self) -> bool:
        return not self.children

    def after_events(self) -> None:
        pass

    def on_drained(self) -> None:
        pass

    def teardown(self) -> None:
        pass
