"""The embedded default backend: runs everywhere, needs nothing installed.

Executables are child processes placed on free core slots (a 4-core task
takes 4 slots, an MPI task is launched with ``mpiexec -n RANKS``, MPICH's forker
where there is one, and told to keep its traffic on loopback). Functions
run in a pool of persistent worker processes. One dispatcher thread owns all
state and sleeps in ``epoll`` on: a wake-up eventfd (new submissions), one
pidfd per running child (exit), the children's stderr pipes, and the
workers' result pipes; its only timer is the nearest task deadline. So there
is no polling, no sleep, and no per-task file I/O on the hot path.

Function workers *lease* core slots: a worker holding a lease on one core
may be sent several short calls at once (pipelining hides the round trip),
and gives the core back when its queue drains. Calls run one at a time in a
worker, so the records never show more busy cores than the share has.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import pickle
import selectors
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, ClassVar

from .. import reaper
from ..framing import FramedPipe
from ..resources import ResourceShare
from ..task import Task, TaskKind
from .base import STDERR_TAIL_BYTES, Submission, file_tail, find_program, with_stderr
from .loop import CallPipelining, Dispatcher, LeasedWorker, ThreadedBackend
from .base import signal_group as _signal_group, signal_name as _signal_name, exit_description as _exit_description

# a pending task is looked at most this far down the queue when the head does not fit (backfill window)
BACKFILL_WINDOW = 256
KILL_GRACE_S = 2.0


class LaunchError(Exception):
    """A task whose command cannot be built (e.g. its arguments cannot be written); the message says why."""


class LocalBackend(ThreadedBackend):
    """Subprocesses and a persistent worker pool on the cores of this machine.

    Options: ``function_workers`` (default: one per core of the share),
    ``mpiexec`` (default: :func:`default_mpiexec`), ``pipeline_s`` (how much
    estimated work to queue in a busy worker, default 2 ms), ``max_pipeline``,
    ``max_running`` (most child processes at once, default: no cap but the cores).

    Subclasses that launch through another program (``srun``) reuse this
    dispatcher through three hooks: :meth:`command_for` (the argv of a task),
    ``functions_as_processes`` (function tasks run as one process each, built by
    ``command_for``, instead of in the worker pool) and :meth:`process_outcome`
    (the result of such a process).
    """

    name = "local"
    kinds = frozenset({TaskKind.EXECUTABLE, TaskKind.FUNCTION})
    functions_as_processes: ClassVar[bool] = False

    def __init__(self, share: ResourceShare, **options: Any) -> None:
        super().__init__(share, **options)
        self._max_workers = int(options.get("function_workers") or share.n_cores)
        self._mpiexec = options.get("mpiexec") or default_mpiexec()
        self._pipeline_s = float(options.get("pipeline_s", 0.002))
        self._max_pipeline = int(options.get("max_pipeline", 64))
        max_running = options.get("max_running")
        if max_running is not None and int(max_running) < 1:
            raise ValueError(f"backend {self.name!r}: max_running must be at least 1, got {max_running!r}")
        self._max_running = int(max_running) if max_running is not None else sys.maxsize

    # ------------------------------------------------------------------ API
    def check(self, task: Task) -> None:
        super().check(task)
        if task.kind is TaskKind.EXECUTABLE and task.mpi and find_program(self._mpiexec) is None:
            from ..task import TaskError

            raise TaskError(
                f"task {task.label} is an MPI task but {self._mpiexec!r} was not found: "
                "install an MPI (e.g. `pip install mpich`) or set the local backend's mpiexec option"
            )

    def start(self) -> None:
        self._loop = _Dispatcher(self)
        if TaskKind.FUNCTION in self.serves and not self.functions_as_processes:
            try:
                self._loop.start_workers(self._max_workers)
                self._loop.wait_ready(float(self.options.get("worker_start_timeout_s", 120)))
            except BaseException:
                self._loop._teardown()
                raise
        self._run_dispatcher(self._loop)

    # ------------------------------------------------------------------ hooks (dispatcher thread)
    def command_for(self, task: Task, cores: tuple[int, ...], gpus: tuple[int, ...]) -> list[str]:
        """The argv that runs ``task`` on these slots; raise :class:`LaunchError` if there is none."""
        if task.mpi:
            return [self._mpiexec, "-n", str(task.ranks), *task.argv]
        return list(task.argv)

    def environment_for(self, task: Task) -> dict[str, str]:
        """Variables set for a task before its own ``env``: an MPI task on this one node talks over loopback."""
        return dict(LOOPBACK_MPI_ENV) if task.mpi else {}

    def process_outcome(self, task: Task, exit_code: int) -> tuple[bool, Any, float | None] | None:
        """For ``functions_as_processes``: after a function's process exited, ``(ok, value, started)``.

        ``value`` is the return value, or ``(exception or None, message, traceback)`` when not ok;
        ``started`` is when the call began (None: keep the launch time). None means no result
        (e.g. the process was killed): the exit code and stderr tail explain the failure.
        """
        return None


# MPI on one node needs no network: UCX and libfabric (MPICH's ch4 netmods) listen on loopback only.
LOOPBACK_MPI_ENV = {"UCX_NET_DEVICES": "lo", "FI_TCP_IFACE": "lo", "FI_SOCKETS_IFACE": "lo"}


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


def _main_module_hint() -> str:
    """Why workers commonly die at birth: multiprocessing re-imports the main script in them."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path and not os.path.exists(path):
        return (f"; the main script {path!r} is not a file that workers can re-import "
                "(e.g. a script piped on stdin): save it to a file and run that")
    return ""


class _Child:
    """A running executable."""

    __slots__ = ("sub", "popen", "pidfd", "stderr_fd", "stderr_tail", "cores", "gpus",
                 "timed_out", "canceled", "done")

    def __init__(self, sub: Submission, popen: subprocess.Popen, cores: tuple[int, ...], gpus: tuple[int, ...]) -> None:
        self.sub = sub
        self.popen = popen
        self.pidfd = -1
        self.stderr_fd = -1
        self.stderr_tail = bytearray()
        self.cores = cores
        self.gpus = gpus
        self.timed_out = False
        self.canceled = False
        self.done = False


class _Worker(LeasedWorker):
    """A persistent function worker process; ``outstanding`` holds the Submissions sent to it, in order."""

    __slots__ = ("process", "pipe", "ready")

    def __init__(self, process: Any, pipe: FramedPipe) -> None:
        super().__init__()
        self.process = process
        self.pipe = pipe
        self.ready = False  # its "ready" message has arrived


class _Dispatcher(Dispatcher, CallPipelining):
    """All scheduling state; lives in the backend's single thread."""

    backend: LocalBackend

    def __init__(self, backend: LocalBackend) -> None:
        super().__init__(backend)
        self.children: dict[str, _Child] = {}
        self.workers: list[_Worker] = []
        self.idle_workers: list[_Worker] = []
        self._base_env = dict(os.environ)
        self._mp = multiprocessing.get_context("forkserver")
        self._mp.set_forkserver_preload(["impeccable.runtime.worker"])
        reaper.remove_on_death(multiprocessing.util.get_temp_dir())  # the forkserver's pymp-* folder
        self._sent: list[_Worker] = []
        self.processes = backend.functions_as_processes
        self.max_children = backend._max_running

    def _abandon(self, reason: str) -> None:
        subs = list(self.pending) + [c.sub for c in self.children.values()]
        subs += [s for w in self.workers for s in w.outstanding]
        for child in self.children.values():
            _signal_group(child.popen.pid, signal.SIGKILL)
        for sub in subs:
            if not sub.future.done():
                sub.fail(reason, final=True)

    def _drained(self) -> bool:
        return not self.pending and not self.children and not any(w.outstanding for w in self.workers)

    # ------------------------------------------------------------ scheduling
    def _schedule(self) -> None:
        pending = self.pending
        if not pending:
            return
        skipped: list[Submission] = []
        scanned = 0
        while pending and scanned < BACKFILL_WINDOW:
            sub = pending.popleft()
            scanned += 1
            if sub.task.kind is TaskKind.EXECUTABLE or self.processes:
                placed = self._place_child(sub)
            else:
                placed = self._place_call(sub)
            if not placed:
                skipped.append(sub)
                if self.cores.free == 0 and not self._worker_room():
                    break
                if self.processes and len(self.children) >= self.max_children:
                    break
        if skipped:
            pending.extendleft(reversed(skipped))

    # ------------------------------------------------------------ executables
    def _place_child(self, sub: Submission) -> bool:
        task = sub.task
        if len(self.children) >= self.max_children:
            return False
        slots = self._take_slots(task.cores, task.gpus)
        if slots is None:
            return False
        cores, gpus = slots
        if not sub.begin(cores, gpus):
            self._release(cores, gpus)
            return True
        self._launch(sub, cores, gpus)
        return True

    def _launch(self, sub: Submission, cores: tuple[int, ...], gpus: tuple[int, ...]) -> None:
        task = sub.task
        try:
            argv = self.backend.command_for(task, cores, gpus)
        except LaunchError as exc:
            self._release(cores, gpus)
            if sub.fail(f"could not launch: {exc}"):
                self.pending.append(sub)
            return
        env = self._base_env.copy()
        env.update(self.backend.environment_for(task))
        env.update(task.env)
        env["OMP_NUM_THREADS"] = str(task.cores_per_rank)
        env["IMPECCABLE_TASK_UID"] = task.uid
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        stdout = open(task.stdout, "ab") if task.stdout else subprocess.DEVNULL
        stderr = open(task.stderr, "ab") if task.stderr else subprocess.PIPE
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                     cwd=task.cwd, env=env, start_new_session=True)
        except OSError as exc:
            self._release(cores, gpus)
            if sub.fail(f"could not start {argv[0]!r}: {exc}"):
                self.pending.append(sub)
            return
        finally:
            if task.stdout:
                stdout.close()  # type: ignore[union-attr]
            if task.stderr:
                stderr.close()  # type: ignore[union-attr]
        reaper.watch(popen.pid)  # its process group dies with the pilot, even a pilot killed by SIGKILL
        sub.started()
        child = _Child(sub, popen, cores, gpus)
        self.children[task.uid] = child
        child.pidfd = os.pidfd_open(popen.pid)
        self.selector.register(child.pidfd, selectors.EVENT_READ, lambda fd, c=child: self._on_exit(c))
        if popen.stderr is not None:
            child.stderr_fd = popen.stderr.fileno()
            os.set_blocking(child.stderr_fd, False)
            self.selector.register(child.stderr_fd, selectors.EVENT_READ, lambda fd, c=child: self._read_stderr(c))
        if task.timeout_s:
            self._arm(time.time() + task.timeout_s, "timeout", child)

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
            self.selector.unregister(child.stderr_fd)
            child.popen.stderr.close()  # type: ignore[union-attr]
            child.stderr_fd = -1

    def _on_exit(self, child: _Child) -> None:
        finished = time.time()
        self.selector.unregister(child.pidfd)
        os.close(child.pidfd)
        child.done = True
        code = child.popen.wait()
        reaper.forget(child.popen.pid)
        while child.stderr_fd >= 0:  # whatever is left in the pipe, without blocking
            before = len(child.stderr_tail)
            self._read_stderr(child)
            if child.stderr_fd >= 0 and len(child.stderr_tail) == before:
                self._close_stderr(child)
        del self.children[child.sub.task.uid]
        self._release(child.cores, child.gpus)
        sub = child.sub
        outcome = None
        if self.processes and sub.task.kind is TaskKind.FUNCTION:
            outcome = self.backend.process_outcome(sub.task, code)
        if child.canceled:
            sub.cancel("canceled while running (killed)", when=finished)
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
                self.pending.append(sub)
            return
        if code == 0 and not child.timed_out:
            sub.complete(when=finished, exit_code=0)
            return
        if child.timed_out:
            reason = f"timed out after {sub.task.timeout_s:g} s (killed)"
        elif code < 0:
            reason = f"killed by signal {_signal_name(-code)}"
        else:
            reason = f"exit code {code}"
        tail = child.stderr_tail.decode(errors="replace").strip() or file_tail(sub.task.stderr)
        if sub.fail(with_stderr(reason, tail), when=finished, exit_code=code, traceback=tail or None):
            self.pending.append(sub)

    # ------------------------------------------------------------ functions
    def start_workers(self, n: int) -> None:
        for _ in range(n):
            self._new_worker()

    def _new_worker(self) -> _Worker:
        from .. import worker as worker_module

        parent, child = self._mp.Pipe(duplex=True)
        process = self._mp.Process(target=worker_module.main, args=(child,), daemon=True, name="impeccable-worker")
        process.start()
        child.close()
        pipe = FramedPipe(os.dup(parent.fileno()))
        parent.close()
        worker = _Worker(process, pipe)
        self.workers.append(worker)
        self.idle_workers.append(worker)
        self.selector.register(pipe.fd, selectors.EVENT_READ, lambda fd, w=worker: self._on_worker_event(w))
        return worker

    def wait_ready(self, timeout_s: float) -> None:
        """Block until every worker has said it is ready, so that the first calls do not wait for
        interpreters to start (that is start-up, not task time). Raise if one dies first."""
        from .. import worker as worker_module

        deadline = time.time() + timeout_s
        waiting = {w.pipe.fd: w for w in self.workers if not w.ready}
        with selectors.EpollSelector() as selector:
            for fd in waiting:
                selector.register(fd, selectors.EVENT_READ)
            while waiting:
                left = deadline - time.time()
                events = selector.select(left) if left > 0 else []
                if not events:
                    raise RuntimeError(f"{len(waiting)} function worker(s) not ready after {timeout_s:g} s")
                for key, _ in events:
                    worker = waiting[key.fd]
                    frames = worker.pipe.read_frames()
                    if frames and frames[0] == worker_module.READY:
                        worker.ready = True
                    elif worker.pipe.eof:
                        worker.process.join(timeout=5)
                        raise RuntimeError(
                            f"a function worker exited before it was ready "
                            f"({_exit_description(worker.process.exitcode)}); its error output is above"
                            + _main_module_hint())
                    if worker.ready:
                        selector.unregister(key.fd)
                        del waiting[key.fd]

    # CallPipelining hooks
    def _all_workers(self) -> list[_Worker]:
        return self.workers

    def _could_get_worker(self) -> bool:
        return bool(self.idle_workers) or len(self.workers) < self.backend._max_workers

    def _get_idle_worker(self) -> _Worker | None:
        if self.idle_workers:
            return self.idle_workers.pop()
        if len(self.workers) < self.backend._max_workers:
            worker = self._new_worker()
            self.idle_workers.remove(worker)
            return worker
        return None

    def _pipeline_limits(self) -> tuple[float, int]:
        return self.backend._pipeline_s, self.backend._max_pipeline

    def _enqueue_call(self, worker: _Worker, sub: Submission, now: float) -> None:
        task = sub.task
        env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, worker.gpus))} if worker.gpus else None
        worker.outstanding.append(sub)
        worker.outbox.append((task.uid, task.function, task.args, dict(task.kwargs) if task.kwargs else {}, env))
        if len(worker.outbox) == 1:
            self._sent.append(worker)
        if len(worker.outstanding) == 1:
            self._head_started(worker, now)

    def _flush(self) -> None:
        for worker in self._sent:
            if worker.alive and worker.outbox:
                try:
                    data = pickle.dumps(worker.outbox, protocol=pickle.HIGHEST_PROTOCOL)
                except (pickle.PicklingError, TypeError, AttributeError):
                    self._send_one_by_one(worker)
                else:
                    self._write(worker, data)
            worker.outbox = []
        self._sent.clear()

    def _write(self, worker: _Worker, data: bytes) -> None:
        """Send without blocking; what the pipe cannot take now leaves when it becomes writable."""
        had_pending = worker.pipe.pending_output
        if not worker.pipe.write(data) and not had_pending:
            self.selector.modify(worker.pipe.fd, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                 lambda fd, w=worker: self._on_worker_event(w))

    def _send_one_by_one(self, worker: _Worker) -> None:
        """A batch whose arguments cannot be pickled: send the calls one by one, fail the bad ones."""
        for item in worker.outbox:
            try:
                data = pickle.dumps([item], protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError) as item_exc:
                sub = next(s for s in worker.outstanding if s.task.uid == item[0])
                worker.outstanding.remove(sub)
                sub.fail(f"arguments cannot be sent to a worker: {type(item_exc).__name__}: {item_exc}", final=True)
            else:
                self._write(worker, data)
        if not worker.outstanding:
            self._idle(worker)
            self._come_round_again()

    def _on_worker_event(self, worker: _Worker) -> None:
        """Results (all that are waiting, in order), a writable pipe, or the worker's death."""
        pipe = worker.pipe
        if not worker.alive:
            return
        if pipe.pending_output and pipe.flush():
            self.selector.modify(pipe.fd, selectors.EVENT_READ, lambda fd, w=worker: self._on_worker_event(w))
        for data in pipe.read_frames():
            if not worker.ready:
                worker.ready = True  # the first message is the worker's hello
                continue
            self._on_result(worker, data)
        if pipe.eof:
            self._worker_died(worker)

    def _on_result(self, worker: _Worker, data: bytes) -> None:
        if not worker.outstanding:
            return  # a queued call canceled at shutdown ran before its worker was killed: already final
        sub = worker.outstanding.popleft()
        try:
            token, ok, payload, started, finished = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - e.g. a result class the pilot cannot import
            token, ok, started, finished = sub.task.uid, False, time.time(), time.time()
            payload = (None, f"result cannot be unpickled in the pilot: {exc}", None)
        sub.started(started)
        self._call_finished(started, finished)
        if ok:
            sub.complete(payload, when=finished)
        else:
            exception, text, trace = payload
            if sub.fail(text, when=finished, traceback=trace, exception=exception):
                self.pending.append(sub)
        if worker.outstanding:
            self._head_started(worker, finished)
        else:
            self._idle(worker)

    def _head_started(self, worker: _Worker, when: float) -> None:
        timeout = worker.outstanding[0].task.timeout_s
        if timeout:
            self._arm(when + timeout, "call-timeout", (worker, worker.outstanding[0]))

    def _worker_died(self, worker: _Worker, reason: str | None = None) -> None:
        if not worker.alive:
            return
        worker.alive = False
        self.selector.unregister(worker.pipe.fd)
        worker.pipe.close()
        worker.process.join(timeout=5)
        if worker in self.idle_workers:
            self.idle_workers.remove(worker)
        self.workers.remove(worker)
        if reason is None:
            reason = worker.kill_reason or f"worker process died ({_exit_description(worker.process.exitcode)})"
        outstanding = list(worker.outstanding)
        worker.outstanding.clear()
        self._release_worker(worker)
        if outstanding:
            culprit, rest = outstanding[0], outstanding[1:]
            for sub in rest:  # never started: they go back to the queue without spending a retry
                sub.record.attempts -= 1
            self.pending.extendleft(reversed(rest))
            if worker.kill_reason == "canceled":
                culprit.cancel("canceled while running (worker killed)")
            elif culprit.fail(reason):
                self.pending.append(culprit)

    # ------------------------------------------------------------ deadlines, cancel, stop
    def _deadline(self, what: str, target: Any, now: float) -> None:
        if what == "timeout" and not target.done:
            target.timed_out = True
            _signal_group(target.popen.pid, signal.SIGTERM)
            self._arm(now + KILL_GRACE_S, "kill", target)
        elif what == "kill" and not target.done:
            _signal_group(target.popen.pid, signal.SIGKILL)
        elif what == "call-timeout":
            worker, sub = target
            if worker.alive and worker.outstanding and worker.outstanding[0] is sub:
                worker.kill_reason = f"timed out after {sub.task.timeout_s:g} s (worker killed and replaced)"
                worker.process.kill()  # the EOF on its pipe reports the death

    def _cancel(self, uid: str) -> None:
        child = self.children.get(uid)
        if child is not None:
            child.canceled = True
            _signal_group(child.popen.pid, signal.SIGKILL)
            return
        if self._cancel_pending(uid):
            return
        for worker in self.workers:
            # a call still queued behind another in a worker has been handed over: it will run
            if worker.outstanding and worker.outstanding[0].task.uid == uid:
                worker.kill_reason = "canceled"
                worker.process.kill()

    def _cancel_everything(self) -> None:
        while self.pending:
            self.pending.popleft().cancel("canceled at shutdown")
        for child in list(self.children.values()):
            child.canceled = True
            _signal_group(child.popen.pid, signal.SIGKILL)
        for worker in list(self.workers):
            if worker.outstanding:
                head, *queued = worker.outstanding
                worker.outstanding.clear()
                worker.outstanding.append(head)
                for sub in queued:
                    sub.cancel("canceled at shutdown")
                worker.kill_reason = "canceled"
                worker.process.kill()

    def _release(self, cores: tuple[int, ...], gpus: tuple[int, ...]) -> None:
        """Give a child's slots back."""
        self.cores.give_back(cores)
        self.gpus.give_back(gpus)

    def _teardown(self) -> None:
        for worker in self.workers:
            worker.pipe.write(pickle.dumps(None))
            if worker.pipe.pending_output:  # a worker still busy with a full pipe is killed below
                worker.process.kill()
        deadline = time.time() + 5
        for worker in self.workers:
            worker.process.join(timeout=max(0.0, deadline - time.time()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.pipe.close()
        self.workers.clear()
        self.selector.close()


