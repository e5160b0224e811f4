"""Compound libraries read as a stream of (id, smiles) records.

A screening library can hold millions of molecules, so every function here
streams: it reads one line at a time and keeps at most the records it returns
(a sample, or nothing at all for a shard). Formats, chosen by file name:

- ``.csv`` / ``.csv.gz``: a header row; the id and SMILES columns are found by
  name (case-insensitive, ``id`` and ``smiles`` unless told otherwise).
- ``.smi`` / ``.smi.gz``: ``SMILES<whitespace>ID`` per line; ``#`` comments and
  a first line starting with the word ``smiles`` are skipped.
- ``.tsv`` / ``.cxsmiles`` (Enamine REAL): tab-separated with a header, read like
  ``.csv``; a CXSMILES extension (``C[C@H](N)O |&1:1|``) stays with the SMILES.
- ``.sdf`` and ``.parquet``: see :mod:`.library_formats` (bad SDF records are
  skipped with their record number, never fatal).

Any of them may be compressed: ``.gz``, ``.bz2`` (Enamine's), ``.zst``.

A malformed row raises :class:`StageInputError` naming the file and line; a row
with an empty id or SMILES is skipped with a reason (one bad row must not cost
a million-compound screen); an unparsable SMILES is *not* the reader's business
(ligand preparation reports it per molecule).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import random
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple, TextIO

import numpy as np

from ..fileio import atomic_writer
from .errors import StageInputError

__all__ = [
    "LibraryRecord",
    "read_library",
    "numbered_records",
    "scan_library",
    "LibraryScan",
    "count_records",
    "sample_records",
    "sample_library",
    "iter_shard",
    "write_library",
]


class LibraryRecord(NamedTuple):
    """One compound of a library: a stable id and its SMILES as written in the file."""

    id: str
    smiles: str


SkipHandler = Callable[[int, str, str], None]
"""Called as ``on_skip(line, id, reason)`` for a row that is skipped (``id`` may be empty)."""


def read_library(
    path: str | os.PathLike[str],
    *,
    id_column: str = "id",
    smiles_column: str = "smiles",
    on_skip: SkipHandler | None = None,
) -> Iterator[LibraryRecord]:
    """Yield the records of a library file in file order, one line at a time.

    A row with an empty id or SMILES is skipped (``on_skip`` hears of it, with its
    line and the reason). Raises StageInputError (naming the file, and the line where
    there is one) for a missing file, a missing column, a malformed row, or a library
    with no records at all (raised when the stream ends).
    """
    return map(itemgetter(1), numbered_records(path, id_column=id_column, smiles_column=smiles_column, on_skip=on_skip))


def numbered_records(
    path: str | os.PathLike[str],
    *,
    id_column: str = "id",
    smiles_column: str = "smiles",
    on_skip: SkipHandler | None = None,
) -> Iterator[tuple[int, LibraryRecord]]:
    """:func:`read_library` with each record's line number in the file (1-based, the header is line 1)."""
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"{path}: library file not found")
    kind = _library_kind(path)
    skipped = 0

    def skip(line: int, cid: str, reason: str) -> None:
        nonlocal skipped
        skipped += 1
        if on_skip is not None:
            on_skip(line, cid, reason)

    with contextlib.ExitStack() as stack:
        if kind in ("sdf", "parquet"):
            from .library_formats import parquet_rows, sdf_rows

            read = sdf_rows if kind == "sdf" else parquet_rows
            rows = ((n, LibraryRecord(cid, smi)) for n, cid, smi in read(path, id_column, smiles_column, skip))
        else:
            handle = stack.enter_context(_open_text(path))
            rows = (
                _csv_rows(path, handle, id_column, smiles_column, skip, delimiter="\t" if kind == "tsv" else ",")
                if kind in ("csv", "tsv")
                else _smi_rows(path, handle, skip)
            )
        first = next(rows, None)
        if first is not None:
            yield first
            yield from rows  # a million rows: no Python step of ours between them and the caller
    if first is None:
        why = f"; {skipped} row(s) skipped for an empty id or SMILES" if skipped else ""
        raise StageInputError(f"{path}: library is empty (no compound records{why})")


@dataclass
class LibraryScan:
    """What one pass over a library found: how many records, and which rows were skipped and why."""

    count: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (line, id, reason), the first 1,000
    skipped_count: int = 0

    def skip(self, line: int, cid: str, reason: str) -> None:
        """An ``on_skip`` handler: counts every skipped row, keeps the first 1,000."""
        self.skipped_count += 1
        if len(self.skipped) < 1000:
            self.skipped.append((line, cid, reason))

    def count_ids(self, ids: Iterable[str], limit: int | None = None) -> set[int]:
        """Count ``ids`` (the first ``limit``); returns the hashes that occur more than once (8 bytes per id)."""
        hashes = array("q")
        for cid in ids:
            if limit is not None and self.count >= limit:
                break
            hashes.append(hash(cid))
            self.count += 1
        ordered = np.sort(np.frombuffer(hashes, dtype=np.int64))
        return set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())


def scan_library(
    path: str | os.PathLike[str], *, id_column: str = "id", smiles_column: str = "smiles", limit: int | None = None
) -> LibraryScan:
    """Count the records (the first ``limit`` only, if given) and refuse duplicate ids.

    Two rows with one id would attach one molecule's results to the other's SMILES,
    so they raise StageInputError naming both lines. Memory: 8 bytes per record (a
    hash of each id); the lines of a repeated id are found by a second pass.
    """
    scan = LibraryScan()
    columns = {"id_column": id_column, "smiles_column": smiles_column}
    repeated = scan.count_ids((record.id for _, record in numbered_records(path, on_skip=scan.skip, **columns)), limit)
    if repeated:
        _refuse_duplicates(Path(path), repeated, scan.count, columns)
    return scan


def _refuse_duplicates(path: Path, repeated: set[int], count: int, columns: dict[str, str]) -> None:
    """Find the lines of the ids whose hashes repeat; raise for the first id that really repeats."""
    first_line: dict[str, int] = {}
    for i, (line, record) in enumerate(numbered_records(path, **columns)):
        if i >= count:
            return
        if hash(record.id) not in repeated:
            continue
        if record.id in first_line:
            raise StageInputError(
                f"{path}:{line}: id {record.id!r} is also on line {first_line[record.id]}: every compound needs "
                "its own id (results are stored by id); rename or remove one of the two rows"
            )
        first_line[record.id] = line


def count_records(path: str | os.PathLike[str], **columns: str) -> int:
    """Number of records in a library, counted by streaming it once."""
    return sum(1 for _ in read_library(path, **columns))


def sample_records(records: Iterable[LibraryRecord], n: int, *, seed: int = 0) -> list[LibraryRecord]:
    """A deterministic uniform sample of ``n`` records, in their input order.

    Reservoir sampling (algorithm R) with a seeded generator: memory is O(n)
    whatever the length of the stream, and the same stream, n and seed always
    give the same sample. Fewer than n records yields all of them.
    """
    if n < 0:
        raise StageInputError(f"sample size must be >= 0, got {n}")
    rng = random.Random(seed)
    reservoir: list[tuple[int, LibraryRecord]] = []
    for i, record in enumerate(records):
        if i < n:
            reservoir.append((i, record))
        else:
            j = rng.randint(0, i)
            if j < n:
                reservoir[j] = (i, record)
    reservoir.sort(key=lambda item: item[0])
    return [record for _, record in reservoir]


def sample_library(path: str | os.PathLike[str], n: int, *, seed: int = 0, **columns: str) -> list[LibraryRecord]:
    """A deterministic sample of ``n`` records from a library file (see :func:`sample_records`)."""
    return sample_records(read_library(path, **columns), n, seed=seed)


def iter_shard(path: str | os.PathLike[str], shard: int, n_shards: int, **columns: str) -> Iterator[LibraryRecord]:
    """Yield shard ``shard`` of ``n_shards``: the records whose index modulo n_shards is shard.

    Round-robin assignment needs no count of the file beforehand, so every MPI
    rank can stream the same file and take its own share without coordination.
    """
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise StageInputError(f"shard {shard} of {n_shards} is not valid (need 0 <= shard < n_shards)")
    for i, record in enumerate(read_library(path, **columns)):
        if i % n_shards == shard:
            yield record


def write_library(records: Iterable[LibraryRecord], path: str | os.PathLike[str]) -> int:
    """Write records as an ``id,smiles`` CSV (gzip if the name ends in .gz), atomically.

    The file appears complete or not at all: it is written to a temporary file
    in the same folder and renamed. Returns the number of records written.
    """
    n = 0
    with atomic_writer(path, fsync=False) as text:
        handle = gzip.open(text.buffer, "wt", encoding="utf-8", newline="") if str(path).endswith(".gz") else text
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "smiles"])
        for record in records:
            writer.writerow([record.id, record.smiles])
            n += 1
        if handle is not text:
            handle.close()
    return n


# --------------------------------------------------------------------------- helpers


LIBRARY_SUFFIXES = {
    ".csv": "csv",
    ".smi": "smi",
    ".smiles": "smi",
    ".tsv": "tsv",
    ".cxsmiles": "tsv",
    ".cxsmi": "tsv",
    ".sdf": "sdf",
    ".sd": "sdf",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSIONS = (".gz", ".bz2", ".zst")


def _library_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    kind = next((k for suffix, k in LIBRARY_SUFFIXES.items() if name.endswith(suffix)), None)
    if kind is None:
        raise StageInputError(
            f"{path}: unknown library format (expected {', '.join(LIBRARY_SUFFIXES)}, "
            f"optionally compressed as {', '.join(COMPRESSIONS)})"
        )
    return kind


def _open_text(path: Path, mode: str = "r", *, gz: bool | None = None) -> TextIO:
    gz = path.name.endswith(".gz") if gz is None else gz
    if gz:
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8", newline="")
    if mode == "r" and path.name.endswith((".bz2", ".zst")):
        from .library_formats import open_binary

        return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


def _csv_rows(
    path: Path, handle: TextIO, id_column: str, smiles_column: str, skip: SkipHandler, delimiter: str = ","
) -> Iterator[tuple[int, LibraryRecord]]:
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        raise StageInputError(f"{path}:1: cannot read the header: {exc}") from None
    lowered = [h.strip().lower() for h in header]
    columns = {}
    for role, name in (("id", id_column), ("SMILES", smiles_column)):
        if name.lower() not in lowered:
            raise StageInputError(f"{path}:1: no {role} column {name!r} in the header (columns: {', '.join(header)})")
        columns[role] = lowered.index(name.lower())
    i_id, i_smi = columns["id"], columns["SMILES"]
    width = max(i_id, i_smi) + 1
    try:
        for row in reader:
            if len(row) >= width:
                cid, smiles = row[i_id].strip(), row[i_smi].strip()
                if cid and smiles and "\n" not in cid and "\r" not in cid:  # every row of a sound library
                    yield reader.line_num, LibraryRecord(cid, smiles)
                    continue
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < width:
                raise StageInputError(f"{path}:{line}: expected at least {width} fields, found {len(row)}")
            if "\n" in cid or "\r" in cid:
                raise StageInputError(
                    f"{path}:{line}: id {cid!r} holds a line break (a quoted field): ids are "
                    "stored one per line, so an id must be one line"
                )
            if not cid:
                skip(line, "", f"{path.name}:{line}: empty id (SMILES {smiles!r})")
            else:
                skip(line, cid, f"{path.name}:{line}: empty SMILES for id {cid!r}")
    except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:
        raise StageInputError(f"{path}:{reader.line_num}: unreadable: {exc}") from None


def _smi_rows(path: Path, handle: TextIO, skip: SkipHandler) -> Iterator[tuple[int, LibraryRecord]]:
    try:
        for line_no, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = text.split()
            if line_no == 1 and fields[0].lower() == "smiles":
                continue
            if len(fields) < 2:
                skip(line_no, "", f"{path.name}:{line_no}: no id after the SMILES {fields[0]!r}")
                continue
            yield line_no, LibraryRecord(fields[1], fields[0])
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise StageInputError(f"{path}: unreadable: {exc}") from None
