"""Library formats that are not lines of text: SDF (optionally compressed) and Parquet, and the bz2/zstd streams.

Both stream like the text readers of :mod:`.library`: an SDF is read one record
at a time by RDKit's forward supplier, a Parquet file one row group batch at a
time by pyarrow, so memory does not grow with the file.

- **SDF**: the id is the property named by ``id_column`` (e.g. ``IDNUMBER`` in
  Enamine's files, ``Catalog ID`` in others); where the record has no such
  property and ``id_column`` is the default ``id``, the title line (the first
  line of the record) is the id. The SMILES is RDKit's canonical isomeric SMILES
  of the record as written (not sanitised here: the preparation tasks do that, in
  parallel, and report a molecule RDKit rejects). A record that cannot be read at
  all is skipped with its record number.
- **Parquet**: the id and SMILES columns are found by name (case-insensitive).
"""

from __future__ import annotations

import bz2
import gzip
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import StageInputError

__all__ = ["open_binary", "sdf_rows", "parquet_rows"]

SkipHandler = Callable[[int, str, str], None]
TITLE = "_Name"  # RDKit's name for the title line of a record


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed by its suffix (.gz, .bz2, .zst), read as a stream."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise StageInputError(
                f"{path}: reading .zst needs the zstandard package (pip install zstandard, part of impeccable[science])"
            ) from None
        raw = open(path, "rb")
        return _ZstdErrorsAsOSError(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")


class _ZstdErrorsAsOSError(io.RawIOBase):
    """A zstandard stream whose corrupt-data errors are OSErrors, as gzip's and bz2's are."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self.inner.read(len(buffer))
        except Exception as exc:  # zstandard.ZstdError
            raise OSError(f"corrupt zstd stream: {exc}") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


def sdf_rows(path: Path, id_column: str, smiles_column: str, skip: SkipHandler) -> Iterator[tuple[int, str, str]]:
    """(record number, id, SMILES) of each readable SDF record; ``smiles_column`` is not used."""
    from rdkit import Chem

    from .quiet import quiet_rdkit

    with open_binary(path) as handle:
        supplier = Chem.ForwardSDMolSupplier(handle, sanitize=False, removeHs=False)
        number = 0
        while True:
            number += 1
            try:
                with quiet_rdkit():
                    mol = next(supplier)
            except StopIteration:
                return
            except (OSError, EOFError, RuntimeError) as exc:
                raise StageInputError(f"{path}: record {number}: unreadable: {exc}") from None
            if mol is None:
                skip(number, "", f"{path.name}: record {number}: RDKit cannot read this molfile")
                continue
            cid = _sdf_id(mol, id_column)
            if not cid:
                skip(number, "", f"{path.name}: record {number}: no id (property {id_column!r} or title)")
                continue
            try:
                mol.UpdatePropertyCache(strict=False)
                smiles = Chem.MolToSmiles(mol)
            except RuntimeError as exc:
                skip(number, cid, f"{path.name}: record {number}: no SMILES for id {cid!r}: {exc}")
                continue
            if not smiles:
                skip(number, cid, f"{path.name}: record {number}: empty molecule for id {cid!r}")
                continue
            yield number, cid, smiles


def _sdf_id(mol: object, id_column: str) -> str:
    if id_column.lower() in ("_name", "title"):
        return mol.GetProp(TITLE).strip() if mol.HasProp(TITLE) else ""  # type: ignore[attr-defined]
    if mol.HasProp(id_column):  # type: ignore[attr-defined]
        return mol.GetProp(id_column).strip()  # type: ignore[attr-defined]
    if id_column == "id":  # the default: the title line
        return mol.GetProp(TITLE).strip() if mol.HasProp(TITLE) else ""  # type: ignore[attr-defined]
    return ""


def parquet_rows(path: Path, id_column: str, smiles_column: str, skip: SkipHandler) -> Iterator[tuple[int, str, str]]:
    """(row number, id, SMILES) of each Parquet row, the header counted as row 1 like a CSV's."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise StageInputError(
            f"{path}: reading Parquet needs the pyarrow package (pip install pyarrow, part of impeccable[science])"
        ) from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow.ArrowInvalid and friends
        raise StageInputError(f"{path}: not a readable Parquet file: {exc}") from None
    names = table.schema_arrow.names
    lowered = [n.lower() for n in names]
    columns = []
    for role, wanted in (("id", id_column), ("SMILES", smiles_column)):
        if wanted.lower() not in lowered:
            raise StageInputError(f"{path}: no {role} column {wanted!r} (columns: {', '.join(names)})")
        columns.append(names[lowered.index(wanted.lower())])
    row = 1
    for batch in table.iter_batches(batch_size=65_536, columns=columns):
        ids, smiles = batch.column(0).to_pylist(), batch.column(1).to_pylist()
        for cid, smi in zip(ids, smiles):
            row += 1
            cid = "" if cid is None else str(cid).strip()
            smi = "" if smi is None else str(smi).strip()
            if cid and smi:
                yield row, cid, smi
            elif not cid:
                skip(row, "", f"{path.name}:{row}: empty id (SMILES {smi!r})")
            else:
                skip(row, cid, f"{path.name}:{row}: empty SMILES for id {cid!r}")
