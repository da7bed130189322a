"""The decision log interface: a checkpoint epoch exists only if a record here says it committed.

Writes are guarded by a fencing token: `acquire_fence()` hands out a strictly increasing token, and
`publish()` refuses any token older than the newest handed out, so a stale (zombie) coordinator cannot
commit after a newer one took over. Publishing is idempotent on `decision_id`: a retry after a timeout
that may or may not have landed is safe.

Who calls what: readers (restore, inspect, verify) call `decisions`/`committed` only, and need no write
access; the coordinator calls `acquire_fence` once, right before the first write of its first save, then
`publish`, and after a commit (retention) `retire`; an operator's `fito gc` retires with no fence.
"""
from __future__ import annotations

import abc
import secrets
from dataclasses import dataclass, field

from fito.errors import StaleFenceError
from fito.protocol.gc import live_commits
from fito.protocol.layout import LOG_ID_HEX
from fito.protocol.messages import Outcome


def fenced_out(where: str, what: str, fence: int, current: int, newer: str = "") -> StaleFenceError:
    """The error a coordinator gets when another one has taken the root's fencing token since: what was
    refused, and what to do (`newer`: what is known of the newer coordinator, e.g. its first commit)."""
    return StaleFenceError(
        f"{where}: {what} refused: fencing token {fence} is stale, current is {current}: another coordinator took "
        f"this root{newer} (another Checkpointer or process saving to it), and a root has one writer at a time -- the newest wins, so "
        "this save is lost. Give a second writer (a 'save best' Checkpointer beside a periodic CheckpointManager, an "
        "evaluator that saves) a root of its own, e.g. Checkpointer(root + '/best'); restoring, inspecting and "
        "verifying take no token and may share the root. If a newer run of this job replaced it, stop this one")


def new_log_id() -> str:
    """A random identity for a new decision log."""
    return secrets.token_hex(LOG_ID_HEX // 2)


@dataclass(frozen=True)
class Decision:
    epoch: int
    attempt: str
    outcome: Outcome
    manifest: str = ""  # path of the manifest relative to the checkpoint root ("" for aborts)
    manifest_hash: str = ""  # "algo:hex" of the manifest bytes
    decision_id: str = ""  # unique per attempt; makes publish idempotent
    fence: int = 0
    seq: int = 0  # commit order, assigned by the store
    retired: bool = False  # set by retention before the files are deleted
    created: float = field(default=0.0, compare=False)


class DecisionStore(abc.ABC):
    """Durable, atomic, fenced record of checkpoint decisions."""

    @abc.abstractmethod
    def acquire_fence(self) -> int:
        """Return a new fencing token, strictly greater than every token handed out before."""

    @abc.abstractmethod
    def current_fence(self) -> int:
        """The newest token handed out (0 if none)."""

    @abc.abstractmethod
    def publish(self, decision: Decision, fence: int) -> Decision:
        """Durably record `decision` if `fence` is current; return it with `seq` assigned.
        Raises StaleFenceError if a newer fence exists. Re-publishing the same decision_id returns
        the stored record (idempotent retry)."""

    @abc.abstractmethod
    def decisions(self) -> list[Decision]:
        """Every decision, in commit order (ascending seq)."""

    @abc.abstractmethod
    def retire(self, epoch: int, attempt: str, fence: int | None) -> None:
        """Mark a committed decision as retired (no longer restorable) before its files are deleted.

        One transaction that refuses (RetireRefusedError, nothing changed) unless a newer commit that is not
        retired exists: the newest committed step is never retired, whatever runs concurrently.
        `fence`: the coordinator's token (StaleFenceError if it is not current), or None for an operator's
        `fito gc`, which holds no fence so that it never fences out a live job."""

    def log_id(self) -> str | None:
        """This log's identity (fito.protocol.layout: attempt names carry it, so retention deletes only its own
        log's attempts). None: a store without one (attempt names then carry none either)."""
        return None

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    def committed(self) -> list[Decision]:
        """Committed, non-retired decisions in commit order; for an epoch committed twice the later wins."""
        return sorted(live_commits(self.decisions()), key=lambda d: d.seq)  # the GC plan's rule

    def outcome_of(self, epoch: int, attempt: str) -> Outcome | None:
        for d in self.decisions():
            if d.epoch == epoch and d.attempt == attempt:
                return d.outcome
        return None
