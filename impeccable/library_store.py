"""The prepared library in the campaign's store: what the library stage kept, dropped and merged, batch by batch.

Tables of their own beside :mod:`.store`'s (added to any store, old ones too):

- ``library_batches``: one row per preparation batch, written with its done mark
  in one transaction: the counts, the drops per rule, the kept compounds (id,
  screened SMILES, source, source id; zlib) and the dropped ones (id, why;
  zlib), so every dropped molecule keeps the rule that dropped it at about
  the cost of the predictions' per-batch rows.
- ``library_keys``: one row per kept compound when deduplicating: a 64-bit hash
  of its InChIKey and its id. A resumed run deduplicates against it as is.
- ``library_duplicates``: the source and source id of each record merged into
  a kept compound (so the kept one carries every source id).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS library_batches (
    batch INTEGER PRIMARY KEY, n_rows INTEGER NOT NULL, n_failed INTEGER NOT NULL, n_duplicates INTEGER NOT NULL,
    n_filtered INTEGER NOT NULL, n_kept INTEGER NOT NULL, by_rule TEXT NOT NULL, seconds TEXT NOT NULL,
    kept BLOB NOT NULL, dropped BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS library_keys (key INTEGER PRIMARY KEY, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS library_duplicates (id TEXT NOT NULL, source TEXT NOT NULL, source_id TEXT NOT NULL,
    PRIMARY KEY (id, source, source_id));
"""


def key_hash(inchikey: str) -> int:
    """A signed 64-bit hash of an InChIKey (collisions: ~1e-7 for two million compounds)."""
    return int.from_bytes(hashlib.blake2b(inchikey.encode(), digest_size=8).digest(), "little", signed=True)


@dataclass
class PreparedBatch:
    """One batch's outcome, ready to commit: kept (id, SMILES, source, source id) and dropped (id, kind, why)."""

    batch: int
    rows: int
    kept: list[tuple[str, str, str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str, str]] = field(default_factory=list)  # kind: failed, filtered, duplicate
    by_rule: dict[str, int] = field(default_factory=dict)
    keys: list[tuple[int, str]] = field(default_factory=list)  # (key hash, kept id)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)  # (kept id, source, source id)
    seconds: dict[str, float] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        return sum(1 for _, k, _ in self.dropped if k == kind)


@dataclass
class LibraryCounts:
    """What the library stage did over every committed batch; rows = failed + duplicates + filtered + kept."""

    batches: int = 0
    rows: int = 0
    failed: int = 0
    duplicates: int = 0
    filtered: int = 0
    kept: int = 0
    filtered_by_rule: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)


class LibraryStore:
    """Typed access to the library tables of a campaign store."""

    def __init__(self, store: Store, create: bool = True) -> None:
        """``create``: make the tables where missing (executescript: it commits an open transaction, so a
        reader inside a group of the task loop passes False)."""
        self.store = store
        self.db = store.db
        if create and not store.readonly:
            self.db.executescript(SCHEMA)
        self.present = bool(self.db.execute("SELECT 1 FROM sqlite_master WHERE name='library_batches'").fetchone())

    def add_batch(self, b: PreparedBatch) -> None:
        """Commit one batch with its done mark (its row), its keys and its duplicates, all or nothing."""
        kept, dropped = _pack(b.kept), _pack(b.dropped)
        with self.store.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO library_keys VALUES (?, ?)", b.keys)
            db.executemany("INSERT OR IGNORE INTO library_duplicates VALUES (?, ?, ?)", b.duplicates)
            db.execute(
                "INSERT OR REPLACE INTO library_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    b.batch,
                    b.rows,
                    b.count("failed"),
                    b.count("duplicate"),
                    b.count("filtered"),
                    len(b.kept),
                    json.dumps(b.by_rule),
                    json.dumps(b.seconds),
                    kept,
                    dropped,
                ),
            )

    def keep_only(self, made_for: str) -> None:
        """Forget a preparation made for anything other than ``made_for`` (the settings and files it used).

        Safe: a run directory's settings change only while it holds no results (``check_same_campaign``)."""
        if self.store.get_meta("library_prepared_for") == made_for:
            return
        with self.store.transaction() as db:
            for table in ("library_batches", "library_keys", "library_duplicates"):
                db.execute(f"DELETE FROM {table}")
        self.store.set_meta("library_prepared_for", made_for)

    def done_batches(self) -> int:
        """Batches committed: always a prefix of the library (batches commit in order)."""
        if not self.present:
            return 0
        return self.db.execute("SELECT count(*) FROM library_batches").fetchone()[0]

    def known_keys(self, keys: Iterable[int]) -> dict[int, str]:
        """key hash -> kept id, for those of ``keys`` already kept by an earlier batch."""
        found: dict[int, str] = {}
        keys = list(keys)
        for i in range(0, len(keys), 900):  # SQLite's limit on parameters
            chunk = keys[i : i + 900]
            found.update(
                self.db.execute(f"SELECT key, id FROM library_keys WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            )
        return found

    def records(self) -> Iterator[tuple[str, str]]:
        """(id, SMILES) of every kept compound in library order, one batch in memory at a time."""
        for (blob,) in self.db.execute("SELECT kept FROM library_batches ORDER BY batch"):
            for cid, smiles, _, _ in _unpack(blob):
                yield cid, smiles

    def dropped(self) -> Iterator[tuple[str, str, str]]:
        """(id, kind, why) of every record the stage did not keep: failed, filtered (why names the rule), duplicate."""
        for (blob,) in self.db.execute("SELECT dropped FROM library_batches ORDER BY batch"):
            yield from _unpack(blob)

    def counts(self) -> LibraryCounts:
        out = LibraryCounts()
        if not self.present:
            return out
        for rows, failed, dup, filtered, kept, by_rule, seconds in self.db.execute(
            "SELECT n_rows, n_failed, n_duplicates, n_filtered, n_kept, by_rule, seconds FROM library_batches"
        ):
            out.batches += 1
            out.rows, out.failed, out.duplicates = out.rows + rows, out.failed + failed, out.duplicates + dup
            out.filtered, out.kept = out.filtered + filtered, out.kept + kept
            out.filtered_by_rule.update(json.loads(by_rule))
            out.seconds.update(json.loads(seconds))
        return out

    def sources_of(self, ids: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
        """id -> (its source, every source id it carries: its own first, then its merged duplicates'), for
        ``ids``; one pass over the kept compounds, stopping once all are found."""
        wanted, found = set(ids), {}
        if not self.present or not wanted:
            return found
        for (blob,) in self.db.execute("SELECT kept FROM library_batches ORDER BY batch"):
            for cid, _, source, source_id in _unpack(blob):
                if cid in wanted:
                    found[cid] = (source, [f"{source}:{source_id}"])
                    wanted.discard(cid)
            if not wanted:
                break
        for cid, source, source_id in self.db.execute(
            "SELECT id, source, source_id FROM library_duplicates ORDER BY rowid"
        ):
            if cid in found:
                found[cid][1].append(f"{source}:{source_id}")
        return found


def _pack(rows: Sequence[tuple[str, ...]]) -> bytes:
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 1)


def _unpack(blob: bytes) -> list[list[str]]:
    return json.loads(zlib.decompress(blob))


def summary(counts: LibraryCounts) -> dict[str, Any]:
    """The counts as JSON-ready data with the check that they add up."""
    return {
        "rows": counts.rows,
        "failed": counts.failed,
        "duplicates": counts.duplicates,
        "filtered": counts.filtered,
        "filtered_by_rule": dict(sorted(counts.filtered_by_rule.items(), key=lambda kv: -kv[1])),
        "kept": counts.kept,
        "adds_up": counts.rows == counts.failed + counts.duplicates + counts.filtered + counts.kept,
    }


def compound_sources(store: Store, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """id -> (source name, every ``source:id`` it carries joined by ';'), for the export and the report.

    From the prepared library where there is one; else from the ids and the campaign's sources (a library
    streamed as it is: one source per compound, named ids ``source:id`` or the library file's name)."""
    from .config import LibrarySection

    found = LibraryStore(store).sources_of(ids)
    try:
        section = LibrarySection.model_validate(json.loads(store.get_meta("campaign") or "{}")["library"], strict=False)
        names = [name for name, _, _, _ in section.source_list()]
        named = bool(section.sources)
    except (KeyError, ValueError, TypeError):
        names, named = [], False
    out = {}
    for cid in ids:
        if cid in found:
            source, source_ids = found[cid]
        elif named and cid.partition(":")[0] in names:
            source, source_ids = cid.partition(":")[0], [cid]
        else:
            source = names[0] if names else ""
            source_ids = [f"{source}:{cid}" if source else cid]
        out[cid] = (source, ";".join(source_ids))
    return out
