"""The campaign's SQLite store: every result and every task record, written transactionally.

One writer (the campaign manager's thread) and any number of readers
(``impeccable status`` while a run goes on): WAL mode. Each result is
committed together with the mark that says its unit of work is done, so a
crash or Ctrl-C at any moment leaves a store from which a resumed run skips
exactly what is finished and loses nothing.

Commits are grouped (:meth:`Store.group`): the manager handles a burst of
finished tasks in one transaction, each task's writes in a savepoint of their
own, so a result still lands together with its done mark, all or nothing; a
kill loses at most the group in flight, whose tasks a resumed run redoes.

Predictions are the one table that grows with the library, so they are kept
per inference batch, not per compound: one row holds the batch's ids (zlib)
and scores (float32), about 6.5 bytes a compound (6.5 MB per million MOSES
compounds per round) and one insert per batch. What later stages need of them
travels with the selection: each re-dock nominee's SMILES and predicted score
are in ``selections``, so older rounds' predictions can be pruned
(:meth:`Store.prune_predictions`) without losing anything a stage reads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .store_parts import PredictionTables, SelectionTables, TaskTables, _insert_failures, _select

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session INTEGER PRIMARY KEY, started REAL, finished REAL, cores INTEGER, routes TEXT, status TEXT,
    gpus INTEGER, gpu_shares INTEGER, nodes TEXT);
CREATE TABLE IF NOT EXISTS docking (
    id TEXT PRIMARY KEY, smiles TEXT NOT NULL, round INTEGER NOT NULL, origin TEXT NOT NULL,
    score REAL, pose_sdf TEXT, runtime_s REAL, error TEXT, task TEXT, state_smiles TEXT);
CREATE TABLE IF NOT EXISTS pose_checks (id TEXT PRIMARY KEY, passed INTEGER NOT NULL, failed TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (round INTEGER PRIMARY KEY, path TEXT NOT NULL, report TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prediction_batches (
    round INTEGER NOT NULL, batch INTEGER NOT NULL, ids BLOB NOT NULL, scores BLOB NOT NULL,
    PRIMARY KEY (round, batch));
-- one row per compound: written by stores before prediction_batches existed; read, never written
CREATE TABLE IF NOT EXISTS predictions (
    round INTEGER NOT NULL, id TEXT NOT NULL, smiles TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (round, id));
CREATE TABLE IF NOT EXISTS inference_batches (
    round INTEGER NOT NULL, batch INTEGER NOT NULL, n_in INTEGER, n_scored INTEGER, n_filtered INTEGER,
    n_failed INTEGER, PRIMARY KEY (round, batch));
CREATE TABLE IF NOT EXISTS selections (
    round INTEGER NOT NULL, stage TEXT NOT NULL, id TEXT NOT NULL, batch INTEGER NOT NULL,
    smiles TEXT, score REAL, PRIMARY KEY (round, stage, id));
CREATE TABLE IF NOT EXISTS md (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, dg REAL, stderr REAL, result TEXT, error TEXT);
-- compounds a stage left out, and why; category: stages.skips (docking's own failures are in docking.error)
CREATE TABLE IF NOT EXISTS failures (id TEXT NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL,
    category TEXT, PRIMARY KEY (id, stage));
CREATE TABLE IF NOT EXISTS tasks (
    uid TEXT NOT NULL, session INTEGER NOT NULL, name TEXT, kind TEXT, stage TEXT, round INTEGER, state TEXT,
    cores INTEGER, gpus INTEGER, submitted REAL, scheduled REAL, started REAL, finished REAL, backend TEXT,
    partition TEXT, slots TEXT, attempts INTEGER, exit_code INTEGER, error TEXT, gpu_slots TEXT, node TEXT,
    PRIMARY KEY (session, uid));
CREATE INDEX IF NOT EXISTS selections_by_batch ON selections (round, stage, batch);
"""


# columns added after a store was first written
MIGRATIONS = {
    "docking": ["state_smiles TEXT"],
    "selections": ["smiles TEXT", "score REAL"],
    "sessions": ["gpus INTEGER", "gpu_shares INTEGER", "nodes TEXT"],
    "tasks": ["gpu_slots TEXT", "node TEXT"],
    "failures": ["category TEXT"],
}
# gpu_slots: the GPU slots a task held (a session's gpu_shares slots per device); a session's nodes: its
# allocation's node names (JSON list)
SESSION_COLUMNS = ("session", "started", "finished", "cores", "routes", "status", "gpus", "gpu_shares", "nodes")


class StoreError(UserError):
    """The store cannot be used (a damaged file, a read-only run directory); the message says what to do."""


def store_error(path: Path, exc: BaseException) -> StoreError:
    """What an SQLite error on ``path`` means for the user, and the way out."""
    text = str(exc)
    if any(word in text for word in ("malformed", "not a database", "encrypted", "corrupt")):
        return StoreError(
            f"{path} is damaged ({text}); the run directory's results cannot be read from it. Recover what it "
            f"holds and resume: `mv {path} {path}.damaged && sqlite3 {path}.damaged .recover | sqlite3 {path}` "
            "(the sqlite3 command-line tool, 3.29 or newer), then run the same command again: whatever the "
            "recovery missed is computed again. Or start over in a new run directory (--run-dir)"
        )
    if any(word in text for word in ("readonly", "read-only", "unable to open")):
        return StoreError(
            f"{path}: cannot write the campaign's store ({text}): "
            f"{_writable_problem(path.parent) or 'check its permissions'}"
        )
    if "full" in text:
        return StoreError(
            f"{path}: disk full ({text}): free some space or move the run directory; "
            "everything committed so far is kept"
        )
    return StoreError(f"{path}: {text}")


@contextmanager
def store_errors(path: Path) -> Iterator[None]:
    """Turn an SQLite error met while using the store at ``path`` into a StoreError that names the file."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise store_error(path, exc) from exc


def _check_writable(folder: Path) -> None:
    """``impeccable run`` writes its store, lock and task folders into the run directory."""
    problem = _writable_problem(folder)
    if problem:
        raise StoreError(problem)


def _writable_problem(folder: Path) -> str | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{folder}: cannot create the run directory ({exc.strerror}): choose a writable place with --run-dir"
    if not os.access(folder, os.W_OK):
        return (
            f"{folder}: the run directory is read-only: `impeccable run` writes its results there. Copy it "
            "to a writable place and run there (--run-dir); `impeccable status`, `report` and `export` read "
            "a read-only run directory as it is"
        )
    return None


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open without writing anything: a WAL database needs its -shm file, which a read-only mount
    cannot create; then the file is opened as immutable (nothing may be writing to it there)."""
    uri = f"file:{path.resolve().as_posix()}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    return sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)


@dataclass(frozen=True)
class DockRow:
    id: str
    smiles: str
    round: int
    origin: str
    score: float | None
    pose_sdf: str | None
    error: str | None
    state_smiles: str | None = None  # the docked state that gave the score (stereo and charges)


class Store(SelectionTables, PredictionTables, TaskTables):
    """Typed access to ``campaign.db``; callers never write SQL."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        """Raises StoreError, naming the file and what to do, for a damaged file or a run directory
        that cannot be written (``readonly`` False)."""
        self.path = Path(path)
        self.readonly = readonly
        self._grouped = False
        try:
            if readonly:
                self.db = _connect_readonly(self.path)
                self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # not a database: say so now
                return
            _check_writable(self.path.parent)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # a damaged page is found now, not by a query hours into the run (2-3 ms per MB of store)
            problem = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {' '.join(problem.split())}")
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from exc

    def _migrate(self) -> None:
        """Columns added after a store was first written (older run directories stay readable)."""
        added = MIGRATIONS
        for table, columns in added.items():
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0] not in present:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    @classmethod
    def open_existing(cls, run_dir: str | Path, *, readonly: bool = False) -> Store:
        """The store of a run directory; ``readonly`` for commands that only read (status, report, export),
        which then work on a finished run on a read-only mount too."""
        path = Path(run_dir) / "campaign.db"
        if not path.is_file():
            raise FileNotFoundError(
                f"{run_dir}: no campaign.db here (is this a run directory made by `impeccable run`?)"
            )
        return cls(path, readonly=readonly)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All of the block's writes or none; inside a :meth:`group`, a savepoint of the group's transaction."""
        begin, commit, rollback = (
            ("SAVEPOINT unit", "RELEASE unit", "ROLLBACK TO unit")
            if self._grouped
            else ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
        )
        self.db.execute(begin)
        try:
            yield self.db
        except BaseException:
            self.db.execute(rollback)
            if self._grouped:
                self.db.execute(commit)
            raise
        self.db.execute(commit)

    def group(self) -> None:
        """Open a group: writes from now on commit together at :meth:`commit_group` (one fsync for many)."""
        if not self._grouped and not self.readonly:
            self.db.execute("BEGIN IMMEDIATE")
            self._grouped = True

    def commit_group(self) -> None:
        if self._grouped:
            self._grouped = False
            if self.db.in_transaction:  # (an executescript in between would have committed it already)
                self.db.execute("COMMIT")

    # meta and sessions --------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def begin_session(
        self, cores: int, routes: dict[str, str], gpus: int = 0, gpu_shares: int = 1, *, nodes: Sequence[str] = ()
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO sessions (started, cores, routes, status, gpus, gpu_shares, nodes) "
            "VALUES (?, ?, ?, 'running', ?, ?, ?)",
            (time.time(), cores, json.dumps(routes), gpus, gpu_shares, json.dumps(list(nodes))),
        )
        return int(cur.lastrowid)

    def end_session(self, session: int, status: str) -> None:
        self.db.execute("UPDATE sessions SET finished=?, status=? WHERE session=?", (time.time(), status, session))

    def has_results(self) -> bool:
        """Whether anything was computed here (a score, a model, a prediction, an MD result)."""
        return any(
            self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
            for table in ("docking", "models", "prediction_batches", "predictions", "md")
        )

    def sessions(self) -> list[dict[str, Any]]:
        cur = self.db.execute(f"SELECT {_select(self.db, 'sessions', SESSION_COLUMNS)} FROM sessions ORDER BY session")
        return [{**dict(zip(SESSION_COLUMNS, row)), "gpus": row[6] or 0, "gpu_shares": row[7] or 1} for row in cur]

    # docking -----------------------------------------------------------------
    def add_docking(self, rows: Sequence[DockRow], task: str) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO docking (id, smiles, round, origin, score, pose_sdf, error, task, state_smiles) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.id, r.smiles, r.round, r.origin, r.score, r.pose_sdf, r.error, task, r.state_smiles) for r in rows],
            )

    def docked_ids(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT id FROM docking")}

    def last_docked_round(self) -> int:
        """The latest round any compound was docked in (-1 before the first)."""
        return self.db.execute("SELECT coalesce(max(round), -1) FROM docking").fetchone()[0]

    def dock_scores(self) -> list[tuple[str, str, float]]:
        """(id, smiles, score) of every successfully docked compound."""
        return list(self.db.execute("SELECT id, smiles, score FROM docking WHERE score IS NOT NULL ORDER BY id"))

    def dock_score_map(self) -> dict[str, float]:
        return {i: s for i, _, s in self.dock_scores()}

    def best_docked(self, n: int, max_round: int | None = None) -> list[str]:
        """The ids of the ``n`` best docking scores (lowest first, ties broken by id), of compounds docked in
        round ``max_round`` or earlier if given."""
        return [cid for _, cid in self.best_docked_scored(n, max_round)]

    def best_docked_scored(self, n: int, max_round: int | None = None) -> list[tuple[float, str]]:
        """(score, id) of the ``n`` best docking scores, best first (of rounds up to ``max_round`` if given)."""
        return list(
            self.db.execute(
                "SELECT score, id FROM docking WHERE score IS NOT NULL AND round <= ? ORDER BY score, id LIMIT ?",
                (1 << 62 if max_round is None else max_round, n),
            )
        )

    def dock_origins(self) -> dict[str, str]:
        """id -> "seed" or "redock" for every docked compound."""
        return dict(self.db.execute("SELECT id, origin FROM docking"))

    def dock_counts(self, origin: str) -> tuple[int, int]:
        """(scored, failed) compounds docked as ``origin``."""
        query = "SELECT count(score), count(*) - count(score) FROM docking WHERE origin=?"
        return tuple(self.db.execute(query, (origin,)).fetchone())  # type: ignore[return-value]

    def origin_scores(self, origin: str) -> list[float]:
        return [
            s for (s,) in self.db.execute("SELECT score FROM docking WHERE score IS NOT NULL AND origin=?", (origin,))
        ]

    def redocked_since(self, round_: int) -> list[str]:
        """Compounds re-docked (with a score) in round ``round_`` or later, by id."""
        return [
            cid
            for (cid,) in self.db.execute(
                "SELECT id FROM docking WHERE origin='redock' AND round>=? AND score IS NOT NULL ORDER BY id", (round_,)
            )
        ]

    def pose(self, cid: str) -> str | None:
        row = self.db.execute("SELECT pose_sdf FROM docking WHERE id=?", (cid,)).fetchone()
        return row[0] if row else None

    def state_smiles(self) -> dict[str, str]:
        """id -> the docked state that gave each compound's score (compounds docked with states only)."""
        return dict(self.db.execute("SELECT id, state_smiles FROM docking WHERE state_smiles IS NOT NULL"))

    def add_pose_checks(self, checks: dict[str, tuple[bool, list[str]]]) -> None:
        """PoseBusters verdicts: id -> (passed, names of the failed checks)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO pose_checks VALUES (?, ?, ?)",
                [(cid, int(ok), json.dumps(failed)) for cid, (ok, failed) in checks.items()],
            )

    def pose_checks(self) -> dict[str, tuple[bool, list[str]]]:
        return {
            cid: (bool(ok), json.loads(failed))
            for cid, ok, failed in self.db.execute("SELECT id, passed, failed FROM pose_checks")
        }

    def add_failures(self, stage: str, failures: Iterable[tuple[str, str]]) -> None:
        """Compounds ``stage`` left out: (id, reason); the reason's category is stored beside it."""
        with self.transaction() as db:
            _insert_failures(db, stage, failures)

    def failures(self) -> list[tuple[str, str, str]]:
        return list(self.db.execute("SELECT id, stage, reason FROM failures ORDER BY stage, id"))


def md_details(store: Store) -> dict[str, dict[str, Any]]:
    """id -> the MD stage's result document (replica means, intervals) of each scored compound (read by the
    report and export only; kept out of :class:`Store`, which is long enough)."""
    return {i: json.loads(doc) for i, doc in store.db.execute("SELECT id, result FROM md WHERE result IS NOT NULL")}
