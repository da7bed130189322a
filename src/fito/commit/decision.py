"""The one decision choice: which committed step a reader restores, and what it raises when it cannot say.
`Checkpointer.restore`, `fito.dcp.Reader`, `fito verify`, `fito inspect`, `fito export` and `fito recover-log`
all read decisions through here, so one root gives one answer (and one error class, on every rank) whichever
way it is read.

The situations, each with its class (a job's restore pattern treats only the first as "start fresh"):
- NoCommittedEpochError: nothing was ever committed here (no root, no log and no attempts, an empty log),
  or the asked step is not committed;
- DecisionLogMissingError: attempts, but no log (it was lost; `fito recover-log`);
- DecisionLogDamagedError: the log is not a whole fito log;
- DecisionLogLockedError: another process held its lock past the timeout (it names the file, the holders
  it can see and what to do);
- DecisionLogReadOnlyError: a read-only reader found an interrupted write's journal it may not roll back.
Newest means newest by commit order (the decision's `seq`), as the log records it, not the highest step.

May import protocol/, coord/, storage/, format/ and errors; never ckpt/ or dcp/ (they import this)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Protocol

from fito.storage import open_storage
from fito.storage.base import Storage

from fito.coord.base import Decision, DecisionStore
from fito.coord.choose import default_store
from fito.errors import (
    DecisionLogDamagedError, DecisionLogLockedError, DecisionLogMissingError, DecisionLogReadOnlyError, FitoError,
    NoCommittedEpochError,
)

# The classes a decision choice raises; a class name broadcast by rank 0 is rebuilt as one of these.
CHOICE_ERRORS: tuple[type[FitoError], ...] = (
    NoCommittedEpochError, DecisionLogMissingError, DecisionLogDamagedError, DecisionLogLockedError,
    DecisionLogReadOnlyError,
)


class Broadcaster(Protocol):
    """What the choice needs of a transport (fito.commit.transport.Transport): rank 0's word on every rank."""

    rank: int

    def broadcast(self, payload: bytes | None) -> bytes: ...


def read_committed(root: str | Path | Storage, store: DecisionStore | None = None) -> list[Decision]:
    """The committed decisions of `root`, oldest commit first, read without writing anything. `store`: the
    caller's (a Checkpointer's, an etcd store); None: the root's default store (fito.coord.choose) opened
    read-only (no root: NoCommittedEpochError; for a SQLite log, no log and no attempts: NoCommittedEpochError,
    attempts but no log: DecisionLogMissingError)."""
    return _read(root, store, committed=True)


def read_decisions(root: str | Path | Storage, store: DecisionStore | None = None) -> list[Decision]:
    """Every decision of `root` (aborted and retired ones too: `fito inspect`), read as read_committed reads,
    with the same errors."""
    return _read(root, store, committed=False)


def _read(root: str | Path | Storage, store: DecisionStore | None, *, committed: bool) -> list[Decision]:
    if store is not None:
        return store.committed() if committed else store.decisions()
    if isinstance(root, (str, os.PathLike)):
        if not Path(root).is_dir():
            raise NoCommittedEpochError(f"{root}: no such checkpoint directory, so no checkpoint")
        root = open_storage(root, create=False)
    own = default_store(root, create=False, readonly=True)
    try:
        return own.committed() if committed else own.decisions()
    finally:
        own.close()


def candidates(committed: list[Decision], step: int | None, root: str | Path) -> list[Decision]:
    """The decisions a restore may try, newest (by commit order) last: all of them, or with `step` those up
    to that step's newest commit (fallback moves to older commits from there)."""
    if step is not None:
        matches = [i for i, d in enumerate(committed) if d.epoch == step]
        if not matches:
            raise NoCommittedEpochError(
                f"{root}: step {step} is not committed; committed: {[d.epoch for d in committed]}")
        committed = committed[: matches[-1] + 1]
    if not committed:
        raise NoCommittedEpochError(f"{root}: no committed checkpoint (no decision record says any step committed)")
    return committed


def choose(root: str | Path | Storage, step: int | None = None, store: DecisionStore | None = None) -> Decision:
    """The decision a one-process reader loads (`fito verify`): the newest committed, or `step`'s."""
    return candidates(read_committed(root, store), step, getattr(root, "root", root))[-1]


def agree(transport: Broadcaster, root: str | Path, rank0: Callable[[], list[Decision]]) -> list[Decision]:
    """Run `rank0` (the candidates) on rank 0 and give its answer to every rank: the same list, or an error
    of the same class on every rank (rank 0's own error where it is one of CHOICE_ERRORS), so every rank's
    `except` takes the same branch."""
    mine: BaseException | None = None
    payload = None
    if transport.rank == 0:
        try:
            payload = {"decisions": [[d.epoch, d.attempt, d.manifest, d.manifest_hash, d.seq] for d in rank0()]}
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it, none waits for a list that never comes
            mine = exc
            payload = {"error": str(exc), "kind": type(exc).__name__}
    doc = json.loads(transport.broadcast(json.dumps(payload).encode() if payload is not None else None))
    if "error" in doc:
        if mine is not None and type(mine) in CHOICE_ERRORS:
            raise mine
        error = refusal_of(doc.get("kind"), doc["error"], root, rank0=transport.rank == 0)
        raise error from mine
    return [Decision(e, a, "commit", m, h, seq=s) for e, a, m, h, s in doc["decisions"]]


def refusal_of(kind: object, text: str, root: str | Path, *, rank0: bool = False) -> FitoError:
    """Rank 0's choice error as another rank raises it: of the same class (one of CHOICE_ERRORS; any other
    error is a FitoError), with rank 0's words."""
    said = text if rank0 else f"rank 0 could not choose the step to restore: {text}"
    cls = next((c for c in CHOICE_ERRORS if c.__name__ == kind), FitoError)
    if cls is DecisionLogDamagedError:
        return DecisionLogDamagedError(path=str(root), unit=None, expected="a decision log rank 0 can read",
                                       found=said, hint="see rank 0's error")
    return cls(said)
