"""Small importable functions for smoke tests, benchmarks and backend checks.

Function tasks name a module-level callable (``"module:qualname"``) that the
worker process imports, so test and diagnostic functions live here rather than
in test modules or ``__main__``.
"""

from __future__ import annotations

import os
import time


def add(a: float, b: float) -> float:
    return a + b


def fail(message: str = "probe failure") -> None:
    """Raise, to check that an exception and its traceback come back."""
    raise ValueError(message)


def hard_exit(code: int = 3) -> None:
    """Leave the worker process without cleanup, as a crash in native code would."""
    os._exit(code)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def env_value(name: str) -> str | None:
    return os.environ.get(name)


def pid() -> int:
    return os.getpid()


def fail_until(marker_dir: str, successes_after: int) -> int:
    """Fail the first ``successes_after`` calls, then succeed; counts attempts in marker files.

    Attempts are counted on disk because each retry may run in another process.
    """
    os.makedirs(marker_dir, exist_ok=True)
    attempt = len(os.listdir(marker_dir)) + 1
    with open(os.path.join(marker_dir, f"attempt.{attempt}"), "w"):
        pass
    if attempt <= successes_after:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return attempt


def echo(value: object) -> object:
    """Return the argument: a round trip of arguments and results through the pilot."""
    return value


def sleep_pid(seconds: float) -> int:
    """Sleep, then say which process ran the call: how many workers a wave of calls was spread over."""
    time.sleep(seconds)
    return os.getpid()


def imported(module: str) -> bool:
    """Whether the worker has ``module`` imported already (what its preload did), without importing it."""
    import sys

    return module in sys.modules
