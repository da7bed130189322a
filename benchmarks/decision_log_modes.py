"""Publish latency of the decision log under SQLite journal modes (the figures in fito.coord.sqlite_log).

    PYTHONPATH=src python3 benchmarks/decision_log_modes.py [--n 300] [--dir /path/on/the/disk/to/measure]

Each mode: one transaction per publish like SqliteDecisionStore.publish (BEGIN IMMEDIATE, a fence read,
an INSERT, COMMIT), timed end to end; WAL+TRUNCATE adds the checkpoint that would make the main file
self-contained. The last line times the real store (DELETE + EXTRA)."""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from fito.coord.base import Decision
from fito.coord.sqlite import SqliteDecisionStore
from fito.coord.sqlite_log import SCHEMA

MODES = [("delete", "EXTRA", False), ("delete", "FULL", False), ("wal", "FULL", True), ("wal", "FULL", False)]


def raw(path: Path, journal: str, sync: str, checkpoint: bool, n: int) -> list[float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA journal_mode={journal}")
    db.execute(f"PRAGMA synchronous={sync}")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("INSERT INTO fence VALUES (1, 1)")
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("SELECT token FROM fence WHERE id = 1").fetchone()
        db.execute("INSERT INTO decisions (decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence, created)"
                   " VALUES (?, ?, 'a', 'commit', 'm', 'h', 1, 0)", (str(i), i))
        db.execute("COMMIT")
        if checkpoint:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out.append(time.perf_counter() - t0)
    db.close()
    return out


def store(path: Path, n: int) -> list[float]:
    s = SqliteDecisionStore(path)
    fence = s.acquire_fence()
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        s.publish(Decision(i, "a", "commit", "m", "h", decision_id=str(i)), fence)
        out.append(time.perf_counter() - t0)
    s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        runs = [(f"{j}+{s}{'+checkpoint(TRUNCATE)' if c else ''}", raw(Path(tmp) / f"{j}{s}{c}.sqlite", j, s, c, args.n))
                for j, s, c in MODES]
        runs.append(("SqliteDecisionStore.publish (delete+EXTRA)", store(Path(tmp) / "store.sqlite", args.n)))
    for name, times in runs:
        q = statistics.quantiles(times, n=100)
        print(f"{name:45s} median {statistics.median(times) * 1e3:6.2f} ms   p99 {q[98] * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
