"""Embedded decision log: one SQLite file, durable when a COMMIT returns and self-contained after it (see
fito.coord.sqlite_log for the file handling). `connect`/`Transaction` serve the fleet-epoch store."""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

from fito.coord.base import Decision, DecisionStore, fenced_out
from fito.coord.sqlite_log import (
    DECISION_COLUMNS, RECOVERY, check_log, create_log, decision_from_row, migrate_v1, open_db, refuse_if_lost,
    refuse_links, translate, uses_wal,
)
from fito.errors import (
    DecisionLogDamagedError, DecisionLogMissingError, DecisionLogReadOnlyError, NoCommittedEpochError,
    RetireRefusedError, StaleFenceError,
)

T = TypeVar("T")

COLUMNS = ", ".join(DECISION_COLUMNS)


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
    """The decision log as one SQLite file (see fito.coord.sqlite_log for its journal mode and checks).

    Opening it takes nothing: reads use a read-only connection (no file is created or changed, so readers
    work on a read-only root), and the first write (`acquire_fence`, `publish`, `retire`) opens it for
    writing, creating the log if there is none yet. It is never created next to existing attempts (a lost
    log) unless `replace_lost=True`, and a damaged log is refused, never repaired.
    `create=False`: the log must exist (NoCommittedEpochError if the root holds nothing, DecisionLogMissingError
    if it holds attempts). `readonly=True`: never write (writes raise DecisionLogReadOnlyError).
    `timeout`: how long to wait for another process's lock before DecisionLogLockedError."""

    FILENAME = "decisions.sqlite"

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False,
                 replace_lost: bool = False, timeout: float = 30.0) -> None:
        self.path = Path(path).absolute()
        self.readonly, self.timeout = readonly, timeout
        self._create, self._replace_lost = create and not readonly, replace_lost
        # One connection shared by the caller's thread and a background save, serialised by a lock.
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._writable = False
        self._wal = False
        self._log_id: str | None = None
        refuse_links(self.path)
        if not self.path.exists():
            if not create:
                refuse_if_lost(self.path)  # attempts but no log: the log was lost, say how to recover
                raise NoCommittedEpochError(  # no log and no attempts: nothing was ever saved here
                    f"{self.path}: no decision log here, so no checkpoint (is {self.path.parent} a fito checkpoint "
                    "directory?)")
            if not replace_lost:
                refuse_if_lost(self.path)

    @classmethod
    def create_new(cls, path: str | os.PathLike[str], *, fence_floor: int = 0, origin: str = "new",
                   timeout: float = 30.0) -> "SqliteDecisionStore":
        """Create a log with a new identity at `path`, even beside existing attempts (`fito recover-log`);
        refuse if one exists. Its first fence is fence_floor + 1."""
        p = Path(path).absolute()
        refuse_links(p)
        if not create_log(p, fence_floor=fence_floor, origin=origin, timeout=timeout):
            raise FileExistsError(f"{p}: a decision log exists already; not replacing it")
        return cls(p, create=False, timeout=timeout)

    # ---------------------------------------------------------------- connections
    def _reader(self) -> sqlite3.Connection | None:
        """The connection for reads; None while there is no log yet (nothing was ever decided)."""
        if self._db is None:
            if not self.path.exists():
                refuse_links(self.path)
                return None
            db = open_db(self.path, write=False, timeout=self.timeout, roll_back=not self.readonly)
            try:
                self._log_id = check_log(db, self.path)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _writer(self) -> sqlite3.Connection:
        if self._writable:
            assert self._db is not None
            return self._db
        if self.readonly:
            db = self._reader()
            if db is None:
                raise DecisionLogReadOnlyError(f"{self.path}: no decision log to write, and it was opened read-only")
            return db  # writes fail in SQLite itself ("attempt to write a readonly database"), and say so
        if not self.path.exists():
            if not self._create:
                raise DecisionLogMissingError(f"{self.path}: the decision log disappeared; {RECOVERY.format(root=self.path.parent)}")
            if not self._replace_lost:
                refuse_if_lost(self.path)
            create_log(self.path, timeout=self.timeout)  # False: another process created it first, use that one
        db = open_db(self.path, write=True, timeout=self.timeout)
        try:
            self._log_id = check_log(db, self.path)
            self._wal = uses_wal(db)
            if self._log_id is None:  # a v1 log: give it an identity before anything is written under it
                self._in_transaction(db, "give the v1 decision log an identity", lambda: migrate_v1(db))
                self._log_id = check_log(db, self.path)
        except BaseException:
            db.close()
            raise
        if self._db is not None:
            self._db.close()
        self._db, self._writable = db, True
        return db

    def _read(self, doing: str, fn: Callable[[sqlite3.Connection], T], empty: T) -> T:
        with self._lock:
            try:
                db = self._reader()
                return empty if db is None else fn(db)
            except sqlite3.Error as exc:
                raise translate(exc, self.path, doing, self.timeout, write=False) from exc

    def _write(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            db = self._writer()
            return self._in_transaction(db, doing, lambda: fn(db))

    def _in_transaction(self, db: sqlite3.Connection, doing: str, fn: Callable[[], T]) -> T:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; SQLite errors say what happened."""
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if self._wal:  # a v1 log still in WAL mode: put the commit into the main file (best effort)
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise translate(exc, self.path, doing, self.timeout, write=True) from exc
        return out

    # ---------------------------------------------------------------- DecisionStore
    def log_id(self) -> str | None:
        with self._lock:
            if self._log_id is None and not self._writable:
                self._read("read the decision log", lambda db: None, None)
            return self._log_id

    def acquire_fence(self) -> int:
        def take(db: sqlite3.Connection) -> int:
            db.execute("UPDATE fence SET token = token + 1 WHERE id = 1")
            return _token(db, self.path)
        return self._write("take a fencing token", take)

    def current_fence(self) -> int:
        return self._read("read the fencing token", lambda db: _token(db, self.path), 0)

    def publish(self, decision: Decision, fence: int) -> Decision:
        decision_id = decision.decision_id or f"{decision.epoch}:{decision.attempt}"

        def record(db: sqlite3.Connection) -> Decision:
            existing = db.execute(f"SELECT {COLUMNS} FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone()
            if existing is not None:  # an earlier try landed: same id, report what is stored
                return _checked_row(existing, self.path)
            current = _token(db, self.path)
            if fence != current:
                first = db.execute("SELECT epoch, created FROM decisions WHERE fence > ? AND outcome = 'commit' "
                                   "ORDER BY seq LIMIT 1", (fence,)).fetchone()
                newer = (f" and committed step {first[0]} at "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(first[1]))}") if first else ""
                raise fenced_out(str(self.path), f"decision for epoch {decision.epoch}", fence, current, newer)
            cur = db.execute(
                "INSERT INTO decisions (decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (decision_id, decision.epoch, decision.attempt, decision.outcome, decision.manifest,
                 decision.manifest_hash, fence, time.time()),
            )
            return _checked_row(db.execute(f"SELECT {COLUMNS} FROM decisions WHERE seq = ?", (cur.lastrowid,)).fetchone(),
                                self.path)
        return self._write(f"publish the decision of epoch {decision.epoch}", record)

    def decisions(self) -> list[Decision]:
        rows = self._read("read the decisions",
                          lambda db: db.execute(f"SELECT {COLUMNS} FROM decisions ORDER BY seq").fetchall(), [])
        return [_checked_row(r, self.path) for r in rows]

    def retire(self, epoch: int, attempt: str, fence: int | None) -> None:
        def mark(db: sqlite3.Connection) -> None:  # check and write in one BEGIN IMMEDIATE: nothing slips between
            current = _token(db, self.path)
            if fence is not None and fence != current:
                raise StaleFenceError(f"{self.path}: retire refused, fence {fence} is stale (current {current})")
            target = db.execute("SELECT MAX(seq) FROM decisions WHERE epoch = ? AND attempt = ? AND "
                                "outcome = 'commit' AND retired = 0", (epoch, attempt)).fetchone()[0]
            if target is not None and db.execute(
                "SELECT 1 FROM decisions WHERE outcome = 'commit' AND retired = 0 AND seq > ? LIMIT 1", (target,)
            ).fetchone() is None:
                raise RetireRefusedError(
                    f"{self.path}: retiring step {epoch} (attempt {attempt}) refused: no newer commit is live, "
                    "and the newest committed step is never retired; nothing was changed")
            db.execute("UPDATE decisions SET retired = 1 WHERE epoch = ? AND attempt = ?", (epoch, attempt))
        self._write(f"retire epoch {epoch}", mark)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db, self._writable = None, False


def _token(db: sqlite3.Connection, path: Path) -> int:
    row = db.execute("SELECT token FROM fence WHERE id = 1").fetchone()
    if row is None or type(row[0]) is not int:
        raise DecisionLogDamagedError(path=str(path), unit=None, expected="one fencing token", found=repr(row),
                                      hint="refused, never reset; " + RECOVERY.format(root=path.parent))
    return row[0]


def _checked_row(r: tuple, path: Path) -> Decision:
    try:
        return decision_from_row(r)
    except (ValueError, TypeError) as exc:
        raise DecisionLogDamagedError(path=str(path), unit=None, expected="well-formed decision records",
                                      found=f"{exc} in {tuple(r)[:5]!r}",
                                      hint="refused, never repaired; " + RECOVERY.format(root=path.parent)) from exc


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
