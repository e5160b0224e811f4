"""A docking rank's result file: one JSON line per molecule, each line on disk as soon as its molecule is done.

Why line by line: a docking task can be killed at any instant (Ctrl-C of the
campaign, a time limit, ``kill -9``). Every molecule it finished must stay
usable, so each line is written and flushed as its molecule ends, and a reader
takes every *complete* line (one that ends with a newline); a line cut short by
the kill is the one molecule that is docked again. Nothing here imports RDKit
or Vina: the campaign manager reads these files, and so can a light test payload.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import StageInputError

__all__ = ["rank_file", "rank_files", "read_rank_files", "RankLines"]


def rank_file(out_dir: str | os.PathLike[str], rank: int) -> Path:
    """The JSON-lines file of one rank: ``OUT_DIR/dock.rank{rank}.jsonl``."""
    return Path(out_dir) / f"dock.rank{rank}.jsonl"


def rank_files(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Every rank's file in ``out_dir``, rank 0 first."""
    return sorted(Path(out_dir).glob("dock.rank*.jsonl"), key=_rank_of)


def read_rank_files(out_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the record of every complete line of every rank file in ``out_dir``, rank 0 first.

    A last line without its newline is a molecule whose rank was stopped while writing it: left out.
    A complete line that is not JSON raises StageInputError naming the file and line.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise StageInputError(f"{out_dir}: docking output folder not found")
    for path in rank_files(out_dir):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.endswith("\n") or not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise StageInputError(f"{path}:{line_no}: not JSON: {exc}") from None


class RankLines:
    """Write one rank's lines to ``path``, each flushed as it is written; the file appears with its first line.

    A rank that fails before its first molecule leaves no file. ``fsync`` at the end makes the finished
    file survive a machine crash too; a killed process leaves what it flushed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._handle: IO[str] | None = None

    def __enter__(self) -> RankLines:
        return self

    def write(self, record: dict[str, Any]) -> None:
        """One molecule's record as one line, on disk (in the page cache) when this returns."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "w", encoding="utf-8")
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._handle is None:
            return
        try:
            if exc_type is None:
                os.fsync(self._handle.fileno())
        finally:
            self._handle.close()


def _rank_of(path: Path) -> int:
    digits = path.name.removeprefix("dock.rank").removesuffix(".jsonl")
    return int(digits) if digits.isdigit() else -1
