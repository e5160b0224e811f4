"""Function tasks on persistent workers inside one long-lived Dragon runtime.

``start()`` launches the ``dragon`` launcher once, running
``runtime/dragon_server.py``, which starts one Dragon-managed worker process
(``dragon.native.Process``) per core of the backend's share. The pilot and
the server talk over one private channel:

* an AF_UNIX socket in a fresh 0700 directory (socket 0600), never a TCP port;
* the server must answer the pilot's HMAC challenge with a 32-byte random key
  (``os.urandom``) that it reads from a 0600 file in that directory and
  deletes; it also checks the pilot's. A peer that fails the handshake is
  dropped before a single payload byte of it is unpickled, and once the
  server is in, the socket file is removed: nobody else can connect;
* the server exits, killing its workers, when the socket closes, so a pilot
  killed by Ctrl-C or a crash never leaves a runtime behind.

Scheduling is the local backend's: a dispatcher thread sleeps in ``epoll`` on
the channel and a wake-up eventfd; a worker *leases* a core slot, may be sent
several calls in one message (pipelining hides the Dragon round trip), and
returns the slot when its queue drains. Results come back in order, in
batches (a worker sends its results at the end of each batch or once the
oldest is 5 ms old; the server forwards whatever has arrived in one message);
start and finish times are the worker's own clocks. A worker marks the call
it is running in a small shared file, so a worker that dies fails only that
call: the calls queued behind it, and the few whose results died with it,
run again without spending a retry. The server starts a replacement.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pickle
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

from ..resources import ResourceShare
from ..task import Task, TaskError, TaskKind
from .base import Submission
from .loop import CallPipelining, Dispatcher, LeasedWorker, ThreadedBackend
from .base import signal_group as _signal_group, exit_description as _exit_description

NOT_INSTALLED = "dragonhpc not installed (pip install 'impeccable[dragon]')"
SERVER_SCRIPT = Path(__file__).resolve().parent.parent / "dragon_server.py"
HANDSHAKE_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 30.0
KILL_GRACE_S = 5.0


class DragonBackend(ThreadedBackend):
    """Python functions on Dragon-managed worker processes, one per core of the share.

    Options: ``launcher`` (path of ``dragon``, default: next to this Python or on PATH),
    ``launcher_args`` (extra launcher arguments), ``start_timeout_s`` (default 120),
    ``pipeline_s`` (estimated work queued in a busy worker, default 20 ms),
    ``max_pipeline`` (calls in flight per worker, default 512).
    """

    name = "dragon"
    kinds = frozenset({TaskKind.FUNCTION})

    def __init__(self, share: ResourceShare, **options: Any) -> None:
        super().__init__(share, **options)
        self._launcher = options.get("launcher") or find_launcher()
        self._launcher_args = list(options.get("launcher_args") or ())
        self._start_timeout_s = float(options.get("start_timeout_s", 120.0))
        self._pipeline_s = float(options.get("pipeline_s", 0.02))
        self._max_pipeline = int(options.get("max_pipeline", 512))
        self._runtime: _Runtime | None = None
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

    # ------------------------------------------------------------------ API
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
            raise RuntimeError(f"the dragon backend cannot start: {NOT_INSTALLED}")
        self._started = True
        self._runtime = _Runtime.launch(self._launcher, self._launcher_args, self.share.n_cores,
                                        self._max_pipeline + 8, self._start_timeout_s)
        self._loop = _Dispatcher(self, self._runtime)
        self._run_dispatcher(self._loop)

    def _after_stop(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


def find_launcher() -> str | None:
    """The ``dragon`` launcher: next to this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "dragon"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("dragon")


def needs_single_node_override() -> bool:
    """Slurm installed but no allocation: the launcher refuses unless told it runs on one node."""
    return bool(shutil.which("slurmd") or shutil.which("sinfo")) and not os.environ.get("SLURM_JOB_ID")


# ---------------------------------------------------------------------- the channel
class Channel:
    """The pilot's end: a listening AF_UNIX socket in a private directory, and the key."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="impeccable-dragon-")  # 0700
        os.chmod(self.directory, 0o700)
        self.path = os.path.join(self.directory, "channel.sock")
        self.keyfile = os.path.join(self.directory, "key")
        self.key = os.urandom(32)
        fd = os.open(self.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.key)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self.sock.listen(4)

    def accept(self, timeout_s: float, alive: Any = lambda: True) -> Connection:
        """The first peer that passes the handshake; peers with another key are dropped unread.

        Raises TimeoutError after ``timeout_s``, or RuntimeError when ``alive()`` turns false.
        """
        deadline = time.monotonic() + timeout_s
        self.sock.settimeout(0.2)
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no authenticated peer on {self.path} within {timeout_s:g} s")
            if not alive():
                raise RuntimeError("the Dragon runtime exited before it connected")
            try:
                peer, _ = self.sock.accept()
            except socket.timeout:
                continue
            conn = self._authenticate(peer)
            if conn is not None:
                self.close_listener()
                return conn

    def _authenticate(self, peer: socket.socket) -> Connection | None:
        peer.setblocking(True)
        # a peer that stalls mid-handshake is dropped after HANDSHAKE_TIMEOUT_S
        timeval = struct.pack("ll", int(HANDSHAKE_TIMEOUT_S), 0)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        conn = Connection(peer.detach())
        try:
            deliver_challenge(conn, self.key)
            answer_challenge(conn, self.key)
        except Exception:  # noqa: BLE001 - wrong key, garbage, EOF or stall: refuse this peer
            conn.close()
            return None
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
        sock.close()
        return conn

    def close_listener(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()
        for path in (self.path, self.keyfile):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def remove(self) -> None:
        self.close_listener()
        shutil.rmtree(self.directory, ignore_errors=True)


def connect(path: str, key: bytes) -> Connection:
    """The server's end (also used by tests): raises AuthenticationError for a wrong key.

    Built from the socket up, as ``multiprocessing.connection.Client``, because
    Dragon replaces ``Client`` inside its runtime.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    conn = Connection(sock.detach())
    try:
        answer_challenge(conn, key)
        deliver_challenge(conn, key)
    except BaseException:
        conn.close()
        raise
    return conn


# ---------------------------------------------------------------------- the runtime
class _Runtime:
    """The launcher process (and its process group), the channel and its log."""

    def __init__(self, channel: Channel, popen: subprocess.Popen, log_path: str) -> None:
        self.channel = channel
        self.popen = popen
        self.log_path = log_path
        self.conn: Connection | None = None
        self.worker_pids: dict[int, int] = {}
        self.shm_prefixes: set[str] = set()
        self.forced = False

    @classmethod
    def launch(cls, launcher: str, extra_args: list[str], n_workers: int, inbox_size: int,
               timeout_s: float) -> "_Runtime":
        channel = Channel()
        log_path = os.path.join(channel.directory, "dragon.log")
        argv = [launcher, *extra_args]
        if needs_single_node_override() and "--single-node-override" not in argv:
            argv.append("--single-node-override")
        argv += [str(SERVER_SCRIPT), "--socket", channel.path, "--keyfile", channel.keyfile,
                 "--workers", str(n_workers), "--inbox-size", str(inbox_size)]
        env = dict(os.environ)
        # the launcher runs helpers (dragon-config ...) found next to it
        env["PATH"] = os.pathsep.join([str(Path(launcher).parent), env.get("PATH", "")])
        # workers import the same modules as this process (test helpers, the user's packages)
        env["PYTHONPATH"] = os.pathsep.join(_import_path())
        try:
            with open(log_path, "wb") as log:
                # its own process group (Ctrl-C in the terminal reaches the pilot only, which stops it
                # in order); not its own session: the launcher hangs when started with setsid
                popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, process_group=0)
        except OSError as exc:
            channel.remove()
            raise RuntimeError(f"could not start the Dragon launcher {launcher!r}: {exc}") from exc
        runtime = cls(channel, popen, log_path)
        runtime._note_shm_prefixes()
        try:
            runtime.conn = channel.accept(timeout_s, alive=lambda: popen.poll() is None)
            if not runtime.conn.poll(max(1.0, timeout_s)):
                raise TimeoutError("the Dragon server connected but its workers did not start")
            message = pickle.loads(runtime.conn.recv_bytes())
            if message[0] != "ready":
                raise RuntimeError(f"unexpected first message from the Dragon server: {message[0]!r}")
            runtime.worker_pids = dict(message[1])
        except BaseException as exc:
            tail = runtime.log_tail()
            runtime.close(force=True)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise RuntimeError(f"the Dragon runtime did not start: {exc}; launcher output: {tail}") from exc
        return runtime

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
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.forced = True
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        deadline = time.monotonic() + KILL_GRACE_S
        while self.group_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.group_pids():
            self.forced = True
            _signal_group(self.popen.pid, signal.SIGKILL)
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
        if any(name.startswith(p) and name[len(p):].startswith(("def", "inf", "log_")) for p in prefixes):
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass


# ---------------------------------------------------------------------- scheduling
_CONTROL = b"\xff" * 8
_TOKEN = struct.Struct("<q")


class _Worker(LeasedWorker):
    """A Dragon worker as the pilot sees it; ``outstanding`` holds ``(token, Submission)`` in order."""

    __slots__ = ("wid", "kill_target")

    def __init__(self, wid: int) -> None:
        super().__init__()
        self.wid = wid
        self.kill_target: Submission | None = None


class _Dispatcher(Dispatcher, CallPipelining):
    """All scheduling state; lives in the backend's single thread."""

    backend: DragonBackend

    def __init__(self, backend: DragonBackend, runtime: _Runtime) -> None:
        super().__init__(backend)
        self.runtime = runtime
        self.conn: Connection = runtime.conn  # type: ignore[assignment]
        self.workers: dict[int, _Worker] = {}
        self.idle_workers: list[_Worker] = []
        for wid in sorted(runtime.worker_pids, reverse=True):
            self._add_worker(wid)
        self.tokens: dict[int, _Worker] = {}
        self._token = itertools.count()
        self.selector.register(self.conn.fileno(), selectors.EVENT_READ, self._on_message)
        self.kill_on_stop = False
        self.broken = ""
        self._sent: list[_Worker] = []

    # ------------------------------------------------------------ loop hooks
    def _after_events(self) -> None:
        if self.broken:
            self._fail_everything(self.broken)

    def _on_drained(self) -> None:
        self._stop_server()

    def _abandon(self, reason: str) -> None:
        self._fail_everything(reason)

    def _drained(self) -> bool:
        return not self.pending and not any(w.outstanding for w in self.workers.values())

    def _on_stop(self, cancel_pending: bool) -> None:
        self.stopping = True
        if cancel_pending:
            self.kill_on_stop = True
            self._cancel_everything()

    def _stop_server(self) -> None:
        """Ask the server to stop and wait for its goodbye (or the socket closing)."""
        if self.broken:
            return
        try:
            self.conn.send_bytes(pickle.dumps(("stop", self.kill_on_stop)))
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while self.conn.poll(max(0.0, deadline - time.monotonic())):
                message = pickle.loads(self.conn.recv_bytes())
                if message[0] == "bye":
                    return
        except (EOFError, OSError):
            return

    # ------------------------------------------------------------ scheduling
    def _schedule(self) -> None:
        pending = self.pending
        while pending:
            if not self._place_call(pending[0]):
                break
            pending.popleft()

    # CallPipelining hooks
    def _all_workers(self) -> Iterable[_Worker]:
        return self.workers.values()

    def _could_get_worker(self) -> bool:
        return bool(self.idle_workers)

    def _get_idle_worker(self) -> _Worker | None:
        return self.idle_workers.pop() if self.idle_workers else None

    def _pipeline_limits(self) -> tuple[float, int]:
        return self.backend._pipeline_s, self.backend._max_pipeline

    def _enqueue_call(self, worker: _Worker, sub: Submission, now: float) -> None:
        task = sub.task
        token = next(self._token)
        env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, worker.gpus))} if worker.gpus else None
        worker.outstanding.append((token, sub))
        self.tokens[token] = worker
        worker.outbox.append((token, task.function, task.args, dict(task.kwargs) if task.kwargs else {}, env))
        if len(worker.outbox) == 1:
            self._sent.append(worker)
        if len(worker.outstanding) == 1:
            self._head_started(worker, now)

    def _flush(self) -> None:
        for worker in self._sent:
            if worker.alive and worker.outbox:
                try:
                    batch = pickle.dumps(worker.outbox, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001 - some arguments cannot be pickled
                    batch = self._picklable_part(worker, exc)
                if batch is not None:
                    self._send(("run", worker.wid, batch))
            worker.outbox = []
        self._sent.clear()

    def _picklable_part(self, worker: _Worker, exc: Exception) -> bytes | None:
        """Fail the calls whose arguments cannot be pickled; the batch of the others."""
        good = []
        for item in worker.outbox:
            try:
                pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as item_exc:  # noqa: BLE001
                entry = next(e for e in worker.outstanding if e[0] == item[0])
                worker.outstanding.remove(entry)
                self.tokens.pop(item[0], None)
                entry[1].fail(f"arguments cannot be sent to a worker: {type(item_exc).__name__}: {item_exc}",
                              final=True)
            else:
                good.append(item)
        if not worker.outstanding:
            self._idle(worker)
            self._come_round_again()
        elif good and worker.outstanding[0][0] == good[0][0]:
            self._head_started(worker, time.time())
        return pickle.dumps(good, protocol=pickle.HIGHEST_PROTOCOL) if good else None

    def _send(self, message: tuple) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            self._lost()

    # ------------------------------------------------------------ results
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
            else:
                for result in pickle.loads(item):
                    self._on_result(_TOKEN.unpack_from(result)[0], result)

    def _on_result(self, token: int, item: bytes) -> None:
        worker = self.tokens.pop(token, None)
        if worker is None or not worker.outstanding or worker.outstanding[0][0] != token:
            return  # a worker already declared dead
        _, sub = worker.outstanding.popleft()
        try:
            _, ok, payload, started, finished = pickle.loads(memoryview(item)[8:])
        except Exception as exc:  # noqa: BLE001 - e.g. a result class the pilot cannot import
            ok, started, finished = False, time.time(), time.time()
            payload = (None, f"result cannot be unpickled in the pilot: {type(exc).__name__}: {exc}", None)
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

    def _on_control(self, message: tuple) -> None:
        what = message[0]
        if what == "died":
            _, wid, code, running = message
            worker = self.workers.get(wid)
            if worker is not None:
                self._worker_died(worker, code, running)
        elif what == "up":
            self._add_worker(message[1])

    def _add_worker(self, wid: int) -> None:
        worker = _Worker(wid)
        self.workers[wid] = worker
        self.idle_workers.append(worker)

    def _head_started(self, worker: _Worker, when: float) -> None:
        sub = worker.outstanding[0][1]
        if sub.task.timeout_s:
            self._arm(when + sub.task.timeout_s, "call-timeout", (worker, sub))

    def _worker_died(self, worker: _Worker, code: int | None, running: int) -> None:
        """Fail the call it was running (``running``: its token); requeue the others.

        Calls before it whose results died with the worker (at most FLUSH_S of work)
        and calls after it go back to the queue without spending a retry.
        """
        worker.alive = False
        del self.workers[worker.wid]
        if worker in self.idle_workers:
            self.idle_workers.remove(worker)
        entries = list(worker.outstanding)
        for token, _ in entries:
            self.tokens.pop(token, None)
        worker.outstanding.clear()
        self._release_worker(worker)
        culprit = next((sub for token, sub in entries if token == running), None)
        target = worker.kill_target
        if target is not None and target is not culprit:
            # the call we meant to kill had just finished (its result died with the worker):
            # a canceled one stays canceled, a timed-out one runs again; nobody else is to blame
            still_ours = any(sub is target for _, sub in entries)
            culprit = target if worker.kill_reason == "canceled" and still_ours else None
        rest = [sub for _, sub in entries if sub is not culprit]
        for sub in rest:
            sub.record.attempts -= 1
        self.pending.extendleft(reversed(rest))
        if culprit is None:
            return
        if worker.kill_reason == "canceled":
            culprit.cancel("canceled while running (worker killed)")
        elif culprit.fail(worker.kill_reason or f"worker process died ({_exit_description(code)})"):
            self.pending.append(culprit)

    # ------------------------------------------------------------ deadlines, cancel, failure
    def _deadline(self, what: str, target: Any, now: float) -> None:
        worker, sub = target  # "call-timeout", the only deadline here
        if worker.alive and worker.outstanding and worker.outstanding[0][1] is sub and worker.kill_target is None:
            self._kill(worker, sub, f"timed out after {sub.task.timeout_s:g} s (worker killed and replaced)")

    def _kill(self, worker: _Worker, sub: Submission, reason: str) -> None:
        worker.kill_reason = reason
        worker.kill_target = sub
        self._send(("kill", worker.wid))

    def _cancel(self, uid: str) -> None:
        if self._cancel_pending(uid):
            return
        for worker in self.workers.values():
            # a call queued behind another in a worker has been handed over: it will run
            if worker.outstanding and worker.outstanding[0][1].task.uid == uid and worker.kill_target is None:
                self._kill(worker, worker.outstanding[0][1], "canceled")

    def _cancel_everything(self) -> None:
        """Shutdown with cancel: everything ends CANCELED now; the server kills the workers."""
        while self.pending:
            self.pending.popleft().cancel("canceled at shutdown")
        for worker in self.workers.values():
            for token, sub in worker.outstanding:
                self.tokens.pop(token, None)
                sub.cancel("canceled at shutdown")
            worker.outstanding.clear()
            self._release_worker(worker)

    def _lost(self) -> None:
        if not self.broken:
            self.broken = f"the Dragon runtime went away; launcher output: {self.runtime.log_tail(5)}"
            try:
                self.selector.unregister(self.conn.fileno())
            except (KeyError, ValueError, OSError):
                pass

    def _fail_everything(self, reason: str) -> None:
        subs = list(self.pending)
        self.pending.clear()
        for worker in self.workers.values():
            subs += [sub for _, sub in worker.outstanding]
            worker.outstanding.clear()
            worker.alive = False
            self._release_worker(worker)
        self.workers.clear()
        self.idle_workers.clear()
        for sub in subs:
            if not sub.future.done():
                sub.fail(reason, final=True)



# ---------------------------------------------------------------------- raw baseline
RAW_SCRIPT = """
import sys, time, multiprocessing
import dragon
from impeccable.runtime.bench import null_function, sleep_function

if __name__ == "__main__":
    multiprocessing.set_start_method("dragon")
    workload, n, cores, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    fn, args = (null_function, ()) if workload == "null-func" else (sleep_function, (duration,))
    with multiprocessing.Pool(cores) as pool:
        pool.apply(null_function)  # workers up before the clock starts
        t0 = time.perf_counter()
        results = [pool.apply_async(fn, args) for _ in range(n)]
        for r in results:
            r.get()
        elapsed = time.perf_counter() - t0
    print(f"RAW_TASKS_PER_S {n / elapsed}", flush=True)
"""


def raw_throughput(workload: str, n_tasks: int, cores: int, duration_s: float) -> float:
    """Tasks/s of Dragon's own ``multiprocessing.Pool.apply_async`` (start method "dragon").

    A fresh runtime runs a small script; only the submit-and-wait loop is timed,
    not the runtime's or the pool's start-up.
    """
    from ..bench import workload_kind

    if workload_kind(workload) is not TaskKind.FUNCTION:
        raise ValueError(f"the dragon backend runs function workloads only, not {workload!r}")
    launcher = find_launcher()
    if launcher is None:
        raise RuntimeError(NOT_INSTALLED)
    with tempfile.TemporaryDirectory(prefix="impeccable-dragon-raw-") as directory:
        script = os.path.join(directory, "raw_pool.py")
        Path(script).write_text(RAW_SCRIPT)
        argv = [launcher]
        if needs_single_node_override():
            argv.append("--single-node-override")
        argv += [script, workload, str(n_tasks), str(cores), repr(duration_s)]
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(launcher).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(_import_path())
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                              cwd=directory, process_group=0)
    for line in done.stdout.splitlines():
        if line.startswith("RAW_TASKS_PER_S "):
            return float(line.split()[1])
    tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-10:])
    raise RuntimeError(f"raw Dragon Pool run failed (exit {done.returncode}): {tail}")
