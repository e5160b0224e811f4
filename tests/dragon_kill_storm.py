"""Run under the ``dragon`` launcher by test_dragon.py: workers killed while they stream results.

Two real server workers (``server.worker_main``) are fed batches of null calls without pause, so
they spend most of their time sending results into the shared outbox, which a thread drains. Every
50 ms one of them is killed the way the server kills (``_Worker.kill``: never inside a queue
operation) and replaced. After each kill the outbox must keep moving, the other worker's results
still arriving. Then a worker waiting for work is killed: it must exit by itself on the KILL in its
inbox (exit code 137, no progress token left). ``--raw`` kills with a bare SIGKILL instead (what the server did before; it wedged
the outbox within a few kills). Prints ``ok: ...`` and exits 0, or says where it wedged and exits 3.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import sys
import tempfile
import threading
import time

from impeccable.runtime.backends.dragon import server
from impeccable.runtime.calls import WorkerSetup

CALLS_PER_BATCH = 200


def main(kills: int, raw: bool) -> int:
    from dragon.native.process import Process
    from dragon.native.queue import Queue

    directory = tempfile.mkdtemp(prefix="impeccable-kill-storm-")
    outbox = Queue(maxsize=1024)
    received = [0]
    threading.Thread(target=_drain, args=(outbox, received), daemon=True).start()
    batch = pickle.dumps([(t, "impeccable.runtime.probes:echo", (t,), {}, {}) for t in range(CALLS_PER_BATCH)])

    def start(wid: int, fed: bool = True) -> server._Worker:
        inbox = Queue(maxsize=16)
        progress = os.path.join(directory, f"progress.{wid}")
        with open(progress, "wb") as handle:
            handle.write(server.TOKEN.pack(-1))
        process = Process(target=server.worker_main, args=(wid, inbox, outbox, progress, WorkerSetup()))
        process.start()
        worker = server._Worker(process, inbox, progress)
        threading.Thread(target=_watch, args=(worker,), daemon=True).start()
        if fed:
            threading.Thread(target=_feed, args=(worker, batch), daemon=True).start()
        return worker

    workers = [start(0), start(1)]
    for k in range(kills):
        time.sleep(0.05)
        victim = workers[k % 2]
        if raw:
            server._kill(victim.process)
        else:
            victim.kill()
        if not victim.gone.wait(30):
            print(f"kill {k}: the worker did not die within 30 s", flush=True)
            return 3
        before = received[0]
        deadline = time.monotonic() + 5
        while received[0] == before and time.monotonic() < deadline:
            time.sleep(0.01)
        if received[0] == before:
            print(f"kill {k}: the outbox is wedged ({before} results received, none in 5 s since)", flush=True)
            return 3
        workers[k % 2] = start(k + 2)
    for worker in workers:  # the runtime ends only once every process has
        worker.kill()
        worker.gone.wait(30)
    idle = start(kills + 2, fed=False)
    time.sleep(3)  # up, and waiting in inbox.get (holding its lock)
    idle.kill()
    if not idle.gone.wait(30) or idle.exit_code != server.KILLED_EXIT:
        print(f"the idle worker did not exit on KILL (gone: {idle.gone.is_set()}, code {idle.exit_code})", flush=True)
        return 3
    with open(idle.progress, "rb") as handle:
        token = server.TOKEN.unpack(handle.read(server.TOKEN.size))[0]
    print(
        f"ok: {kills} kills, {received[0]} result batches received; idle worker exited {idle.exit_code}, token {token}"
    )
    return 0


def _drain(outbox: object, received: list[int]) -> None:
    while True:
        outbox.get()  # type: ignore[attr-defined]
        received[0] += 1


def _watch(worker: server._Worker) -> None:
    worker.exit_code = worker.process.join()
    worker.gone.set()


def _feed(worker: server._Worker, batch: bytes) -> None:
    while not worker.gone.is_set():
        try:
            worker.inbox.put(batch, timeout=0.5)
        except queue.Full:
            continue
        except Exception:  # noqa: BLE001 - the worker is gone and its inbox with it
            return


if __name__ == "__main__":
    import dragon  # noqa: F401 - registers Dragon's start method and native objects

    multiprocessing.set_start_method("dragon")
    code = main(int(sys.argv[1]), "--raw" in sys.argv)
    sys.stdout.flush()
    os._exit(code)  # the drain and feed threads block in Dragon calls
