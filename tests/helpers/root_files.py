"""What a restore must leave as it was, for the mutation fuzzers: every file of a root (by content) and the
decision records."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import xxhash

DB = "decisions.sqlite"


def digests(root: Path, skip: set[str]) -> dict[str, str]:
    """xxh3 of every file (links as their target text) except the mutated ones and the decision log."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel in skip or rel.startswith(DB) or any(rel.startswith(s + "/") for s in skip):
            continue
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_file():
            out[rel] = xxhash.xxh3_64_hexdigest(p.read_bytes())
    return out


def decisions(root: Path) -> list[tuple] | None:
    try:
        db = sqlite3.connect(f"file:{root / DB}?mode=ro", uri=True)
        try:
            return db.execute("SELECT seq, epoch, attempt, outcome, manifest, manifest_hash, retired FROM decisions ORDER BY seq").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
