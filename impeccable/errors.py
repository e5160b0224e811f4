"""Errors the command line reports as one line (``error: ...``, exit 2) without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; printed as one line."""
