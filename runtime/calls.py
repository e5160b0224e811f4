"""One function call run and its outcome framed for the way back: the one place where a call executes.

Used by the local workers (``worker.py``), the Dragon workers (``backends/dragon/server.py``) and a function task run as
a process of its own (``run_function.py``, the srun baseline). The frame is the pickled tuple
``(token, ok, payload, started, finished)``: ``payload`` is the return value, or for a failure
``(exception or None, "Type: message", traceback text)``; times are ``time.time()``. An exception that pickles
but cannot be rebuilt travels as None beside its text, and a value that cannot be pickled fails its call.
Standard library only, so that a process started for one call pays nothing for this module.
"""

from __future__ import annotations

import importlib
import os
import pickle
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .environ import patched_environ

_resolved: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class WorkerSetup:
    """What a persistent worker (local or Dragon) does once, before its first call: ignore Ctrl-C (the pilot
    decides when workers stop), set ``env`` (which device each GPU slot is: a forkserver's environment may
    predate this pilot) and import ``preload``, so that the first calls do not pay for torch and RDKit. A
    module that cannot be imported is passed over: the task that needs it says so."""

    preload: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def apply(self) -> None:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.environ.update(self.env)
        for module in self.preload:
            try:
                importlib.import_module(module)
            except ImportError:
                pass


def resolve(reference: str) -> Callable[..., Any]:
    """The callable named ``"module:qualname"``; ImportError/AttributeError/TypeError with the reason."""
    module_name, _, qualname = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{reference} is not callable")
    return obj


def resolve_cached(reference: str) -> Callable[..., Any]:
    """:func:`resolve`, once per reference in this process (a worker runs thousands of calls of one function)."""
    fn = _resolved.get(reference)
    if fn is None:
        fn = _resolved[reference] = resolve(reference)
    return fn


def run_call(token: Any, reference: str, args: tuple, kwargs: dict, env: dict[str, str] | None) -> tuple[bool, bytes]:
    """Run one call (with ``env`` set in ``os.environ`` while it runs, if given): (whether it returned, its frame)."""
    started = time.time()
    try:
        fn = resolve_cached(reference)
        if env:
            with patched_environ(env):
                result = fn(*args, **kwargs)
        else:
            result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - a task's exception is its result, not the worker's crash
        return False, failure(token, exc, started)
    try:
        return True, pickle.dumps((token, True, result, started, time.time()), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - the value cannot travel back
        return False, failure(token, exc, started, prefix="result cannot be pickled: ")


def failure(token: Any, exc: BaseException, started: float, prefix: str = "") -> bytes:
    """The frame of a failed call: the exception itself where it survives a pickle round trip."""
    text = f"{prefix}{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    try:
        payload = pickle.dumps((token, False, (exc, text, trace), started, time.time()))
        pickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
        return payload
    except Exception:  # noqa: BLE001
        return pickle.dumps((token, False, (None, text, trace), started, time.time()))
