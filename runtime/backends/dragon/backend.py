"""Function tasks on persistent workers inside one long-lived Dragon runtime.

``start()`` launches the ``dragon`` launcher once, running
``runtime/backends/dragon/server.py``, which starts one Dragon-managed worker process
(``dragon.native.Process``) per core of the backend's share. The pilot and
the server talk over one private, authenticated channel
(:mod:`.channel`); the server exits, killing its workers, when the
channel closes, so a pilot killed by Ctrl-C or a crash never leaves a runtime
behind.

Scheduling is the local backend's (:class:`~.pool.FunctionPool`): a
dispatcher thread sleeps in ``epoll`` on the channel and a wake-up eventfd; a
worker *leases* a core slot, may be sent several calls in one message
(pipelining hides the Dragon round trip), and returns the slot when its queue
drains; this module is the transport. Results come back in order, in
batches (a worker sends its results at the end of each batch or once the
oldest is 5 ms old; the server forwards whatever has arrived in one message);
start and finish times are the worker's own clocks. A worker marks the call
it is running in a small shared file, so a worker that dies fails only that
call: the calls queued behind it, and the few whose results died with it,
run again without spending a retry. The server starts a replacement.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import selectors
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailable, TaskError
from ...gpus import node_table, worker_env
from ...slots import SlotView
from ...task import Task, TaskKind
from ..base import signal_group
from ..loop import Dispatcher, ThreadedBackend
from ..options import DragonOptions
from ..pool import FunctionPool, PoolWorker
from .channel import Channel

NOT_INSTALLED = "dragonhpc not installed (pip install 'impeccable[dragon]')"
LAUNCHER_ARGS_ENV = "IMPECCABLE_DRAGON_LAUNCHER_ARGS"  # launcher_args when the options give none
SERVER_MODULE = "impeccable.runtime.backends.dragon.server"
STOP_TIMEOUT_S = 30.0  # an orderly stop: Dragon's own services wind down (seconds on a loaded node)
ABORT_TIMEOUT_S = 5.0  # Ctrl-C or a cancelling shutdown: then the process group is signalled
KILL_GRACE_S = 5.0
# what the Dragon launcher says once its start failed, before it spends minutes cleaning up
ABNORMAL_EXIT = b"Abnormal Exit detected"
_CONTROL = b"\xff" * 8  # prefix of a server notice; a result starts with its call's token
_TOKEN = struct.Struct("<q")


def inbox_messages(max_pipeline: int, queue_ahead: int) -> int:
    """Messages a worker's inbox must hold: every call the pool may have in flight to it (each message
    carries at least one; :class:`~.pool.Pipelining` caps them at max(max_pipeline, 1 + queue_ahead)),
    and room for control messages. The server's reader then never blocks (see ``server.queue_sizes``)."""
    return max(max_pipeline, 1 + queue_ahead) + 8


class DragonBackend(ThreadedBackend):
    """Python functions on Dragon-managed worker processes, one per core the pilot may lend it (or ``workers``).

    Options: ``launcher`` (path of ``dragon``, default: next to this Python or on PATH),
    ``launcher_args`` (extra launcher arguments; default ``$IMPECCABLE_DRAGON_LAUNCHER_ARGS``, split as a
    shell would), ``start_timeout_s`` (default 120), ``start_attempts`` (launches tried before the backend
    gives up, default 1: a multi-node start over TCP can fail now and then, each failure is in
    :attr:`start_failures` and on stderr),
    ``pipeline_s`` (estimated work queued in a busy worker, default 20 ms),
    ``max_pipeline`` (calls in flight per worker, default 512), ``queue_ahead`` (calls kept queued
    behind a running one however long calls are, so that a worker starts its next call without waiting
    for a round trip through the runtime; default 1), ``preload`` (modules each worker imports before it is up),
    ``workers`` (persistent workers, spread evenly over the nodes; default one per core it may use: each
    costs a Dragon process start, seconds apiece on a busy multi-node runtime).
    """

    name = "dragon"
    spans_nodes = True
    kinds = frozenset({TaskKind.FUNCTION})
    opts: DragonOptions

    def __init__(self, slots: SlotView, **options: Any) -> None:
        super().__init__(slots, **options)
        # the launcher, and a site's (or a test cluster's) settings for it, e.g. "-t tcp --network-prefix eth0"
        self._launcher = self.opts.launcher or find_launcher()
        self._launcher_args = list(self.opts.launcher_args or shlex.split(os.environ.get(LAUNCHER_ARGS_ENV, "")))
        self.start_failures: list[str] = []  # why earlier launches failed, when a later one started
        self._workers = self.opts.workers or slots.n_cores
        self._runtime: DragonRuntime | None = None
        self._started = False

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            found = importlib.util.find_spec("dragon") is not None
        except (ImportError, ValueError):
            found = False
        if not found or find_launcher() is None:
            return False, NOT_INSTALLED
        return True, ""

    def check(self, task: Task) -> None:
        if task.kind is not TaskKind.FUNCTION:
            raise TaskError(
                f"task {task.label}: the dragon backend runs Python function tasks only; route "
                f"{task.kind.value} tasks to another backend (e.g. routes={{'executable': 'local'}})"
            )
        super().check(task)

    def start(self) -> None:
        if self._started:
            return
        if self._launcher is None:
            raise BackendUnavailable(f"the dragon backend cannot start: {NOT_INSTALLED}")
        self._started = True
        allocation = self.slots.broker.allocation
        hosts: list[str] = []
        extra = list(self._launcher_args)
        if allocation.real_nodes and allocation.manager == "slurm":  # Dragon's Slurm launch over the job's nodes
            hosts = worker_hosts(allocation.nodes, self._workers)
            if "-N" not in extra and "--nodes" not in extra:
                extra += ["-N", str(len(allocation.nodes))]
        runtime: DragonRuntime | None = None
        for attempt in range(1, self.opts.start_attempts + 1):
            try:
                runtime = DragonRuntime.launch(
                    self._launcher,
                    extra,
                    self._workers,
                    inbox_messages(self.opts.max_pipeline, self.opts.queue_ahead),
                    self.opts.start_timeout_s,
                    list(self.opts.preload),
                    self._worker_env(),
                    hosts,
                )
                break
            except BackendUnavailable as exc:
                if attempt == self.opts.start_attempts:
                    raise
                self.start_failures.append(str(exc))
                print(
                    f"impeccable: Dragon start {attempt} of {self.opts.start_attempts} failed, trying again: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
        assert runtime is not None  # the last attempt returned or raised
        self._runtime = runtime
        loop = Dispatcher(self)
        transport = DragonTransport(loop, runtime)
        o = self.opts
        pool = FunctionPool(loop, transport, o.pipeline_s, o.max_pipeline, queue_ahead=o.queue_ahead)
        transport.attach(pool)
        loop.serve([TaskKind.FUNCTION], pool)
        self._run_dispatcher(loop)

    def _worker_env(self) -> dict[str, str]:
        """Set in every worker before its first call: which device each GPU slot is (see ``runtime.gpus``)."""
        allocation = self.slots.broker.allocation
        return worker_env(allocation.gpus_per_node, node_table(allocation))

    def _after_stop(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


def worker_hosts(nodes: tuple[str, ...], n_workers: int) -> list[str]:
    """The node of each worker: spread evenly, in order (worker i on node i * nodes // workers), as the
    transport counts them."""
    return [nodes[i * len(nodes) // n_workers] for i in range(n_workers)]


def find_launcher() -> str | None:
    """The ``dragon`` launcher: next to this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "dragon"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("dragon")


def needs_single_node_override() -> bool:
    """Slurm installed but no allocation: the launcher refuses unless told it runs on one node."""
    return bool(shutil.which("slurmd") or shutil.which("sinfo")) and not os.environ.get("SLURM_JOB_ID")


def launcher_argv(launcher: str, extra_args: list[str], script: str, *script_args: str) -> list[str]:
    argv = [launcher, *extra_args]
    if needs_single_node_override() and "--single-node-override" not in argv:
        argv.append("--single-node-override")
    return [*argv, script, *script_args]


def launcher_env(launcher: str) -> dict[str, str]:
    env = dict(os.environ)
    # the launcher runs helpers (dragon-config ...) found next to it
    env["PATH"] = os.pathsep.join([str(Path(launcher).parent), env.get("PATH", "")])
    return env


# ---------------------------------------------------------------------- the transport
class DragonTransport:
    """Batches of calls to the server over the channel; results, deaths and replacements back."""

    def __init__(self, host: Dispatcher, runtime: DragonRuntime) -> None:
        self.host = host
        self.runtime = runtime
        self.conn: Connection = runtime.conn  # type: ignore[assignment]
        self.pool: FunctionPool = None  # type: ignore[assignment]
        self.by_wid: dict[int, PoolWorker] = {}
        self.replacing: list[int] = []  # nodes of dead workers whose replacements have not said "up" yet
        self.kill_on_stop = False
        self.broken = ""
        host.selector.register(self.conn.fileno(), selectors.EVENT_READ, self._on_message)

    def attach(self, pool: FunctionPool) -> None:
        self.pool = pool
        wids = sorted(self.runtime.worker_pids)
        n_nodes = self.host.slots.broker.n_nodes
        for i, wid in reversed(list(enumerate(wids))):  # spread evenly over the nodes, or where each says it is
            self._add_worker(wid, self._node_of(self.runtime.worker_hosts.get(wid), i * n_nodes // len(wids)))

    def _node_of(self, host: str | None, otherwise: int) -> int:
        """The node a worker reported running on, when the nodes are real hosts; else ``otherwise``."""
        allocation = self.host.slots.broker.allocation
        if host and allocation.real_nodes and host in allocation.nodes:
            return allocation.nodes.index(host)
        return otherwise

    def _add_worker(self, wid: int, node: int) -> None:
        worker = PoolWorker(wid, node)
        self.by_wid[wid] = worker
        self.pool.add_worker(worker)

    # ------------------------------------------------------------ WorkerTransport
    def can_grow(self) -> bool:
        return False  # the server starts a replacement for each worker that dies

    def grow(self, node: int) -> None:
        return None

    def send(self, worker: PoolWorker, batch: bytes) -> None:
        self._send(("run", worker.handle, batch))

    def kill(self, worker: PoolWorker) -> None:
        self._send(("kill", worker.handle))

    def abort(self, busy: list[PoolWorker]) -> None:
        self.kill_on_stop = True  # the "stop" message tells the server to kill them at once
        self.runtime.stop_timeout_s = ABORT_TIMEOUT_S  # and nobody waits long for an orderly goodbye

    def after_events(self) -> None:
        if self.broken:
            self.host.abandon(self.broken)

    def on_drained(self) -> None:
        """Ask the server to stop and wait for its goodbye (or the socket closing)."""
        if self.broken:
            return
        try:
            self.conn.send_bytes(pickle.dumps(("stop", self.kill_on_stop)))
            deadline = time.monotonic() + self.runtime.stop_timeout_s
            while self.conn.poll(max(0.0, deadline - time.monotonic())):
                if pickle.loads(self.conn.recv_bytes())[0] == "bye":
                    return
        except (EOFError, OSError):
            return

    def teardown(self) -> None:
        pass  # the runtime is closed by the backend, after the dispatcher thread

    # ------------------------------------------------------------ messages
    def _send(self, message: tuple) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            self._lost()

    def _on_message(self, fd: Any) -> None:
        try:
            message = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self._lost()
            return
        if message[0] != "out":
            return
        for item in message[1]:
            if item[:8] == _CONTROL:
                self._on_control(pickle.loads(item[8:]))
                continue
            for result in pickle.loads(item):
                token = _TOKEN.unpack_from(result)[0]
                worker = self.pool.tokens.get(token)
                if worker is not None:
                    self.pool.on_result(worker, memoryview(result)[8:], token)

    def _on_control(self, message: tuple) -> None:
        if message[0] == "died":
            _, wid, code, running = message
            worker = self.by_wid.pop(wid, None)
            if worker is not None:
                self.replacing.append(worker.node)  # the server starts its replacement
                self.pool.on_worker_died(worker, running, code)
        elif message[0] == "up":
            node = self.replacing.pop(0) if self.replacing else 0
            self._add_worker(message[1], self._node_of(message[3] if len(message) > 3 else None, node))

    def _lost(self) -> None:
        if not self.broken:
            self.broken = f"the Dragon runtime went away; launcher output: {self.runtime.log_tail(5)}"
            try:
                self.host.selector.unregister(self.conn.fileno())
            except (KeyError, ValueError, OSError):
                pass


# ---------------------------------------------------------------------- the runtime
class DragonRuntime:
    """The launcher process (and its process group), the channel and its log."""

    def __init__(self, channel: Channel, popen: subprocess.Popen, log_path: str) -> None:
        self.channel = channel
        self.popen = popen
        self.log_path = log_path
        self.conn: Connection | None = None
        self.worker_pids: dict[int, int] = {}
        self.worker_hosts: dict[int, str] = {}  # wid -> the host its worker runs on (as it reported)
        self.shm_prefixes: set[str] = set()
        self.forced = False
        self.stop_timeout_s = STOP_TIMEOUT_S
        self._log_seen = -1  # the launcher log's size when last read (during start)
        self._abnormal = False

    @classmethod
    def launch(
        cls,
        launcher: str,
        extra_args: list[str],
        n_workers: int,
        inbox_size: int,
        timeout_s: float,
        preload: list[str] | None = None,
        worker_env: dict[str, str] | None = None,
        hosts: list[str] | None = None,
    ) -> DragonRuntime:
        channel = Channel()
        log_path = os.path.join(channel.directory, "dragon.log")
        # the launcher runs PROG with ARGS: this interpreter, -m the server module
        argv = launcher_argv(
            launcher,
            extra_args,
            sys.executable,
            "-m",
            SERVER_MODULE,
            "--socket",
            channel.path,
            "--keyfile",
            channel.keyfile,
            "--workers",
            str(n_workers),
            "--inbox-size",
            str(inbox_size),
            "--preload",
            ",".join(preload or ()),
            "--worker-env",
            json.dumps(worker_env or {}),
            "--hosts",
            ",".join(hosts or ()),
        )
        env = launcher_env(launcher)
        # workers import the same modules as this process (test helpers, the user's packages)
        env["PYTHONPATH"] = os.pathsep.join(_import_path())
        try:
            with open(log_path, "wb") as log:
                # its own process group (Ctrl-C in the terminal reaches the pilot only, which stops it
                # in order); not its own session: the launcher hangs when started with setsid
                popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0
                )
        except OSError as exc:
            channel.remove()
            raise RuntimeError(f"could not start the Dragon launcher {launcher!r}: {exc}") from exc
        runtime = cls(channel, popen, log_path)
        runtime._note_shm_prefixes()
        try:
            runtime.conn = channel.accept(timeout_s, alive=runtime.starting)
            if not runtime.conn.poll(max(1.0, timeout_s)):
                raise TimeoutError("the Dragon server connected but its workers did not start")
            message = pickle.loads(runtime.conn.recv_bytes())
            if message[0] != "ready":
                raise RuntimeError(f"unexpected first message from the Dragon server: {message[0]!r}")
            runtime.worker_pids = dict(message[1])
            runtime.worker_hosts = dict(message[2]) if len(message) > 2 else {}
        except BaseException as exc:
            tail = runtime.log_tail()
            runtime.close(force=True)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise BackendUnavailable(f"the Dragon runtime did not start: {exc}; launcher output: {tail}") from exc
        return runtime

    def starting(self) -> bool:
        """The launcher is still coming up: not exited, and not past Dragon's "Abnormal Exit detected", after
        which it cleans up for minutes (over ssh, where a site has it) before it exits. Polled during start only."""
        if self.popen.poll() is not None:
            return False
        try:
            size = os.path.getsize(self.log_path)
        except OSError:
            return True
        if size != self._log_seen:
            self._log_seen = size
            with open(self.log_path, "rb") as log:
                self._abnormal = ABNORMAL_EXIT in log.read()
        return not self._abnormal

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty)"

    def group_pids(self) -> list[int]:
        """Processes still in the launcher's process group (the runtime's services and workers)."""
        return group_members(self.popen.pid)

    def _note_shm_prefixes(self) -> None:
        # Dragon names its node pools /dev/shm/DD<uid[-3:]><pid[-3:]>{def,inf,log_}<n>{M,D} after the launcher
        self.shm_prefixes.add(f"DD{str(os.getuid())[-3:]}{str(self.popen.pid)[-3:]}")

    def close(self, force: bool = False) -> None:
        """Wait for the launcher to exit (after "stop" or EOF); force it if it does not, or at once."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        try:
            if force and self.popen.poll() is None:
                raise subprocess.TimeoutExpired(self.popen.args, 0)
            self.popen.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.forced = True
            signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        deadline = time.monotonic() + KILL_GRACE_S
        while self.group_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.group_pids():
            self.forced = True
            signal_group(self.popen.pid, signal.SIGKILL)
        if self.forced:
            _remove_shm(self.shm_prefixes)
        self.channel.remove()


def _import_path() -> list[str]:
    entries = []
    for entry in sys.path:
        full = os.path.abspath(entry or ".")
        if os.path.isdir(full) and full not in entries and not full.startswith(sys.base_prefix):
            entries.append(full)
    extra = os.environ.get("PYTHONPATH")
    return entries + ([extra] if extra else [])


def group_members(pgid: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # after the command: state ppid pgrp session ...
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(name))
    return members


def _remove_shm(prefixes: set[str]) -> None:
    """After a forced stop: the runtime's shared-memory pools, which it had no chance to remove."""
    if not prefixes:
        return
    for name in os.listdir("/dev/shm"):
        if any(name.startswith(p) and name[len(p) :].startswith(("def", "inf", "log_")) for p in prefixes):
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass
