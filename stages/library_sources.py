"""A library as chemists assemble one: several named sources, each a file, a list of files, a glob or a folder.

Every compound keeps where it came from: its source's name and its id in that
source (the vendor's catalogue id). With one unnamed source (``library.path``)
the campaign id is the file's id, as before; with named sources
(``[[library.sources]]``) it is ``<source>:<id>``, so two catalogues that reuse
an id (in-house numbers often do) never collide.

Streaming as :mod:`.library`: one record at a time over the files in order.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .errors import StageInputError
from .library import COMPRESSIONS, LIBRARY_SUFFIXES, LibraryScan, SkipHandler, numbered_records

__all__ = ["LibrarySource", "SourcedRecord", "expand_paths", "iter_sources", "scan_sources"]


@dataclass(frozen=True)
class LibrarySource:
    """One named source: its files in reading order and the columns (or SDF property) of id and SMILES."""

    name: str
    paths: tuple[Path, ...]
    id_column: str = "id"
    smiles_column: str = "smiles"

    @classmethod
    def from_spec(
        cls,
        name: str,
        spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        id_column: str = "id",
        smiles_column: str = "smiles",
    ) -> LibrarySource:
        return cls(name, tuple(expand_paths(spec)), id_column, smiles_column)


class SourcedRecord(NamedTuple):
    """A compound as the campaign names it (``id``), with its SMILES as read and where it came from."""

    id: str
    smiles: str
    source: str
    source_id: str


def expand_paths(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files of a path, a glob (``chunks/*.cxsmiles.bz2``), a folder (its library files, sorted) or a list of these.

    Raises StageInputError naming the entry that matched nothing.
    """
    entries = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    files: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if glob.has_magic(str(path)):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_library_file(p))
        elif path.is_file():
            found = [path]
        else:
            raise StageInputError(f"file {path} not found")
        if not found:
            raise StageInputError(
                f"{path}: no library files here (expected {', '.join(LIBRARY_SUFFIXES)}, "
                f"optionally {', '.join(COMPRESSIONS)})"
            )
        files.extend(found)
    return files


def _is_library_file(path: Path) -> bool:
    name = path.name.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    return name.endswith(tuple(LIBRARY_SUFFIXES))


def iter_sources(
    sources: Sequence[LibrarySource], *, prefix: bool, on_skip: SkipHandler | None = None
) -> Iterator[SourcedRecord]:
    """Every record of every source in order; ids are ``<source>:<id>`` when ``prefix``."""
    for _, _, record in numbered_sources(sources, prefix=prefix, on_skip=on_skip):
        yield record


def numbered_sources(
    sources: Sequence[LibrarySource], *, prefix: bool, on_skip: SkipHandler | None = None
) -> Iterator[tuple[Path, int, SourcedRecord]]:
    """:func:`iter_sources` with each record's file and line (or SDF record) number."""
    for source in sources:
        head = f"{source.name}:" if prefix else ""
        for path in source.paths:
            for line, rec in numbered_records(
                path, id_column=source.id_column, smiles_column=source.smiles_column, on_skip=on_skip
            ):
                yield path, line, SourcedRecord(head + rec.id, rec.smiles, source.name, rec.id)


def scan_sources(sources: Sequence[LibrarySource], *, prefix: bool, limit: int | None = None) -> LibraryScan:
    """Count the records (the first ``limit``) of all sources and refuse an id used twice (naming both places).

    Memory: 8 bytes per record, as :func:`.library.scan_library`.
    """
    scan = LibraryScan()
    repeated = scan.count_ids(
        (rec.id for _, _, rec in numbered_sources(sources, prefix=prefix, on_skip=scan.skip)), limit
    )
    if repeated:
        seen: dict[str, tuple[Path, int]] = {}
        for i, (path, line, record) in enumerate(numbered_sources(sources, prefix=prefix)):
            if i >= scan.count:
                break
            if hash(record.id) in repeated:
                if record.id in seen:
                    first, first_line = seen[record.id]
                    where = f"line {first_line}" if first == path else f"{first}:{first_line}"
                    raise StageInputError(
                        f"{path}:{line}: id {record.id!r} is also on {where}: every compound needs "
                        "its own id (results are stored by id); rename or remove one of the two"
                    )
                seen[record.id] = (path, line)
    return scan
