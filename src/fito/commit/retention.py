"""Retention and garbage collection: executes the pure plan of `fito.protocol.gc` over any Storage (its
`list` and `delete`: prefixes, no directories needed) and a DecisionStore. Runs after a commit is durable (the coordinator, between its saves) or from `fito gc` (an
operator, holding no fence). The rules -- retire before delete, never the newest committed, only attempts
whose coordinator can never publish, never a link or a foreign name -- live in the plan, not here."""
from __future__ import annotations

import time

from fito.coord.base import DecisionStore
from fito.errors import FitoError, GarbageCollectionError
from fito.protocol.gc import EPOCHS, Action, Delete, Entry, RemoveEmptyDir, Retire, Unlink, plan_discard, plan_gc
from fito.protocol.layout import parse_attempt, same_log
from fito.storage.base import Storage
from fito.storage.listing import has_directories, two_levels


def collect_garbage(storage: Storage, store: DecisionStore, fence: int | None, keep: int | None, *,
                    grace_seconds: float = 0.0, newest: tuple[int, str] | None = None,
                    rollback: bool = False) -> list[str]:
    """Run one collection; return the attempt directories deleted.

    `fence`: the caller's token if it is the coordinator (a stale one collects nothing), None for an
    operator. `newest`: the (step, attempt) the caller just committed. `grace_seconds`: leave undecided or
    aborted attempts younger than this alone (the job's own collection runs between saves and uses 0).
    `rollback`: committed steps above `newest` count as surplus for `keep` (fito.protocol.gc); else kept."""
    current = store.current_fence()  # before the decisions: an attempt older than this cannot gain one later
    decisions = store.decisions()
    log_id = store.log_id()  # undecided attempts are garbage only to the log whose identity they carry
    plan = plan_gc(decisions, list_attempts(storage), current_fence=current, own_fence=fence, keep=keep,
                   newest=newest, grace=grace_seconds, owned=lambda name: same_log(name, log_id), rollback=rollback)
    removed: list[str] = []
    failed: list[str] = []
    for action in plan.actions:
        if isinstance(action, Retire):
            # Durable before any of its files go. A failure stops here: every later action is either a
            # delete this retire must precede, or is retried by the next collection.
            store.retire(action.epoch, action.attempt, fence)
            continue
        try:  # one attempt that cannot be deleted must not keep the others forever
            if execute(storage, action):
                removed.append(action.path)  # type: ignore[union-attr]
        except (OSError, FitoError) as exc:
            failed.append(f"{action.path}: {type(exc).__name__}: {exc}")
    if failed:
        raise GarbageCollectionError(
            f"{storage.url}: {len(failed)} of {len(plan.actions)} clean-up steps failed ({'; '.join(failed[:3])}"
            f"{'; ...' if len(failed) > 3 else ''}); deleted {len(removed)} attempt(s). Nothing committed and kept "
            f"was touched; fix the cause ({_causes(storage)}) and run `fito gc` again")
    return removed


def _causes(storage: Storage) -> str:
    if has_directories(storage):
        return "permissions, a read-only mount"
    return "the credentials' delete permission on the prefix, the endpoint"


def execute(storage: Storage, action: Action) -> bool:
    """Run one deleting action of a plan (`plan_gc` or `plan_discard`); True if it deleted an attempt
    directory. Retire is the decision store's, not the storage's: the caller runs it."""
    if isinstance(action, Delete):
        storage.delete(action.path)  # the attempt's prefix: every object under it
        return True
    if isinstance(action, Unlink):
        storage.delete(action.path)
    elif isinstance(action, RemoveEmptyDir):
        if has_directories(storage):  # an object store has no empty directories: nothing to remove
            storage.remove_dir(action.path)  # type: ignore[attr-defined]  # non-recursive: a new attempt keeps it
    else:
        raise AssertionError(f"not a storage action: {action!r}")
    return False


def discard(storage: Storage, epoch: int, attempt: str, ranks: int) -> list[str]:
    """Best effort: run `plan_discard` (a failed attempt's own objects, then its directories non-recursively).
    Returns what could not be done (a later collection removes it)."""
    failed = []
    for action in plan_discard(epoch, attempt, ranks).actions:
        try:
            execute(storage, action)
        except Exception as exc:  # noqa: BLE001 - the save already failed; say so, do not mask it
            failed.append(f"{action.path}: {type(exc).__name__}: {exc}")  # type: ignore[union-attr]
    return failed


def list_attempts(storage: Storage, now: float | None = None) -> list[Entry]:
    """`epochs` and the names in each of its step prefixes, from the storage's listing (a POSIX backend's
    links as links, never followed). An attempt's age is from the time in its name (the coordinator's clock
    when it began), not the store's mtime; a name the layout did not make is never deleted, so its age is moot."""
    now = time.time() if now is None else now
    out: list[Entry] = []
    for rel, kind, mtime in two_levels(storage, EPOCHS):
        named = parse_attempt(rel.rpartition("/")[2]) if rel.count("/") == 2 else None
        out.append(Entry(rel, kind, now - (named.millis / 1000 if named is not None else mtime)))
    return out
