"""Embedded decision log: SQLite in WAL mode with synchronous=FULL, so a COMMIT is on disk when it returns."""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from fito.coord.base import Decision, DecisionStore
from fito.errors import RetireRefusedError, StaleFenceError, UnsafeCheckpointError

SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (id INTEGER PRIMARY KEY CHECK (id = 1), token INTEGER NOT NULL);
INSERT OR IGNORE INTO fence (id, token) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL UNIQUE,
    epoch INTEGER NOT NULL,
    attempt TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('commit', 'abort')),
    manifest TEXT NOT NULL,
    manifest_hash TEXT NOT NULL,
    fence INTEGER NOT NULL,
    retired INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
"""

COLUMNS = "seq, decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence, retired, created"


def connect(path: Path, *, timeout: float, schema: str | None) -> sqlite3.Connection:
    """A connection in WAL mode with synchronous=FULL (a COMMIT is durable when it returns), schema created.

    Switching to WAL and creating the schema take locks that SQLite's busy timeout does not always wait for
    when several processes open a new file at once ("database is locked"): retry until `timeout`."""
    deadline = time.monotonic() + timeout
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if schema:
                db.executescript(schema)
            return db
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.01)


class SqliteDecisionStore(DecisionStore):
    FILENAME = "decisions.sqlite"

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, timeout: float = 30.0) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no decision log here (is this a fito checkpoint directory?)")
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so check-and-write is one transaction.
            # One connection shared by the caller's thread and a background save, serialised by a lock.
            self._lock = threading.RLock()
            self._db = connect(self.path, timeout=timeout, schema=SCHEMA if create else None)
            self._check_schema()
        except sqlite3.DatabaseError as exc:
            raise UnsafeCheckpointError(
                path=str(self.path), unit=None, expected="a fito SQLite decision log", found=f"{exc}",
                hint="this directory was not written by fito, or its decision log is damaged",
            ) from exc

    def _check_schema(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"fence", "decisions"} <= tables:
            raise sqlite3.DatabaseError(f"tables {sorted(tables)} instead of fence+decisions")

    def acquire_fence(self) -> int:
        with self._transaction():
            self._db.execute("UPDATE fence SET token = token + 1 WHERE id = 1")
            return self._fence()

    def current_fence(self) -> int:
        return self._fence()

    def _fence(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT token FROM fence WHERE id = 1").fetchone()[0])

    def publish(self, decision: Decision, fence: int) -> Decision:
        decision_id = decision.decision_id or f"{decision.epoch}:{decision.attempt}"
        with self._transaction():
            existing = self._db.execute(
                f"SELECT {COLUMNS} FROM decisions WHERE decision_id = ?", (decision_id,)
            ).fetchone()
            if existing is not None:  # an earlier try landed: same id, report what is stored
                return _row(existing)
            current = self._fence()
            if fence != current:
                raise StaleFenceError(
                    f"{self.path}: decision for epoch {decision.epoch} refused: fencing token {fence} "
                    f"is stale, current is {current} (another coordinator took over)"
                )
            cur = self._db.execute(
                "INSERT INTO decisions (decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (decision_id, decision.epoch, decision.attempt, decision.outcome, decision.manifest,
                 decision.manifest_hash, fence, time.time()),
            )
            row = self._db.execute(f"SELECT {COLUMNS} FROM decisions WHERE seq = ?", (cur.lastrowid,)).fetchone()
            return _row(row)

    def decisions(self) -> list[Decision]:
        try:
            with self._lock:
                rows = self._db.execute(f"SELECT {COLUMNS} FROM decisions ORDER BY seq").fetchall()
            return [_row(r) for r in rows]
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            raise UnsafeCheckpointError(
                path=str(self.path), unit=None, expected="well-formed decision records", found=str(exc)
            ) from exc

    def retire(self, epoch: int, attempt: str, fence: int | None) -> None:
        with self._transaction():  # check and write in one BEGIN IMMEDIATE: no commit or retire slips between
            current = self._fence()
            if fence is not None and fence != current:
                raise StaleFenceError(f"{self.path}: retire refused, fence {fence} is stale (current {current})")
            target = self._db.execute("SELECT MAX(seq) FROM decisions WHERE epoch = ? AND attempt = ? AND "
                                      "outcome = 'commit' AND retired = 0", (epoch, attempt)).fetchone()[0]
            if target is not None and self._db.execute(
                "SELECT 1 FROM decisions WHERE outcome = 'commit' AND retired = 0 AND seq > ? LIMIT 1", (target,)
            ).fetchone() is None:
                raise RetireRefusedError(
                    f"{self.path}: retiring step {epoch} (attempt {attempt}) refused: no newer commit is live, "
                    "and the newest committed step is never retired; nothing was changed")
            self._db.execute("UPDATE decisions SET retired = 1 WHERE epoch = ? AND attempt = ?", (epoch, attempt))

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> "Transaction":
        return Transaction(self._db, self._lock)


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


def _row(r: tuple) -> Decision:
    seq, decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence, retired, created = r
    if outcome not in ("commit", "abort"):
        raise ValueError(f"unknown outcome {outcome!r}")
    return Decision(
        epoch=int(epoch), attempt=str(attempt), outcome=outcome, manifest=str(manifest),
        manifest_hash=str(manifest_hash), decision_id=str(decision_id), fence=int(fence), seq=int(seq),
        retired=bool(retired), created=float(created),
    )
