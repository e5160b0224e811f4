"""Library streaming: formats, errors naming file and line, deterministic samples and shards."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from impeccable.stages.errors import StageInputError
from impeccable.stages.library import (
    LibraryRecord,
    count_records,
    iter_shard,
    read_library,
    sample_library,
    scan_library,
    write_library,
)

REPO = Path(__file__).resolve().parents[1]
MOSES = REPO / "data" / "library" / "moses_20k.csv"


def _csv(tmp_path: Path, text: str, name: str = "lib.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_csv_columns_by_name_in_any_order(tmp_path):
    path = _csv(tmp_path, "SMILES,name,ID\nCCO,ethanol,a1\nc1ccccc1,benzene,a2\n")
    assert list(read_library(path)) == [LibraryRecord("a1", "CCO"), LibraryRecord("a2", "c1ccccc1")]


def test_reads_smi_and_gzip(tmp_path):
    smi = tmp_path / "lib.smi.gz"
    with gzip.open(smi, "wt") as fh:
        fh.write("smiles id\n# a comment\nCCO e1\nCCN e2\n")
    assert [r.id for r in read_library(smi)] == ["e1", "e2"]


def test_empty_library_is_an_error_naming_the_file(tmp_path):
    path = _csv(tmp_path, "id,smiles\n")
    with pytest.raises(StageInputError, match=r"lib\.csv: library is empty"):
        list(read_library(path))


def test_missing_column_and_bad_row_name_file_and_line(tmp_path):
    with pytest.raises(StageInputError, match=r"lib\.csv:1: no SMILES column"):
        list(read_library(_csv(tmp_path, "id,structure\nx,CCO\n")))
    with pytest.raises(StageInputError, match=r"short\.csv:3: expected at least 2 fields"):
        list(read_library(_csv(tmp_path, "id,smiles\na,CCO\nb\n", "short.csv")))
    with pytest.raises(StageInputError, match="not found"):
        list(read_library(tmp_path / "nope.csv"))


def test_sample_is_deterministic_and_shards_partition_the_library():
    a = sample_library(MOSES, 50, seed=3)
    assert a == sample_library(MOSES, 50, seed=3)
    assert a != sample_library(MOSES, 50, seed=4)
    assert len({r.id for r in a}) == 50
    n = count_records(MOSES)
    shards = [[r.id for r in iter_shard(MOSES, k, 3)] for k in range(3)]
    assert sum(map(len, shards)) == n == 20_000
    assert not set(shards[0]) & set(shards[1])


def test_write_library_round_trips(tmp_path):
    records = [LibraryRecord("x1", "CCO"), LibraryRecord("x2", "CC(=O)O")]
    out = tmp_path / "sub" / "out.csv.gz"
    assert write_library(records, out) == 2
    assert list(read_library(out)) == records
    assert not list(out.parent.glob("*.tmp"))


def test_rows_with_an_empty_id_or_smiles_are_skipped_with_a_reason(tmp_path):
    skipped = []
    path = _csv(tmp_path, "id,smiles\na,CCO\nb,\n,CCN\nc,CCC\n", "holes.csv")
    ids = [r.id for r in read_library(path, on_skip=lambda line, cid, why: skipped.append((line, cid, why)))]
    assert ids == ["a", "c"]
    assert skipped == [
        (3, "b", "holes.csv:3: empty SMILES for id 'b'"),
        (4, "", "holes.csv:4: empty id (SMILES 'CCN')"),
    ]
    with pytest.raises(StageInputError, match=r"library is empty \(no compound records; 1 row\(s\) skipped"):
        list(read_library(_csv(tmp_path, "id,smiles\nb,\n", "none.csv")))


def test_duplicate_ids_are_refused_naming_both_lines(tmp_path):
    path = _csv(tmp_path, "id,smiles\na,CCO\nb,CCN\nc,CCC\nb,c1ccccc1\n", "dup.csv")
    with pytest.raises(StageInputError, match=r"dup\.csv:5: id 'b' is also on line 3"):
        scan_library(path)
    assert scan_library(path, limit=3).count == 3  # only the rows a campaign screens count


def test_scan_counts_and_reports_skips(tmp_path):
    path = _csv(tmp_path, 'id,smiles\n"x,1",CCO\nb,\nc,CCC\n', "ok.csv")
    scan = scan_library(path)
    assert scan.count == 2 and scan.skipped_count == 1 and scan.skipped[0][:2] == (3, "b")
    assert [r.id for r in read_library(path)] == ["x,1", "c"]  # a quoted id may hold a comma
