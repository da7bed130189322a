"""Embedded fleet-epoch store: SQLite (WAL, synchronous=FULL), one file shared by the processes of one
machine. Check-and-write steps run in BEGIN IMMEDIATE transactions, so they are linearizable; `wait_for`
polls, since SQLite has no notifications. Lease expiry uses the wall clock of the machine (one host)."""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from fito.coord.fleet_base import GENESIS, EpochDecision, FleetStore, NodeLease
from fito.coord.sqlite import Transaction, connect
from fito.errors import EpochConflictError, EpochFencedError, StaleFenceError

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_fence (id INTEGER PRIMARY KEY CHECK (id = 1), token INTEGER NOT NULL);
INSERT OR IGNORE INTO fleet_fence (id, token) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS fleet_epochs (
    epoch INTEGER PRIMARY KEY,
    config TEXT NOT NULL,
    decision_id TEXT NOT NULL UNIQUE,
    fence INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_leases (
    lease_id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    ttl REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_acks (
    node TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    lease_id INTEGER NOT NULL
);
"""
COLS = "epoch, config, decision_id, fence, revision, created"


class SqliteFleetStore(FleetStore):
    FILENAME = "fleet.sqlite"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0, poll: float = 0.01) -> None:
        self.path, self.poll = Path(path), poll
        self._db = connect(self.path, timeout=timeout, schema=SCHEMA)
        self._lock = threading.RLock()  # one connection, used by a node's watch thread and its main thread

    def _tx(self) -> Transaction:
        return Transaction(self._db, self._lock)

    def acquire_fence(self) -> int:
        with self._tx() as db:
            db.execute("UPDATE fleet_fence SET token = token + 1 WHERE id = 1")
            return int(db.execute("SELECT token FROM fleet_fence WHERE id = 1").fetchone()[0])

    def current_fence(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT token FROM fleet_fence WHERE id = 1").fetchone()[0])

    def current(self) -> EpochDecision:
        with self._lock:
            row = self._db.execute(f"SELECT {COLS} FROM fleet_epochs ORDER BY epoch DESC LIMIT 1").fetchone()
        return _row(row) if row else GENESIS

    def history(self) -> list[EpochDecision]:
        with self._lock:
            return [_row(r) for r in self._db.execute(f"SELECT {COLS} FROM fleet_epochs ORDER BY epoch")]

    def propose(self, epoch: int, config: str, fence: int, decision_id: str) -> EpochDecision:
        if epoch < 1:
            raise ValueError(f"epoch {epoch}: transitions go to epoch 1 or later")
        with self._tx() as db:
            row = db.execute(f"SELECT {COLS} FROM fleet_epochs WHERE decision_id = ?", (decision_id,)).fetchone()
            if row is not None:  # this proposal committed earlier (a retry)
                return _row(row)
            token = int(db.execute("SELECT token FROM fleet_fence WHERE id = 1").fetchone()[0])
            if fence != token:
                raise StaleFenceError(f"{self.path}: transition to epoch {epoch} refused: fencing token {fence} "
                                      f"is stale, current is {token}")
            cur = int(db.execute("SELECT COALESCE(MAX(epoch), 0) FROM fleet_epochs").fetchone()[0])
            if cur != epoch - 1:
                raise EpochConflictError(f"{self.path}: transition to epoch {epoch} refused: the fleet is at "
                                         f"epoch {cur}, a transition must go from {epoch - 1}")
            db.execute("INSERT INTO fleet_epochs (epoch, config, decision_id, fence, revision, created) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (epoch, config, decision_id, fence, epoch, time.time()))
            return _row(db.execute(f"SELECT {COLS} FROM fleet_epochs WHERE epoch = ?", (epoch,)).fetchone())

    def wait_for(self, after_epoch: int, timeout: float) -> EpochDecision | None:
        deadline = time.monotonic() + timeout
        while True:
            cur = self.current()
            if cur.epoch > after_epoch:
                return cur
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.poll)

    def grant_lease(self, node: str, ttl: float) -> NodeLease:
        with self._tx() as db:
            cur = db.execute("INSERT INTO fleet_leases (node, ttl, expires) VALUES (?, ?, ?)",
                             (node, ttl, time.time() + ttl))
            return NodeLease(node=node, lease_id=int(cur.lastrowid or 0), ttl=ttl)

    def keepalive(self, lease: NodeLease) -> None:
        with self._tx() as db:
            now = time.time()
            n = db.execute("UPDATE fleet_leases SET expires = ? + ttl WHERE lease_id = ? AND expires > ?",
                           (now, lease.lease_id, now)).rowcount
            if n != 1:
                raise EpochFencedError(f"node {lease.node}: lease {lease.lease_id} expired; it must re-join")

    def revoke(self, lease: NodeLease) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM fleet_leases WHERE lease_id = ?", (lease.lease_id,))
            db.execute("DELETE FROM fleet_acks WHERE lease_id = ?", (lease.lease_id,))

    def _live(self, db: sqlite3.Connection, lease_id: int) -> bool:
        row = db.execute("SELECT expires FROM fleet_leases WHERE lease_id = ?", (lease_id,)).fetchone()
        return row is not None and float(row[0]) > time.time()

    def _cur(self, db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT COALESCE(MAX(epoch), 0) FROM fleet_epochs").fetchone()[0])

    def ack(self, lease: NodeLease, epoch: int) -> None:
        with self._tx() as db:
            if not self._live(db, lease.lease_id):
                raise EpochFencedError(f"node {lease.node}: lease {lease.lease_id} expired; it must re-join")
            cur = self._cur(db)
            if epoch != cur:
                raise EpochFencedError(f"node {lease.node}: cannot acknowledge epoch {epoch}: it is not the "
                                       f"committed epoch ({cur})")
            db.execute("INSERT INTO fleet_acks (node, epoch, lease_id) VALUES (?, ?, ?) ON CONFLICT(node) "
                       "DO UPDATE SET epoch = excluded.epoch, lease_id = excluded.lease_id",
                       (lease.node, epoch, lease.lease_id))

    def admit(self, node: str, epoch: int) -> None:
        with self._tx() as db:
            cur = self._cur(db)
            row = db.execute("SELECT epoch, lease_id FROM fleet_acks WHERE node = ?", (node,)).fetchone()
            live = row is not None and self._live(db, int(row[1]))
            if epoch != cur or not live or int(row[0]) != epoch:
                acked = "nothing (no live lease)" if not live else str(row[0])
                raise EpochFencedError(f"node {node} fenced out of a collective at epoch {epoch}: committed epoch "
                                       f"is {cur}, node acknowledged {acked}")

    def participants(self, epoch: int) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT a.node FROM fleet_acks a JOIN fleet_leases l ON a.lease_id = l.lease_id "
                "WHERE a.epoch = ? AND l.expires > ? ORDER BY a.node", (epoch, time.time())).fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(r: tuple) -> EpochDecision:
    epoch, config, decision_id, fence, revision, created = r
    return EpochDecision(epoch=int(epoch), config=str(config), decision_id=str(decision_id), fence=int(fence),
                         revision=int(revision), created=float(created))
