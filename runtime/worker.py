"""A persistent function worker: receives batches of calls, sends one result per call.

The wire format is pickle over a private pipe (``multiprocessing.connection``)
that only the parent holds, so nothing outside the pilot can feed it.
Results go back one per call, in order, so that when a worker dies the parent
knows exactly which call killed it: the first one it has no result for.

The first message out is :data:`READY`, raw bytes, once the worker can take calls.
Message in:  a list of ``(token, "module:qualname", args, kwargs, env)``, or None to stop.
Message out: ``(token, ok, payload, started, finished)`` where payload is the
return value, or for a failure ``(exception or None, "Type: message", traceback text)``.
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
from typing import Any

from .environ import patched_environ
from .task import resolve_function

READY = b"impeccable-worker-ready"


def serve(conn: Any) -> None:
    """Run calls until told to stop or the parent goes away."""
    recv, send = conn.recv_bytes, conn.send_bytes
    loads, dumps = pickle.loads, pickle.dumps
    now = time.time
    send(READY)
    while True:
        try:
            batch = loads(recv())
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for token, reference, args, kwargs, env in batch:
            started = now()
            try:
                fn = resolve_function(reference)
                if env:
                    result = _call_with_env(fn, args, kwargs, env)
                else:
                    result = fn(*args, **kwargs)
                message = (token, True, result, started, now())
                try:
                    data = dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # the result cannot travel back
                    data = _failure(token, exc, started, prefix="result cannot be pickled: ")
            except BaseException as exc:  # noqa: BLE001 - a task's exception is a result, not our crash
                data = _failure(token, exc, started)
            send(data)


def _call_with_env(fn: Any, args: tuple, kwargs: dict, env: dict[str, str]) -> Any:
    """Run with extra environment (e.g. CUDA_VISIBLE_DEVICES) and restore it afterwards."""
    with patched_environ(env):
        return fn(*args, **kwargs)


def _failure(token: Any, exc: BaseException, started: float, prefix: str = "") -> bytes:
    text = f"{prefix}{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    try:
        payload = pickle.dumps((token, False, (exc, text, trace), started, time.time()))
        pickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
        return payload
    except Exception:
        return pickle.dumps((token, False, (None, text, trace), started, time.time()))


def main(conn: Any, preload: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
    """Process entry point: ignore Ctrl-C (the pilot decides when workers stop), set ``env`` (which device each
    GPU slot is: the forkserver's environment may predate this pilot), import ``preload`` before serving.
    Instant when the forkserver already imported them; the forkserver is one per interpreter and takes its
    preload list only when it starts, so a later pool with other modules needs this."""
    import importlib
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env or {})
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError:  # as the forkserver does: a task that needs it will say so
            pass
    serve(conn)
