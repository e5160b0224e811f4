"""Writing result files so that they appear complete or not at all, and say why when they cannot.

A file is written to a temporary name in its own folder, flushed to disk and
renamed over the target: a reader (or a resumed run) never sees half a file.
A full disk is reported as such, naming the file, rather than as whatever
the writing library makes of a short write.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class DiskFullError(OSError):
    """No space left for a result file; the message names the file and the folder."""


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: int = 0o644, fsync: bool = True, binary: bool = False
) -> Iterator[IO[Any]]:
    """A file handle whose content appears at ``path`` only when the block ends without error.

    For results written a piece at a time (a docking rank's lines, a library); DiskFullError names the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                exc.errno, f"disk full: cannot write {path} in {path.parent}: free some space or move the run directory"
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path. Raises DiskFullError when the disk is full."""
    with atomic_writer(path, mode, fsync, binary=True) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: object) -> Path:
    """``data`` as indented JSON, atomically (a command's ``--json`` output, a stage's result)."""
    return write_atomic(path, json.dumps(data, indent=2) + "\n")
