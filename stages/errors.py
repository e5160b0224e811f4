"""Errors the science stages raise for bad input.

A stage never crashes a batch on one bad molecule; it raises these only for
inputs that make the whole call meaningless (an empty library, a receptor that
is not a protein). The message always names the input and what was expected.
"""

import sys
from collections.abc import Callable


class StageInputError(ValueError):
    """An input file, molecule or parameter a stage cannot use; the message names it."""


def exit_code(body: Callable[[], object]) -> int:
    """Run a stage's command-line body: 0 when it returns, 2 with one ``error: ...`` line for bad input."""
    try:
        body()
    except StageInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
