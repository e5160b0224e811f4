"""The embedded default backend: runs everywhere, needs nothing installed.

Executables are child processes placed on free core slots (a 4-core task
takes 4 slots; an MPI task is launched with ``mpiexec -n RANKS``, MPICH's
forker where there is one, and told to keep its traffic on loopback).
Functions run in a pool of persistent worker processes, each at the end of a
private pipe. One dispatcher thread owns all state and sleeps in ``epoll``
on: a wake-up eventfd (new submissions), one pidfd per running child (exit),
the children's stderr pipes, and the workers' result pipes; its only timer is
the nearest task deadline. So there is no polling, no sleep, and no per-task
file I/O on the hot path. Placement and pipelining of calls are
:class:`~.pool.FunctionPool`'s; this module only moves bytes to and from
worker processes.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import pickle
import selectors
import sys
import time
from typing import Any

from .. import reaper
from ..calls import WorkerSetup
from ..errors import BackendUnavailable
from ..framing import FramedPipe
from ..gpus import node_table, worker_env
from ..slots import SlotView
from ..task import Task, TaskKind
from .base import exit_description
from .launchers import LocalLauncher
from .loop import Dispatcher, ThreadedBackend
from .options import LocalOptions
from .pool import FunctionPool, PoolWorker
from .processes import ProcessRunner


class LocalBackend(ThreadedBackend):
    """Subprocesses and a persistent worker pool on the cores of this machine.

    Options: ``function_workers`` (default: one per core it may use; an idle one holds none),
    ``mpiexec`` (default: :func:`~.launchers.default_mpiexec`), ``pipeline_s``
    (how much estimated work to queue in a busy worker, default 2 ms),
    ``max_pipeline``, ``max_running`` (most child processes at once, default:
    no cap but the cores), ``worker_start_timeout_s`` (default 120), ``preload`` (modules every function
    worker has imported before its first call: imported once, by the forkserver the workers fork from).
    """

    name = "local"
    kinds = frozenset({TaskKind.EXECUTABLE, TaskKind.FUNCTION})
    opts: LocalOptions

    def __init__(self, slots: SlotView, **options: Any) -> None:
        super().__init__(slots, **options)
        self.launcher = LocalLauncher(self.opts.mpiexec)
        self._max_workers = self.opts.function_workers or slots.n_cores

    def check(self, task: Task) -> None:
        super().check(task)
        self.launcher.check(task)

    def start(self) -> None:
        loop = Dispatcher(self)
        loop.serve([TaskKind.EXECUTABLE], ProcessRunner(loop, self.launcher, self.opts.max_running))
        if TaskKind.FUNCTION in self.serves:
            transport = PipeTransport(loop, self._max_workers, list(self.opts.preload))
            pool = FunctionPool(loop, transport, self.opts.pipeline_s, self.opts.max_pipeline)
            transport.pool = pool
            loop.serve([TaskKind.FUNCTION], pool)
            try:
                transport.start(self.opts.worker_start_timeout_s)
            except BaseException:
                transport.teardown()
                loop.selector.close()
                raise
        self._run_dispatcher(loop)


class _Process:
    """A worker process and the pilot's end of its pipe."""

    __slots__ = ("process", "pipe", "ready")

    def __init__(self, process: Any, pipe: FramedPipe) -> None:
        self.process = process
        self.pipe = pipe
        self.ready = False  # its "ready" message has arrived


class PipeTransport:
    """Worker processes started by a forkserver, each at the end of a non-blocking framed pipe."""

    def __init__(self, host: Dispatcher, max_workers: int, preload: list[str] | tuple[str, ...] = ()) -> None:
        self.host = host
        self.max_workers = max_workers
        self.pool: FunctionPool = None  # type: ignore[assignment]  # set by the backend
        self._mp = multiprocessing.get_context("forkserver")
        # modules imported once by the forkserver, so that every worker starts with them (torch, RDKit ...)
        self._mp.set_forkserver_preload(["impeccable.runtime.worker", *preload])
        # each worker makes sure of them (the forkserver may predate this pool) and sets which device each GPU
        # slot is: one set-up, made once, for every worker this pool starts
        allocation = host.slots.broker.allocation
        self._setup = WorkerSetup(tuple(preload), worker_env(allocation.gpus_per_node, node_table(allocation)))
        reaper.remove_on_death(multiprocessing.util.get_temp_dir())  # the forkserver's pymp-* folder

    def start(self, timeout_s: float) -> None:
        """Start the workers, spread evenly over the nodes, and wait until each says it is ready, so
        that the first calls do not wait for interpreters to start (that is start-up, not task time).
        Raise if one dies first."""
        _watch_forkserver()
        n_nodes = self.host.slots.broker.n_nodes
        workers = [self._new_worker(i * n_nodes // self.max_workers) for i in range(self.max_workers)]
        for worker in workers:
            self.pool.add_worker(worker)
        _wait_ready([w.handle for w in workers], timeout_s)

    def _new_worker(self, node: int) -> PoolWorker:
        from .. import worker as worker_module

        parent, child = self._mp.Pipe(duplex=True)
        process = self._mp.Process(
            target=worker_module.main, args=(child, self._setup), daemon=True, name="impeccable-worker"
        )
        process.start()
        assert process.pid is not None  # started above
        reaper.watch_process(process.pid)  # a worker busy in a long call must not outlive the pilot
        child.close()
        pipe = FramedPipe(os.dup(parent.fileno()))
        parent.close()
        worker = PoolWorker(_Process(process, pipe), node)
        self.host.selector.register(pipe.fd, selectors.EVENT_READ, lambda fd, w=worker: self._on_event(w))
        return worker

    # ------------------------------------------------------------ WorkerTransport
    def can_grow(self) -> bool:
        return len(self.pool.workers) < self.max_workers

    def grow(self, node: int) -> PoolWorker | None:
        return self._new_worker(node) if self.can_grow() else None

    def send(self, worker: PoolWorker, batch: bytes) -> None:
        """Send without blocking; what the pipe cannot take now leaves when it becomes writable."""
        pipe = worker.handle.pipe
        had_pending = pipe.pending_output
        if not pipe.write(batch) and not had_pending:
            self.host.selector.modify(
                pipe.fd, selectors.EVENT_READ | selectors.EVENT_WRITE, lambda fd, w=worker: self._on_event(w)
            )

    def kill(self, worker: PoolWorker) -> None:
        worker.handle.process.kill()  # the EOF on its pipe reports the death

    def abort(self, busy: list[PoolWorker]) -> None:
        for worker in busy:
            self.kill(worker)

    def after_events(self) -> None:
        pass

    def on_drained(self) -> None:
        pass

    def teardown(self) -> None:
        workers = [w for w in self.pool.workers if w.alive]
        for worker in workers:
            worker.handle.pipe.write(pickle.dumps(None))
            if worker.handle.pipe.pending_output:  # a worker still busy with a full pipe is killed below
                worker.handle.process.kill()
        deadline = time.time() + 5
        for worker in workers:
            process = worker.handle.process
            process.join(timeout=max(0.0, deadline - time.time()))
            if process.is_alive():
                process.kill()
                process.join()
            reaper.forget_process(process.pid)
            worker.handle.pipe.close()

    # ------------------------------------------------------------ events
    def _on_event(self, worker: PoolWorker) -> None:
        """Results (all that are waiting, in order), a writable pipe, or the worker's death."""
        if not worker.alive:
            return
        handle = worker.handle
        pipe = handle.pipe
        if pipe.pending_output and pipe.flush():
            self.host.selector.modify(pipe.fd, selectors.EVENT_READ, lambda fd, w=worker: self._on_event(w))
        for data in pipe.read_frames():
            if not handle.ready:
                handle.ready = True  # the first message is the worker's hello
                continue
            self.pool.on_result(worker, data)
        if pipe.eof:
            self.host.selector.unregister(pipe.fd)
            pipe.close()
            handle.process.join(timeout=5)
            reaper.forget_process(handle.process.pid)
            self.pool.on_worker_died(worker, None, handle.process.exitcode)


def _watch_forkserver() -> None:
    """The forkserver imports the preload modules (torch: seconds) before it first looks at its pilot's
    pipe, and exits only then: a pilot killed meanwhile left it alive for seconds. The reaper kills it with
    the pilot (it is this interpreter's, started once; the reaper checks it is still the same process)."""
    from multiprocessing import forkserver

    forkserver.ensure_running()
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # no public accessor
    if pid:
        reaper.watch_process(pid)


def _wait_ready(handles: list[_Process], timeout_s: float) -> None:
    from .. import worker as worker_module

    deadline = time.time() + timeout_s
    waiting = {h.pipe.fd: h for h in handles if not h.ready}
    with selectors.EpollSelector() as selector:
        for fd in waiting:
            selector.register(fd, selectors.EVENT_READ)
        while waiting:
            left = deadline - time.time()
            events = selector.select(left) if left > 0 else []
            if not events:
                raise BackendUnavailable(f"{len(waiting)} function worker(s) not ready after {timeout_s:g} s")
            for key, _ in events:
                handle = waiting[key.fd]
                frames = handle.pipe.read_frames()
                if frames and frames[0] == worker_module.READY:
                    handle.ready = True
                elif handle.pipe.eof:
                    handle.process.join(timeout=5)
                    raise BackendUnavailable(
                        f"a function worker exited before it was ready "
                        f"({exit_description(handle.process.exitcode)}); its error output is above"
                        + _main_module_hint()
                    )
                if handle.ready:
                    selector.unregister(key.fd)
                    del waiting[key.fd]


def _main_module_hint() -> str:
    """Why workers commonly die at birth: multiprocessing re-imports the main script in them."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path and not os.path.exists(path):
        return (
            f"; the main script {path!r} is not a file that workers can re-import "
            "(e.g. a script piped on stdin): save it to a file and run that"
        )
    return ""
