"""What went wrong during a save, in words an operator acts on: the phase, the object and the cause as the
operating system or the decision log reported it ("No space left on device" at the unit write of X),
never a guess such as "not written by fito, or damaged"."""
from __future__ import annotations

import errno
import sqlite3

# errno -> (what happened, what to do)
CAUSES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("No space left on device", "the disk is full: free space (or lower keep=); the next save "
                   "retries by itself and the failed attempt's files are removed"),
    errno.EDQUOT: ("Disk quota exceeded", "raise the quota or free space; the next save retries by itself"),
    errno.EROFS: ("Read-only file system", "the checkpoint root is mounted read-only: saving needs a writable "
                  "root (restoring does not)"),
    errno.EACCES: ("Permission denied", "this process may not write the checkpoint root: check its owner and mode"),
    errno.EPERM: ("Operation not permitted", "this process may not write the checkpoint root: check its owner and mode"),
    errno.EIO: ("Input/output error", "the device reported a failure: check the disk (dmesg) before trusting new saves"),
}

# SQLite reports OS trouble as OperationalError text; map it to the same words.
SQLITE_CAUSES: list[tuple[str, int | None, str]] = [
    ("database or disk is full", errno.ENOSPC, ""),
    ("disk i/o error", errno.EIO, ""),
    ("readonly database", errno.EROFS, ""),
    ("database is locked", None, "the decision log is locked by another process (another job or `fito gc` "
                                 "on this root?); retry when it has finished"),
]

PHASES = ("unit write", "persist", "manifest write", "publish", "post-commit GC")


def cause(exc: BaseException, obj: str = "") -> str:
    """One phrase: what happened, the file if the error names another one than `obj`, and what to do."""
    if isinstance(exc, OSError) and exc.errno in CAUSES:
        what, todo = CAUSES[exc.errno]
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        named = str(exc.filename) if exc.filename else ""
        where = f" ({named})" if named and not (obj and named.endswith(obj)) else ""
        return f"{what}{where} [{name}]: {todo}"
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        for needle, code, todo in SQLITE_CAUSES:
            if needle in text:
                if code is None:
                    return f"{exc} (SQLite): {todo}"
                what, default = CAUSES[code]
                return f"{what} at the decision log (SQLite: {exc}) [{errno.errorcode[code]}]: {todo or default}"
    return f"{type(exc).__name__}: {exc}"


def at(phase: str, obj: str, exc: BaseException) -> str:
    """`phase` of `obj` failed with `exc`, as one line for SaveAbortedError and the logs."""
    return f"{phase} of {obj}: {cause(exc, obj)}"
