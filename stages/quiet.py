"""Silencing RDKit's stderr chatter while a stage reports molecule failures as values instead.

One re-entrant switch for the whole process: nested and repeated uses (a docking batch calling ligand
preparation calling the filters) turn logging back on exactly once, when the outermost block ends, and
no caller leaves it off for good.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rdkit import RDLogger

_lock = threading.Lock()
_depth = 0


@contextmanager
def quiet_rdkit() -> Iterator[None]:
    global _depth
    with _lock:
        if _depth == 0:
            RDLogger.DisableLog("rdApp.*")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                RDLogger.EnableLog("rdApp.*")
