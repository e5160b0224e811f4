"""Three groups of the store's tables, as mixins of :class:`~.store.Store` (which holds the connection and the
transactions): the surrogate's models and predictions, the stages' selections with the MD results, and the
task records. Kept apart so that each class stays readable."""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .runtime.records import TaskRecord, TaskState

# node: the node(s) a task ran on, comma-separated (an MPI task may span several)
TASK_COLUMNS = (
    "uid",
    "session",
    "name",
    "kind",
    "stage",
    "round",
    "state",
    "cores",
    "gpus",
    "submitted",
    "scheduled",
    "started",
    "finished",
    "backend",
    "partition",
    "slots",
    "attempts",
    "exit_code",
    "error",
    "gpu_slots",
    "node",
)


class PredictionTables:
    """Surrogate models, per-batch predictions and inference counts (``self.db``, ``self.transaction()``: the store's)."""

    db: sqlite3.Connection
    transaction: Any  # Store.transaction: a context manager yielding the connection

    # surrogate ---------------------------------------------------------------
    def add_model(self, round_: int, path: str, report: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?)", (round_, path, json.dumps(report)))

    def model(self, round_: int) -> tuple[str, dict[str, Any]] | None:
        row = self.db.execute("SELECT path, report FROM models WHERE round=?", (round_,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def models(self) -> list[tuple[int, dict[str, Any]]]:
        return [(r, json.loads(rep)) for r, rep in self.db.execute("SELECT round, report FROM models ORDER BY round")]

    def add_predictions(
        self,
        round_: int,
        batch: int,
        ids: Sequence[str],
        scores: np.ndarray,
        counts: tuple[int, int, int, int],
        failures: Iterable[tuple[str, str]],
        nominees: Sequence[tuple[str, str, float]],
        filtered: Iterable[tuple[str, str]] = (),
    ) -> None:
        """One inference batch in one transaction: its predictions (``scores[i]`` for ``ids[i]``, NaN where
        not scored), failures and filtered compounds (id, reason), re-dock nominees (id, SMILES, predicted
        score) and its done mark."""
        if len(ids) != len(scores):
            raise ValueError(f"batch {batch}: {len(ids)} ids but {len(scores)} scores")
        blob = zlib.compress("\n".join(ids).encode(), 1)
        values = np.ascontiguousarray(scores, dtype="<f4").tobytes()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO selections VALUES (?, 'redock', ?, ?, ?, ?)",
                [(round_, cid, batch, smi, score) for cid, smi, score in nominees],
            )
            db.execute("INSERT OR REPLACE INTO prediction_batches VALUES (?, ?, ?, ?)", (round_, batch, blob, values))
            _insert_failures(db, "prepare", failures)
            _insert_failures(db, "filter", filtered)
            db.execute("INSERT OR REPLACE INTO inference_batches VALUES (?, ?, ?, ?, ?, ?)", (round_, batch, *counts))

    def done_batches(self, round_: int) -> set[int]:
        return {b for (b,) in self.db.execute("SELECT batch FROM inference_batches WHERE round=?", (round_,))}

    def _prediction_batches(self, round_: int | None = None) -> Iterator[tuple[int, list[str], np.ndarray]]:
        """(round, ids, scores) of every stored batch of ``round_`` (default: all), rounds in order; one batch
        in memory at a time. A store written before batches were kept has one row per compound instead."""
        rounds = (
            [round_]
            if round_ is not None
            else [
                r
                for (r,) in self.db.execute(
                    "SELECT round FROM prediction_batches UNION SELECT round FROM predictions ORDER BY round"
                )
            ]
        )
        for r in rounds:
            for ids, scores in self.db.execute(
                "SELECT ids, scores FROM prediction_batches WHERE round=? ORDER BY batch", (r,)
            ):
                text = zlib.decompress(ids).decode()
                yield r, text.split("\n") if text else [], np.frombuffer(scores, dtype="<f4")
            rows = self.db.execute("SELECT id, score FROM predictions WHERE round=?", (r,)).fetchall()
            if rows:
                yield r, [cid for cid, _ in rows], np.array([score for _, score in rows], dtype=np.float32)

    def prediction_scores(self, round_: int) -> np.ndarray:
        """Every predicted score of a round (float32, library order), read one batch at a time."""
        parts = [scores[~np.isnan(scores)] for _, _, scores in self._prediction_batches(round_)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def first_predictions(self, ids: Iterable[str]) -> dict[str, float]:
        """id -> its prediction in the earliest round that predicted it (and was not pruned), for ``ids``.

        One pass over the stored batches; memory holds one batch and the answer.
        """
        return _first_found(ids, self._prediction_batches())

    def predictions_of(self, round_: int, ids: Iterable[str]) -> dict[str, float]:
        """id -> its round-``round_`` prediction, for those of ``ids`` that have one."""
        return _first_found(ids, self._prediction_batches(round_))

    def prune_predictions(self) -> list[int]:
        """Drop the per-compound predictions of every round before the newest that has any (its nominees,
        with their SMILES and scores, stay in ``selections``); returns the rounds pruned. Call
        :meth:`vacuum` to hand the space back to the file system."""
        newest = self.db.execute(
            "SELECT max(round) FROM (SELECT round FROM prediction_batches UNION ALL SELECT round FROM predictions)"
        ).fetchone()[0]
        if newest is None:
            return []
        rounds = [
            r
            for (r,) in self.db.execute(
                "SELECT round FROM prediction_batches WHERE round<? UNION SELECT round FROM predictions WHERE round<? "
                "ORDER BY round",
                (newest, newest),
            )
        ]
        with self.transaction() as db:
            db.execute(
                "UPDATE selections SET smiles=(SELECT p.smiles FROM predictions p WHERE p.round=selections.round "
                "AND p.id=selections.id) WHERE smiles IS NULL AND stage='redock' AND round<?",
                (newest,),
            )
            db.execute(
                "UPDATE selections SET score=(SELECT p.score FROM predictions p WHERE p.round=selections.round "
                "AND p.id=selections.id) WHERE score IS NULL AND stage='redock' AND round<?",
                (newest,),
            )
            db.execute("DELETE FROM prediction_batches WHERE round<?", (newest,))
            db.execute("DELETE FROM predictions WHERE round<?", (newest,))
        return rounds

    def vacuum(self) -> None:
        """Rewrite the file without its free pages (after a prune) and empty the write-ahead log, so the
        space goes back to the file system; needs no other connection writing."""
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def inference_counts(self, round_: int) -> tuple[int, int, int, int]:
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(n_scored),0), coalesce(sum(n_filtered),0), "
            "coalesce(sum(n_failed),0) FROM inference_batches WHERE round=?",
            (round_,),
        ).fetchone()
        return tuple(row)  # type: ignore[return-value]


class SelectionTables:
    """Which compounds each stage picked (so that a resumed run picks the same) and the MD results of those
    sent to MD (``self.db``, ``self.transaction()``: the store's)."""

    db: sqlite3.Connection
    transaction: Any  # Store.transaction: a context manager yielding the connection

    # selections (which compounds a stage picked, so a resumed run picks the same) --
    def select(self, round_: int, stage: str, ids: Iterable[str], batch: int = -1) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO selections (round, stage, id, batch) VALUES (?, ?, ?, ?)",
                [(round_, stage, i, batch) for i in ids],
            )

    def select_compounds(self, round_: int, stage: str, compounds: Iterable[tuple[str, str]]) -> None:
        """Like :meth:`select`, keeping each compound's SMILES, so a resumed stage needs no library pass."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO selections VALUES (?, ?, ?, -1, ?, NULL)",
                [(round_, stage, cid, smi) for cid, smi in compounds],
            )

    def selected(self, round_: int, stage: str, batch: int | None = None) -> set[str]:
        sql, args = "SELECT id FROM selections WHERE round=? AND stage=?", [round_, stage]
        if batch is not None:
            sql += " AND batch=?"
            args.append(batch)
        return {i for (i,) in self.db.execute(sql, args)}

    def selected_compounds(
        self, round_: int, stage: str, batch: int | None = None
    ) -> list[tuple[str, str | None, float | None]]:
        """(id, SMILES, predicted score) of a stage's picks in the order they were picked; SMILES and score
        from the per-compound predictions where an older store kept them only there, else None."""
        sql = (
            "SELECT s.id, coalesce(s.smiles, p.smiles), coalesce(s.score, p.score) FROM selections s "
            "LEFT JOIN predictions p ON p.round=s.round AND p.id=s.id WHERE s.round=? AND s.stage=?"
        )
        args: list[Any] = [round_, stage]
        if batch is not None:
            sql += " AND s.batch=?"
            args.append(batch)
        return list(self.db.execute(sql + " ORDER BY s.rowid", args))

    # MD ----------------------------------------------------------------------
    def add_md(
        self,
        cid: str,
        round_: int,
        dg: float | None,
        stderr: float | None,
        result: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO md VALUES (?, ?, ?, ?, ?, ?)",
                (cid, round_, dg, stderr, json.dumps(result) if result else None, error),
            )

    def speculative_md(self, round_: int) -> set[str]:
        """Compounds a round sent to MD while it streamed (picked by an inference batch, not the round end)."""
        return {
            i
            for (i,) in self.db.execute(
                "SELECT id FROM selections WHERE round=? AND stage='md' AND batch >= 0", (round_,)
            )
        }

    def md_ids(self) -> set[str]:
        return {i for (i,) in self.db.execute("SELECT id FROM md")}

    def md_batches(self) -> dict[str, int]:
        """Compound -> the inference batch whose re-docking sent it to MD (-1: the round end's top-M)."""
        return dict(self.db.execute("SELECT id, max(batch) FROM selections WHERE stage='md' GROUP BY id"))

    def md_counts(self) -> tuple[int, int]:
        """(scored, failed) MD compounds."""
        return tuple(self.db.execute("SELECT count(dg), count(*) - count(dg) FROM md").fetchone())  # type: ignore[return-value]

    def md_results(self) -> dict[str, tuple[float | None, float | None, str | None]]:
        return {i: (dg, se, err) for i, dg, se, err in self.db.execute("SELECT id, dg, stderr, error FROM md")}


class TaskTables:
    """Task records: one row per task, stored once when it ends."""

    db: sqlite3.Connection
    transaction: Any

    # task records --------------------------------------------------------------
    def add_task_records(self, session: int, records: Iterable[TaskRecord]) -> None:
        rows = [
            (
                r.uid,
                session,
                r.name,
                r.kind,
                r.tags.get("stage"),
                int(r.tags.get("round", 0)),
                r.state.value,
                r.cores,
                r.gpus,
                r.submitted,
                r.scheduled,
                r.started,
                r.finished,
                r.backend,
                r.partition,
                json.dumps(list(r.slots)),
                r.attempts,
                r.exit_code,
                r.error,
                json.dumps(list(r.gpu_slots)),
                r.node,
            )
            for r in records
        ]
        with self.transaction() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO tasks ({', '.join(TASK_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(TASK_COLUMNS))})",
                rows,
            )

    def done_task_durations(self) -> list[tuple[str, str, float]]:
        """(stage, task name, seconds from start to finish) of every task that ended DONE."""
        return list(
            self.db.execute(
                "SELECT stage, name, finished - started FROM tasks WHERE state='DONE' AND "
                "started IS NOT NULL AND finished IS NOT NULL ORDER BY session, started"
            )
        )

    def dock_task_sizes(self) -> dict[str, int]:
        """Docking task key -> compounds it docked."""
        return dict(self.db.execute("SELECT task, count(*) FROM docking GROUP BY task"))

    def task_state_counts(self) -> list[tuple[str, str, int]]:
        """(stage, state, tasks) over every session."""
        return list(self.db.execute("SELECT stage, state, count(*) FROM tasks GROUP BY stage, state ORDER BY stage"))

    def task_records(self, session: int) -> list[TaskRecord]:
        """One session's task records, rebuilt for the runtime's metrics."""
        return [
            TaskRecord(
                uid=r["uid"],
                name=r["name"],
                kind=r["kind"],
                cores=r["cores"],
                gpus=r["gpus"] or 0,
                tags={"stage": r["stage"] or ""},
                state=TaskState(r["state"]),
                submitted=r["submitted"],
                scheduled=r["scheduled"],
                started=r["started"],
                finished=r["finished"],
                backend=r["backend"] or "",
                slots=tuple(r["slots"]),
                gpu_slots=tuple(r["gpu_slots"]),
            )
            for r in self.task_rows(session)
        ]

    def task_rows(self, session: int | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {_select(self.db, 'tasks', TASK_COLUMNS)} FROM tasks"
        args: tuple[Any, ...] = ()
        if session is not None:
            sql += " WHERE session=?"
            args = (session,)
        rows = [dict(zip(TASK_COLUMNS, row)) for row in self.db.execute(sql + " ORDER BY submitted", args)]
        for row in rows:
            row["slots"] = json.loads(row["slots"] or "[]")
            row["gpu_slots"] = json.loads(row["gpu_slots"] or "[]")
        return rows


def _select(db: sqlite3.Connection, table: str, cols: Sequence[str]) -> str:
    """``cols`` for a SELECT, NULL for those an older read-only store lacks (it was not migrated)."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    return ", ".join(c if c in present else "NULL" for c in cols)


def _insert_failures(db: sqlite3.Connection, stage: str, failures: Iterable[tuple[str, str]]) -> None:
    from .stages.skips import category

    db.executemany(
        "INSERT OR IGNORE INTO failures (id, stage, reason, category) VALUES (?, ?, ?, ?)",
        [(cid, stage, reason, category(reason)) for cid, reason in failures],
    )


def _first_found(ids: Iterable[str], batches: Iterator[tuple[int, list[str], np.ndarray]]) -> dict[str, float]:
    """id -> the first scored value met for it in ``batches`` (rounds in order), for ``ids``; stops early
    once every id is found."""
    wanted, found = set(ids), {}
    for _, batch_ids, scores in batches:
        if not wanted:
            break
        for i, cid in enumerate(batch_ids):
            if cid in wanted and not np.isnan(scores[i]):
                found[cid] = float(scores[i])
                wanted.discard(cid)
    return found
