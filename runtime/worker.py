"""A persistent function worker: receives batches of calls, sends one result per call.

The wire format is pickle over a private pipe (``multiprocessing.connection``)
that only the parent holds, so nothing outside the pilot can feed it.
Results go back one per call, in order, so that when a worker dies the parent
knows exactly which call killed it: the first one it has no result for.

The first message out is :data:`READY`, raw bytes, once the worker can take calls.
Message in:  a list of ``(token, "module:qualname", args, kwargs, env)``, or None to stop.
Message out: one frame per call, made by :func:`~.calls.run_call`.
"""

from __future__ import annotations

import pickle
from typing import Any

from .calls import WorkerSetup, run_call

READY = b"impeccable-worker-ready"


def serve(conn: Any) -> None:
    """Run calls until told to stop or the parent goes away."""
    recv, send, loads = conn.recv_bytes, conn.send_bytes, pickle.loads
    send(READY)
    while True:
        try:
            batch = loads(recv())
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for token, reference, args, kwargs, env in batch:
            send(run_call(token, reference, args, kwargs, env)[1])


def main(conn: Any, setup: WorkerSetup = WorkerSetup()) -> None:
    """Process entry point: ``setup`` (its imports are instant where the forkserver already made them; the
    forkserver is one per interpreter and takes its preload list only when it starts, so a later pool with
    other modules needs them), then serve."""
    setup.apply()
    serve(conn)
