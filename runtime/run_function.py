"""Run one function task as its own process, the way a script-based campaign does.

    python -m impeccable.runtime.run_function module:qualname [--args ARGS.pkl] --result OUT.pkl

``ARGS.pkl`` holds the pickled ``(args, kwargs)`` (absent: no arguments).
``OUT.pkl`` receives the call's frame as a worker sends it (:mod:`~.calls`:
``(None, ok, value, started, finished)``). It is written to a temporary name
and renamed, so a reader never sees half a result.

Exit status: 0 the function returned, 1 it raised (or its result cannot be
pickled), 2 the command line or the argument file is wrong.

This module and :mod:`~.calls` import only the standard library, so a process
start costs the interpreter and the function's own imports only.
"""

from __future__ import annotations

import os
import pickle
import sys

from .calls import run_call

USAGE = "usage: python -m impeccable.runtime.run_function module:qualname [--args ARGS.pkl] --result OUT.pkl"


def main(argv: list[str]) -> int:
    try:
        reference, args_path, result_path = _parse(argv)
    except ValueError as exc:
        print(f"run_function: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        args, kwargs = _load_arguments(args_path)
    except Exception as exc:  # noqa: BLE001 - reported as a usage error with the reason
        print(
            f"run_function: cannot read the arguments from {args_path!r}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 2
    ok, data = run_call(None, reference, args, kwargs, None)
    _write(result_path, data)
    return 0 if ok else 1


def _parse(argv: list[str]) -> tuple[str, str | None, str]:
    if not argv or ":" not in argv[0]:
        raise ValueError("the first argument must be the function as module:qualname")
    reference, rest = argv[0], argv[1:]
    options: dict[str, str] = {}
    while rest:
        flag = rest.pop(0)
        if flag not in ("--args", "--result") or not rest:
            raise ValueError(f"unexpected argument {flag!r}")
        options[flag] = rest.pop(0)
    if "--result" not in options:
        raise ValueError("--result OUT.pkl is required")
    return reference, options.get("--args"), options["--result"]


def _load_arguments(path: str | None) -> tuple[tuple, dict]:
    if path is None:
        return (), {}
    with open(path, "rb") as handle:
        args, kwargs = pickle.load(handle)
    return tuple(args), dict(kwargs)


def _write(path: str, data: bytes) -> None:
    partial = f"{path}.partial"
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
