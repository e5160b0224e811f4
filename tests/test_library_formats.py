"""Library formats on small files the tests write: SDF (plain, gzip), CXSMILES .bz2, .zst, Parquet, globs,
folders, lists and named sources; bad records counted with their file and record number, never fatal."""

from __future__ import annotations

import bz2
import gzip

import pytest

from impeccable.stages.errors import StageInputError
from impeccable.stages.library import LibraryRecord, read_library
from impeccable.stages.library_sources import LibrarySource, expand_paths, iter_sources, scan_sources

MOLS = [("Z1", "CCO"), ("Z2", "c1ccccc1O"), ("Z3", "CC(=O)[O-].[Na+]")]


def _sdf_text(records: list[tuple[str, str]], id_property: str | None = None, broken_second: bool = False) -> str:
    from rdkit import Chem

    blocks = []
    for i, (cid, smiles) in enumerate(records):
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("_Name", "" if id_property else cid)
        block = Chem.MolToMolBlock(mol)
        if broken_second and i == 1:
            block = block.replace("V2000", "V9999")  # a counts line RDKit refuses
        props = f">  <{id_property}>\n{cid}\n\n" if id_property else ""
        blocks.append(block + props + "$$$$\n")
    return "".join(blocks)


def test_sdf_ids_from_the_title_or_a_named_property(tmp_path):
    plain = tmp_path / "a.sdf"
    plain.write_text(_sdf_text(MOLS))
    assert [r.id for r in read_library(plain)] == ["Z1", "Z2", "Z3"]
    assert read_library(plain).__next__().smiles == "CCO"
    zipped = tmp_path / "b.sdf.gz"
    with gzip.open(zipped, "wt") as fh:
        fh.write(_sdf_text(MOLS, id_property="IDNUMBER"))
    records = list(read_library(zipped, id_column="IDNUMBER"))
    assert [r.id for r in records] == ["Z1", "Z2", "Z3"] and records[2].smiles == "CC(=O)[O-].[Na+]"


def test_a_bad_sdf_record_is_skipped_with_its_record_number(tmp_path):
    path = tmp_path / "bad.sdf"
    path.write_text(_sdf_text(MOLS, broken_second=True))
    skipped = []
    ids = [r.id for r in read_library(path, on_skip=lambda n, cid, why: skipped.append((n, why)))]
    assert ids == ["Z1", "Z3"]
    assert skipped == [(2, "bad.sdf: record 2: RDKit cannot read this molfile")]


def test_enamine_cxsmiles_bz2_and_zst(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    text = "smiles\tidnumber\tReagent_1_ID\nC[C@H](N)O |&1:1|\tZ100\tr1\nCCN\tZ101\tr2\n"
    enamine = tmp_path / "real.cxsmiles.bz2"
    enamine.write_bytes(bz2.compress(text.encode()))
    records = list(read_library(enamine, id_column="idnumber"))
    assert records == [LibraryRecord("Z100", "C[C@H](N)O |&1:1|"), LibraryRecord("Z101", "CCN")]
    zst = tmp_path / "lib.csv.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(b"id,smiles\na,CCO\nb,CCN\n"))
    assert [r.id for r in read_library(zst)] == ["a", "b"]
    corrupt = tmp_path / "bad.csv.zst"
    corrupt.write_bytes(zst.read_bytes()[:12] + b"garbage" * 4)
    with pytest.raises(StageInputError, match="bad.csv.zst"):
        list(read_library(corrupt))


def test_parquet_with_configured_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "house.parquet"
    pq.write_table(pa.table({"Compound": ["h1", "h2", None], "Structure": ["CCO", "", "CCC"], "x": [1, 2, 3]}), path)
    skipped = []
    records = list(
        read_library(
            path, id_column="compound", smiles_column="structure", on_skip=lambda n, cid, why: skipped.append(why)
        )
    )
    assert records == [LibraryRecord("h1", "CCO")]
    assert skipped == ["house.parquet:3: empty SMILES for id 'h2'", "house.parquet:4: empty id (SMILES 'CCC')"]
    with pytest.raises(StageInputError, match="no SMILES column 'smiles'"):
        list(read_library(path, id_column="compound"))


def test_lists_globs_and_folders_are_one_library(tmp_path):
    folder = tmp_path / "chunks"
    folder.mkdir()
    (folder / "b.smi").write_text("CCN b1\n")
    (folder / "a.csv").write_text("id,smiles\na1,CCO\n")
    (folder / "notes.txt").write_text("not a library\n")
    assert [p.name for p in expand_paths(folder)] == ["a.csv", "b.smi"]
    assert [p.name for p in expand_paths(str(folder / "*.smi"))] == ["b.smi"]
    assert [p.name for p in expand_paths([folder / "b.smi", folder / "a.csv"])] == ["b.smi", "a.csv"]
    with pytest.raises(StageInputError, match="no library files here"):
        expand_paths(str(folder / "*.sdf"))
    source = LibrarySource.from_spec("chunks", folder)
    assert [r.id for r in iter_sources([source], prefix=False)] == ["a1", "b1"]


def test_named_sources_keep_their_name_and_ids(tmp_path):
    (tmp_path / "v.sdf").write_text(_sdf_text(MOLS[:2]))
    (tmp_path / "h.csv").write_text("code,smi\nZ1,CCCC\n")
    sources = [
        LibrarySource.from_spec("vendor", tmp_path / "v.sdf"),
        LibrarySource.from_spec("house", tmp_path / "h.csv", "code", "smi"),
    ]
    records = list(iter_sources(sources, prefix=True))
    assert [(r.id, r.source, r.source_id) for r in records] == [
        ("vendor:Z1", "vendor", "Z1"),
        ("vendor:Z2", "vendor", "Z2"),
        ("house:Z1", "house", "Z1"),
    ]
    assert scan_sources(sources, prefix=True).count == 3  # one catalogue id in two sources: two compounds
    with pytest.raises(StageInputError, match=r"h\.csv:2: id 'Z1' is also on .*v\.sdf:1"):
        scan_sources(sources, prefix=False)
