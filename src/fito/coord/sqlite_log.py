"""The decision log's SQLite file: open it (read-only, or for writing), create it atomically, check that it is
a fito log, migrate a v1 log, and say what went wrong in words an operator can act on.

Journal mode: rollback journal (journal_mode=DELETE) with synchronous=EXTRA, not WAL. Why:
- A plain copy of `decisions.sqlite` alone is a whole, valid backup after any COMMIT: every committed
  transaction is in the main file. In WAL mode the decisions sit in `-wal` until a checkpoint, and a
  checkpoint after each write is only best-effort (it cannot finish while a reader holds an old snapshot).
- Readers need no write access: a rollback-journal database opens with `mode=ro` on a read-only directory
  or mount; WAL needs a writable `-shm` next to the file.
- EXTRA, not FULL: in DELETE mode the commit point is the unlink of the journal, and only EXTRA fsyncs the
  directory after it; with FULL a power cut right after COMMIT may bring the journal back and roll back a
  decision that was already reported durable.
- Cost (benchmarks/decision_log_modes.py, ext4 on a virtual disk shared by a busy 2-core machine, medians of
  3 runs of 300 publishes): DELETE+EXTRA 3.6-7 ms, DELETE+FULL 3.3-6.5 ms, WAL+FULL with a TRUNCATE
  checkpoint after each write 3.8-5.7 ms, plain WAL+FULL (not self-contained) 0.5-2.4 ms. Making the main
  file whole costs the same fsyncs either way; a publish happens once per save, next to shard writes of
  seconds. Readers and the writer briefly exclude each other (a read waits out a commit), also noise.
A v1 log (WAL) still opens; opened for writing it is switched to DELETE (when no other process has it
open; else it stays WAL and is checkpointed after each write).
"""
from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from pathlib import Path

from fito.coord.base import Decision, new_log_id
from fito.errors import (
    DecisionLogDamagedError, DecisionLogLockedError, DecisionLogMissingError, DecisionLogReadOnlyError, FitoError,
)
from fito.protocol.layout import STEPS, valid_log_id

log = logging.getLogger("fito")
FORMAT = "fito-decisions/2"
SIDE_FILES = ("-journal", "-wal", "-shm")
DECISION_COLUMNS = ("seq", "decision_id", "epoch", "attempt", "outcome", "manifest", "manifest_hash", "fence",
                    "retired", "created")
SCHEMA = """
CREATE TABLE fence (id INTEGER PRIMARY KEY CHECK (id = 1), token INTEGER NOT NULL);
CREATE TABLE decisions (
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
META = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
RECOVERY = ("put decisions.sqlite back from a backup (a copy of that file alone is a whole backup), or move "
            "it aside and run `fito recover-log {root}` to rebuild a log from the whole, verified attempts")


# ---------------------------------------------------------------- what is (not) there
def refuse_links(path: Path) -> None:
    """The log and its side files must be plain files in the root: through a symlink SQLite would write
    (journals, rollbacks) wherever the link points, outside the checkpoint root."""
    for p in (path, *(Path(f"{path}{s}") for s in SIDE_FILES)):
        if p.is_symlink():
            raise DecisionLogDamagedError(
                path=str(p), unit=None, expected="a regular file", found=f"a symlink to {os.readlink(p)}",
                hint="fito does not follow links for its decision log (SQLite would write next to the target, "
                     "outside the checkpoint root); replace the link by the file itself")
    if path.exists() and not path.is_file():
        raise DecisionLogDamagedError(path=str(path), unit=None, expected="a regular file",
                                      found="a directory or special file", hint=RECOVERY.format(root=path.parent))


def refuse_if_lost(path: Path) -> None:
    """No log, but attempts beside it: the log was lost. Creating an empty one would say "nothing committed"."""
    epochs = path.parent / STEPS
    steps = sorted(os.listdir(epochs)) if epochs.is_dir() else []
    if steps:
        root = path.parent
        raise DecisionLogMissingError(
            f"{path}: the decision log is missing, but {epochs} holds attempts of {len(steps)} step(s) "
            f"({', '.join(steps[-3:])}{', ...' if len(steps) > 3 else ''}); fito will not create an empty log next "
            f"to them (it would report no checkpoint, and the next save would start over). To recover: put "
            f"decisions.sqlite back from a backup (a copy of that file alone is a whole backup), or run "
            f"`fito recover-log {root}` to see which whole, verified attempts it would record as committed, then "
            f"`fito recover-log {root} --apply`. To start a new log anyway "
            f"(the old attempts are then never restored nor deleted by it), pass "
            f"store=SqliteDecisionStore('{path}', replace_lost=True).")


# ---------------------------------------------------------------- opening and creating
def open_db(path: Path, *, write: bool, timeout: float, roll_back: bool = True) -> sqlite3.Connection:
    """A connection to an existing log: `mode=ro` never writes (not even a journal), `mode=rw` never creates.
    A hot journal (a writer died inside a transaction): `roll_back` rolls it back where the log is writable
    (the Checkpointer's store, `fito gc`); without it, refused (a read-only store: fito.dcp.Reader, inspect,
    verify write nothing, that rollback included)."""
    refuse_links(path)
    uri = f"{path.absolute().as_uri()}?mode={'rw' if write else 'ro'}"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise translate(exc, path, "open the decision log", timeout, write=write) from exc
    try:
        if write:
            _prefer_rollback_journal(db, path)
            db.execute("PRAGMA synchronous=EXTRA")
        else:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        db.close()
        if getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
            raise translate(exc, path, "open the decision log", timeout, write=write) from exc
        if not roll_back:
            raise interrupted(path) from exc
        return _after_rollback(path, timeout)
    except BaseException:
        db.close()
        raise
    return db


def interrupted(path: Path) -> DecisionLogReadOnlyError:
    """A hot journal met by a reader that writes nothing (fito.dcp.Reader, `fito inspect`, `fito verify`)."""
    return DecisionLogReadOnlyError(
        f"{path}: a write to the decision log was interrupted (its journal {path.name}-journal is still there and "
        "'hot': the main file may hold half of that write). This reader opened the log read-only and writes "
        "nothing, so it does not roll the write back. The training job's own Checkpointer (restore or save) or "
        f"`fito gc {path.parent} --keep K` rolls it back (SQLite's recovery of an interrupted write); then read "
        f"again. If {path.name}-journal was not left by this log's writer (copied in from elsewhere), move it "
        "aside instead, keeping it")


def _after_rollback(path: Path, timeout: float) -> sqlite3.Connection:
    """A writer died inside a transaction and left a hot journal: the main file may hold half of it, and only
    a connection with write access may roll it back. That is the interrupted write's own recovery, the same
    any next writer does; a reader without write access cannot read the log until then."""
    if not _writable(path):
        raise DecisionLogReadOnlyError(
            f"{path}: a write to the decision log was interrupted (its journal {path.name}-journal is still there) "
            "and the log is read-only here, so it cannot be rolled back; open the root once with write access "
            "(any save or `fito gc`), then read it again")
    db = open_db(path, write=True, timeout=timeout)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # rolls the hot journal back
    except sqlite3.Error as exc:
        raise translate(exc, path, "roll back an interrupted write of the decision log", timeout, write=True) from exc
    finally:
        db.close()
    return open_db(path, write=False, timeout=timeout, roll_back=False)


def _prefer_rollback_journal(db: sqlite3.Connection, path: Path) -> None:
    mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    if mode == "delete":
        return
    try:
        db.execute("PRAGMA journal_mode=DELETE")  # a v1 log; leaving WAL needs every other connection closed
    except sqlite3.OperationalError as exc:
        log.warning("%s: kept in WAL mode (%s: another process has it open); it is checkpointed after each write "
                    "instead, so a copy of the main file alone is a backup only while no reader holds it", path, exc)


def uses_wal(db: sqlite3.Connection) -> bool:
    return db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def create_log(path: Path, *, fence_floor: int = 0, origin: str = "new", timeout: float = 30.0) -> bool:
    """Create a new, empty log at `path` atomically: built under a temporary name, made durable, then linked
    into place (never over an existing log). Return False if another process created one first.
    `fence_floor`: the first fence handed out is fence_floor + 1 (a rebuilt log fences out the old attempts)."""
    for side in (Path(f"{path}{s}") for s in SIDE_FILES):
        if side.exists() or side.is_symlink():  # SQLite would apply a lost log's journal to the new one
            raise DecisionLogDamagedError(
                path=str(side), unit=None, expected="no journal without its log", found="a journal of a lost log",
                hint=f"move {side.name} aside (keep it, with any copy of the log), then retry")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    except OSError as exc:
        raise _os_error(exc, path, "create the decision log") from exc
    try:
        db = sqlite3.connect(tmp, timeout=timeout, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=EXTRA")
            db.execute("BEGIN IMMEDIATE")
            for statement in (META, *SCHEMA.split(";")):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO fence (id, token) VALUES (1, ?)", (fence_floor,))
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                           [("format", FORMAT), ("log_id", new_log_id()), ("origin", origin),
                            ("created", f"{time.time():.3f}")])
            db.execute("COMMIT")
        finally:
            db.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic and exclusive: a concurrent creator's log is never replaced
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    except sqlite3.Error as exc:
        raise translate(exc, path, "create the decision log", timeout, write=True) from exc
    except OSError as exc:
        raise _os_error(exc, path, "create the decision log") from exc
    finally:
        for p in (tmp, Path(f"{tmp}-journal")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- is it a fito log?
def check_log(db: sqlite3.Connection, path: Path) -> str | None:
    """Refuse anything but a whole fito log; return its id (None for a v1 log, which has no identity)."""
    def damaged(expected: str, found: str) -> DecisionLogDamagedError:
        return DecisionLogDamagedError(path=str(path), unit=None, expected=expected, found=found,
                                       hint="fito refuses it and never repairs or resets it (a reset fence would let "
                                            "an old coordinator commit again); " + RECOVERY.format(root=path.parent))
    try:
        if (verdict := db.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
            raise damaged("an intact SQLite file", verdict)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"fence", "decisions"} <= tables or tables - {"fence", "decisions", "meta", "sqlite_sequence"}:
            raise damaged("tables fence, decisions and meta", f"tables {sorted(tables)}")
        for table, columns in (("decisions", DECISION_COLUMNS), ("fence", ("id", "token")), ("meta", ("key", "value"))):
            found = tuple(r[1] for r in db.execute(f"PRAGMA table_info({table})"))
            if table in tables and found != columns:
                raise damaged(f"columns {columns} in table {table}", f"{found}")
        rows = db.execute("SELECT id, token FROM fence").fetchall()
        if len(rows) != 1 or rows[0][0] != 1 or type(rows[0][1]) is not int or rows[0][1] < 0:
            raise damaged("one fencing token (table fence, id 1)", f"rows {rows[:3]}")
        newest = db.execute("SELECT max(fence) FROM decisions").fetchone()[0]
        if newest is not None and (type(newest) is not int or newest > rows[0][1]):
            raise damaged(f"decisions under fences <= the token {rows[0][1]}", f"a decision under fence {newest!r}")
        for r in db.execute(f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions ORDER BY seq"):
            try:
                decision_from_row(r)
            except (TypeError, ValueError) as exc:
                raise damaged("well-formed decision records", f"{exc} in {tuple(r)[:5]!r}") from None
        if "meta" not in tables:
            return None  # a v1 log
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT or not valid_log_id(meta.get("log_id")):
            raise damaged(f"format {FORMAT} and a log id", f"meta {dict(list(meta.items())[:4])}")
        return str(meta["log_id"])
    except sqlite3.Error as exc:
        raise translate(exc, path, "read the decision log", 0.0, write=False) from exc


def migrate_v1(db: sqlite3.Connection) -> None:
    """Give a v1 log (opened for writing) its identity. Inside the caller's write transaction."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
        return  # another process migrated it first
    db.execute(META)
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                   [("format", FORMAT), ("log_id", new_log_id()), ("origin", "v1"), ("created", f"{time.time():.3f}")])


# ---------------------------------------------------------------- what went wrong
def translate(exc: sqlite3.Error, path: Path, doing: str, timeout: float, *, write: bool) -> FitoError:
    """Name what happened: locked by another process, read-only, disk full, or damaged."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        who = holders(path)
        return DecisionLogLockedError(
            f"{path}: could not {doing}: the decision log is locked by another process "
            f"({', '.join(who) if who else 'not visible from here, maybe on another host'}) and stayed locked for "
            f"{timeout:g}s ({text}). Another job, `fito gc` or a tool such as the sqlite3 shell holds it: let it "
            "finish or stop it, then retry; a longer wait is SqliteDecisionStore(path, timeout=...)")
    if "readonly" in low or "read-only" in low or (write and "unable to open" in low and not _writable(path)):
        return DecisionLogReadOnlyError(
            f"{path}: could not {doing}: the decision log is read-only (its file, its directory or the mount does "
            f"not allow writing; {text}). Restoring, listing, `fito inspect` and `fito verify` work on a read-only "
            "root; saving and `fito gc` need write access")
    if "full" in low:
        return FitoError(f"{path}: could not {doing}: the disk is full ({text}); free space, then retry "
                         "(nothing was recorded)")
    return DecisionLogDamagedError(path=str(path), unit=None, expected="a fito SQLite decision log", found=text,
                                   hint="fito refuses it and never repairs or resets it; "
                                        + RECOVERY.format(root=path.parent))


def _os_error(exc: OSError, path: Path, doing: str) -> FitoError:
    import errno

    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return DecisionLogReadOnlyError(f"{path}: could not {doing}: {path.parent} is read-only ({exc.strerror})")
    if exc.errno == errno.ENOSPC:
        return FitoError(f"{path}: could not {doing}: the disk is full; free space, then retry")
    return FitoError(f"{path}: could not {doing}: {exc}")


def _writable(path: Path) -> bool:
    return os.access(path if path.exists() else path.parent, os.W_OK)


def holders(path: Path) -> list[str]:
    """Processes of this host that have the log (or a side file) open, as 'pid N (name)'; best effort."""
    targets = {str(path.absolute()), *(f"{path.absolute()}{s}" for s in SIDE_FILES)}
    found: list[str] = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(_link(f"/proc/{pid}/fd/{fd}") in targets for fd in fds):
                continue
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        found.append(f"pid {pid} ({name}{', this process' if int(pid) == os.getpid() else ''})")
    return found[:5]


def _link(fd_path: str) -> str:
    """Where an open fd points, or "" if it closed since the listing (another thread of that process: skipping
    the whole process on one such fd hid the very holder, this process included, under load)."""
    try:
        return os.readlink(fd_path)
    except OSError:
        return ""


def decision_from_row(r: tuple) -> Decision:
    seq, decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence, retired, created = r
    if outcome not in ("commit", "abort"):
        raise ValueError(f"unknown outcome {outcome!r}")
    for name, value, kind in (("seq", seq, int), ("epoch", epoch, int), ("fence", fence, int), ("retired", retired, int),
                              ("decision_id", decision_id, str), ("attempt", attempt, str), ("manifest", manifest, str),
                              ("manifest_hash", manifest_hash, str), ("created", created, (int, float))):
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"{name} is {type(value).__name__} {value!r}")
    if epoch < 0 or retired not in (0, 1):
        raise ValueError(f"epoch {epoch} / retired {retired} out of range")
    return Decision(
        epoch=epoch, attempt=attempt, outcome=outcome, manifest=manifest, manifest_hash=manifest_hash,
        decision_id=decision_id, fence=fence, seq=seq, retired=bool(retired), created=float(created),
    )
