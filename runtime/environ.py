"""The process environment changed for a while and put back: a call's ``CUDA_VISIBLE_DEVICES``, the
``SLURM_JOB_*`` variables of an allocation held for a comparison."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set; each name restored (or removed) on exit, whatever happened."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
