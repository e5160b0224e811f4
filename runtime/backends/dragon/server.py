"""The pilot's side-car inside a Dragon runtime: persistent function workers fed over one private channel.

The Dragon backend starts this script once per pilot under the ``dragon``
launcher. It connects back to the pilot over an AF_UNIX socket in a private
(0700) directory and proves it holds the pilot's 32-byte key (the
``multiprocessing.connection`` HMAC challenge in both directions) before any
payload is exchanged. It then starts one Dragon-managed worker process
(``dragon.native.Process``) per core of the backend's share, each with its
own ``dragon.native.Queue`` inbox, and one shared outbox queue.

Pilot -> server (pickled tuples):
    ("run", wid, batch_bytes)  batch_bytes: pickled list of (token, "module:qualname", args, kwargs, env)
    ("kill", wid)              kill that worker (timeout, cancel), never inside a queue operation
                               (:mod:`.safekill`); a replacement is started
    ("stop", kill)             stop the workers (kill: at once, else after their queued calls),
                               send what is left, say "bye" and exit
Server -> pilot (pickled tuples):
    ("ready", {wid: pid}, {wid: host}) once, then ("out", [item_bytes, ...]) where an item is the call's
    token (8 bytes, little-endian) and the pickled (token, ok, payload, started, finished)
    result from a worker (the format of ``worker.py``), or 8 bytes of 0xff and a pickled
    ("died", wid, exitcode) or ("up", wid, pid, host) notice (a replacement worker); finally ("bye",).
    ``host`` is the host name the worker itself reports; with ``--hosts`` each worker is placed on
    its node (Dragon's HOST_NAME policy), a replacement on its predecessor's.

The server never unpickles results: it forwards the workers' bytes in batches,
so one socket message carries many results. It exits when the pilot's socket
closes (Ctrl-C or a crash in the pilot), killing its workers first, so a lost
pilot never leaves a Dragon runtime behind.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pickle
import queue
import socket
import struct
import sys
import threading
import time
from typing import Any

from impeccable.runtime.backends.dragon.safekill import KILL, KILLED_EXIT, CommsGuard, kill_outside_comms
from impeccable.runtime.calls import WorkerSetup

FORWARD_MAX_ITEMS = 4096
CONTROL = b"\xff" * 8  # prefix of a server notice in the outbox; results start with their token
TOKEN = struct.Struct("<q")
STOP_GRACE_S = 5.0
FLUSH_S = 0.005  # a finished call's result waits at most this long in its worker

# A Dragon queue reserves capacity x block_size bytes of the runtime's managed memory pool (4 GiB by
# default) when it is made; a message larger than a block still goes through, allocated from the pool as
# it is sent. The old sizing (64 KiB blocks; outbox workers x inbox x 2) asked for 13 GB at 128 workers,
# and the runtime failed to start ("DYNHEAP_REQUESTED_SIZE_TOO_LARGE").
DRAGON_BLOCK_BYTES = 65536  # Dragon's default block: every message of a small runtime fits in one
MIN_INBOX_BLOCK_BYTES = 256
INBOXES_POOL_BYTES = 1 << 30  # what all inboxes together may reserve: a quarter of the default pool
OUTBOX_SLOTS_PER_WORKER = 8
MAX_OUTBOX_SLOTS = 8192
DEFAULT_POOL_BYTES = 1 << 32  # Dragon's default managed memory pool (DRAGON_DEFAULT_SEG_SZ)


def queue_sizes(n_workers: int, inbox_size: int) -> dict[str, int]:
    """Capacities and block sizes of the worker inboxes and the shared outbox.

    No deadlock, whatever the outbox's size: an inbox holds every message the pilot may have in flight
    to its worker (``inbox_size``, from the pilot's pipeline bound), so the server's reader never blocks;
    so the pilot's sends always complete and its dispatcher, which also reads results, always returns to
    reading; so the forwarder always drains the outbox, and a worker blocked on a full outbox waits only
    for it. The outbox is therefore bounded per worker (and overall), not per call in flight. Inbox
    blocks are Dragon's default until the inboxes together would pass their budget, then the largest
    power of two that fits.
    """
    fits = INBOXES_POOL_BYTES // max(1, n_workers * inbox_size)
    block = min(DRAGON_BLOCK_BYTES, max(MIN_INBOX_BLOCK_BYTES, 1 << (max(fits, 1).bit_length() - 1)))
    outbox = min(MAX_OUTBOX_SLOTS, max(1024, OUTBOX_SLOTS_PER_WORKER * n_workers))
    return {
        "inbox_capacity": inbox_size,
        "inbox_block_bytes": block,
        "outbox_capacity": outbox,
        "outbox_block_bytes": DRAGON_BLOCK_BYTES,
    }


def pool_bytes(n_workers: int, inbox_size: int) -> int:
    """What the queues reserve in Dragon's managed memory pool."""
    q = queue_sizes(n_workers, inbox_size)
    return n_workers * q["inbox_capacity"] * q["inbox_block_bytes"] + q["outbox_capacity"] * q["outbox_block_bytes"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="impeccable's Dragon-side worker server (started by the pilot)")
    parser.add_argument("--socket", required=True, help="the pilot's AF_UNIX socket path")
    parser.add_argument("--keyfile", required=True, help="0600 file holding the pilot's key (deleted once read)")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--inbox-size", type=int, default=1024)
    parser.add_argument("--preload", default="", help="comma-separated modules each worker imports before it is up")
    parser.add_argument("--worker-env", default="{}", help="JSON object of variables each worker sets when it starts")
    parser.add_argument("--hosts", default="", help="comma-separated: the node of each worker (several nodes)")
    args = parser.parse_args(argv)

    from impeccable.runtime.backends.dragon.channel import connect

    with open(args.keyfile, "rb") as handle:
        key = handle.read()
    os.unlink(args.keyfile)
    conn = connect(args.socket, key)
    del key
    server = _Server(
        conn,
        os.path.dirname(args.socket),
        args.workers,
        args.inbox_size,
        WorkerSetup(tuple(m for m in args.preload.split(",") if m), json.loads(args.worker_env)),
        tuple(h for h in args.hosts.split(",") if h),
    )
    return server.run()


class _Server:
    def __init__(
        self,
        conn: Any,
        directory: str,
        n_workers: int,
        inbox_size: int,
        setup: WorkerSetup = WorkerSetup(),
        hosts: tuple[str, ...] = (),
    ) -> None:
        self.setup = setup
        self.hosts = hosts  # worker i runs on hosts[i] (Dragon's HOST_NAME placement); () = where Dragon likes
        from dragon.native.queue import Queue

        self.conn = conn
        self.directory = directory
        self.n_workers = n_workers
        self._Queue = Queue
        self.sizes = queue_sizes(n_workers, inbox_size)
        pool, need = int(os.environ.get("DRAGON_DEFAULT_SEG_SZ", DEFAULT_POOL_BYTES)), pool_bytes(n_workers, inbox_size)
        if need > 0.75 * pool:
            raise RuntimeError(
                f"{n_workers} workers with inboxes of {inbox_size} messages need "
                f"{need / 2**30:.1f} GiB of Dragon's {pool / 2**30:.1f} GiB "
                "managed memory pool: give the pilot fewer cores per Dragon runtime, a smaller "
                "max_pipeline, or a larger pool (DRAGON_DEFAULT_SEG_SZ)"
            )
        self.outbox = Queue(maxsize=self.sizes["outbox_capacity"], block_size=self.sizes["outbox_block_bytes"])
        self.workers: dict[int, _Worker] = {}
        self.lock = threading.Lock()
        self.next_wid = 0
        self.worker_hosts: dict[int, str] = {}  # wid -> the host name its worker reported
        self.stopping = False
        self.kill_on_stop = False

    def run(self) -> int:
        pids = self._start_workers(self.n_workers)
        self.conn.send_bytes(pickle.dumps(("ready", pids, self.worker_hosts)))
        forwarder = threading.Thread(target=self._forward, name="forward", daemon=True)
        forwarder.start()
        orderly = self._read()
        self._stop(orderly)
        try:  # the forwarder's stop sign, after every result and death notice; it drains even with no pilot
            self.outbox.put(b"", timeout=STOP_GRACE_S)
        except queue.Full:
            pass
        forwarder.join(timeout=STOP_GRACE_S)
        if orderly:
            try:
                self.conn.send_bytes(pickle.dumps(("bye",)))
            except OSError:
                pass
        self.conn.close()
        for worker in self.workers.values():
            _destroy(worker.inbox)
        _destroy(self.outbox)
        if not orderly:  # the pilot is gone and cannot remove its private directory
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)
        return 0

    # -------------------------------------------------------------- pilot -> server
    def _read(self) -> bool:
        """Serve the pilot's requests; True for an orderly stop, False if the pilot went away."""
        while True:
            try:
                message = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                return False
            what = message[0]
            if what == "run":
                _, wid, batch = message
                worker = self.workers.get(wid)
                if worker is not None:
                    try:
                        worker.inbox.put(batch)
                    except Exception:  # noqa: BLE001 - the worker died meanwhile, or the pool is full:
                        worker.kill()  # either way its death notice makes the pilot requeue the batch
            elif what == "kill":
                worker = self.workers.get(message[1])
                if worker is not None:
                    worker.kill()
            elif what == "stop":
                self.kill_on_stop = bool(message[1]) if len(message) > 1 else False
                return True

    # -------------------------------------------------------------- server -> pilot
    def _forward(self) -> None:
        """Results and notices to the pilot, many per message, until the stop sign. If the pilot has gone
        it goes on draining (and dropping): a worker or the stop sign must never wait on a full outbox."""
        get, conn = self.outbox.get, self.conn
        connected = True
        while True:
            item = get()
            items = [item]
            while len(items) < FORWARD_MAX_ITEMS:
                try:
                    items.append(self.outbox.get(block=False))
                except queue.Empty:
                    break
            last = not items[-1]
            if last:
                items.pop()
            if items and connected:
                try:
                    conn.send_bytes(pickle.dumps(("out", items), protocol=pickle.HIGHEST_PROTOCOL))
                except OSError:
                    connected = False
            if last:
                return

    # -------------------------------------------------------------- workers
    def _start_workers(self, n: int) -> dict[int, int]:
        """Start ``n`` workers and wait until each has said it is up (imports done): {wid: pid}."""
        # Process.start() waits for global services: overlap those round trips
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(n, 8)) as pool:
            for future in [pool.submit(self._start_worker) for _ in range(n)]:
                future.result()
        pids: dict[int, int] = {}
        while len(pids) < n:
            notice = pickle.loads(self.outbox.get()[len(CONTROL) :])
            if notice[0] == "died":  # before it was up: its replacement's "up" follows
                continue
            _, wid, pid, host = notice
            pids[wid] = pid
            self.worker_hosts[wid] = host
        return pids

    def _start_worker(self, host: str = "") -> int:
        from dragon.infrastructure.policy import Policy
        from dragon.native.process import Process

        with self.lock:
            wid = self.next_wid
            self.next_wid += 1
        host = host or (self.hosts[wid] if wid < len(self.hosts) else "")
        inbox = self._Queue(maxsize=self.sizes["inbox_capacity"], block_size=self.sizes["inbox_block_bytes"])
        progress = os.path.join(self.directory, f"progress.{wid}")
        with open(progress, "wb") as handle:
            handle.write(TOKEN.pack(-1))
        policy = Policy(placement=Policy.Placement.HOST_NAME, host_name=host) if host else None
        process = Process(target=worker_main, args=(wid, inbox, self.outbox, progress, self.setup), policy=policy)
        process.start()
        worker = _Worker(process, inbox, progress)
        with self.lock:
            self.workers[wid] = worker
        threading.Thread(target=self._watch, args=(wid, worker, host), name=f"watch-{wid}", daemon=True).start()
        return wid

    def _watch(self, wid: int, worker: _Worker, host: str = "") -> None:
        """Wait for the worker to exit; if it was not asked to, report it and start a replacement."""
        process, inbox, progress = worker.process, worker.inbox, worker.progress
        try:
            code = worker.exit_code = process.join()
        except Exception:  # noqa: BLE001 - the runtime is going down
            return
        finally:
            worker.gone.set()
        if self.stopping:
            return
        with self.lock:
            self.workers.pop(wid, None)
        try:
            with open(progress, "rb") as handle:
                running = TOKEN.unpack(handle.read(TOKEN.size))[0]
            os.unlink(progress)
        except (OSError, struct.error):
            running = -1
        # the notice follows the worker's last results in the outbox and names the call it
        # was running, so the pilot fails that call only
        self.outbox.put(CONTROL + pickle.dumps(("died", wid, code, running)))
        _destroy(inbox)
        if not self.stopping:
            self._start_worker(host)  # on the same node; its ("up", wid, pid, host) notice tells the pilot

    def _stop(self, orderly: bool) -> None:
        self.stopping = True
        with self.lock:
            workers = list(self.workers.values())
        if orderly and not self.kill_on_stop:
            for worker in workers:
                try:
                    worker.inbox.put(None, timeout=1.0)
                except Exception:  # noqa: BLE001 - a full inbox: the kill below ends it
                    pass
            deadline = time.monotonic() + STOP_GRACE_S
            for worker in workers:
                worker.gone.wait(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if not worker.gone.is_set():
                worker.kill()
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in workers:
            worker.gone.wait(max(0.0, deadline - time.monotonic()))


class _Worker:
    """A worker as the server holds it: its process, its inbox, its progress file, whether it is gone."""

    def __init__(self, process: Any, inbox: Any, progress: str) -> None:
        self.process = process
        self.inbox = inbox
        self.progress = progress
        self.gone = threading.Event()  # its exit has been seen
        self.exit_code: int | None = None
        self._killing = False

    def kill(self) -> None:
        """Kill it, never inside a queue operation (:mod:`.safekill`): asked once, and its inbox told, for
        a worker that waits in it for work; a thread waits for its lock. Returns at once."""
        if self._killing or self.gone.is_set():
            return
        self._killing = True
        try:
            self.inbox.put(KILL, timeout=0)
        except Exception:  # noqa: BLE001 - a full inbox: the worker is not waiting in it
            pass
        threading.Thread(
            target=kill_outside_comms,
            args=(self.progress, lambda: _kill(self.process), self.gone),
            name="kill",
            daemon=True,
        ).start()


def worker_main(wid: int, inbox: Any, outbox: Any, progress_path: str, setup: WorkerSetup) -> None:
    """One Dragon-managed worker: run batches of calls, send their results in order.

    Results are sent in batches: at the end of each input batch, and by a flusher
    thread once the oldest unsent result is FLUSH_S old, so a long call never
    holds back the results of the short ones before it. Before each call the
    worker writes its token to a small shared file: if the worker dies, the
    server reads it and the pilot fails that call only.
    """
    import mmap

    from impeccable.runtime.calls import run_call

    setup.apply()  # before "up": the first calls do not pay for torch and RDKit

    progress_fd = os.open(progress_path, os.O_RDWR)  # open for the worker's life: its CommsGuard's lock
    progress = mmap.mmap(progress_fd, TOKEN.size)
    comms = CommsGuard(progress_fd)  # held across every queue operation: a kill never lands inside one
    results = _Results(outbox, comms)
    loads, dumps, pack, pack_into = pickle.loads, pickle.dumps, TOKEN.pack, TOKEN.pack_into
    with comms:
        outbox.put(CONTROL + dumps(("up", wid, os.getpid(), socket.gethostname())))  # the node it really runs on
    add = results.add
    while True:
        with comms:
            data = inbox.get()
        if data is None or data == KILL:
            results.flush()
            if data is None:
                return
            pack_into(progress, 0, -1)  # no call running: every call before it has its result sent
            os._exit(KILLED_EXIT)
        for token, reference, args, kwargs, env in loads(data):
            pack_into(progress, 0, token)
            add(pack(token) + run_call(token, reference, args, kwargs, env)[1])
        results.flush()


class _Results:
    """A worker's unsent results; sent by the worker at batch end or by a flusher thread."""

    def __init__(self, outbox: Any, comms: CommsGuard) -> None:
        self.outbox = outbox
        self.comms = comms
        self.items: list[bytes] = []
        self.oldest = 0.0
        self.lock = threading.Condition()
        threading.Thread(target=self._flusher, name="flush", daemon=True).start()

    def add(self, item: bytes) -> None:
        with self.lock:
            if not self.items:
                self.oldest = time.monotonic()
                self.lock.notify()
            self.items.append(item)

    def flush(self) -> None:
        with self.lock:
            self._send()

    def _send(self) -> None:  # with the lock held, so that batches leave in order
        if self.items:
            data = pickle.dumps(self.items, protocol=pickle.HIGHEST_PROTOCOL)
            with self.comms:
                self.outbox.put(data)
            self.items = []

    def _flusher(self) -> None:
        with self.lock:
            while True:
                if not self.items:
                    self.lock.wait()
                    continue
                age = time.monotonic() - self.oldest
                if age < FLUSH_S:
                    self.lock.wait(FLUSH_S - age)
                    continue
                self._send()


def _kill(process: Any) -> None:
    try:
        process.kill()
    except Exception:  # noqa: BLE001 - already gone
        pass


def _destroy(q: Any) -> None:
    try:
        q.destroy()
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    # run as ``python -m impeccable.runtime.backends.dragon.server`` by the launcher; call the importable
    # module's main (not this __main__ copy), so that cloudpickle sends worker_main to the workers
    # by reference
    import dragon  # noqa: F401 - registers Dragon's multiprocessing start method and native objects

    from impeccable.runtime.backends.dragon.server import main as _main

    sys.exit(_main())
