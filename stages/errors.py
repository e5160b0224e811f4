"""Errors the science stages raise for bad input.

A stage never crashes a batch on one bad molecule; it raises these only for
inputs that make the whole call meaningless (an empty library, a receptor that
is not a protein). The message always names the input and what was expected.
"""


class StageInputError(ValueError):
    """An input file, molecule or parameter a stage cannot use; the message names it."""
