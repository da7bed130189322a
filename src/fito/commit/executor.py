"""The executor: runs the protocol machines' commands against a Storage and a DecisionStore.

`RankExecutor` runs a Participant's commands (WriteShard, Persist, SendReady); `CoordinatorExecutor` runs the
Coordinator's (WriteManifest, Persist, PublishDecision, Notify, CollectGarbage, Discard). Both keep the phase and the
object they were at, so a failure is said in the words of fito.commit.failure. How the bytes of an object or
a manifest are made is the adapter's (fito.dcp.Writer hands in callables); which commands run, in which
order, is the machines' alone. The model checker's simulated executor (fito.model.simexec) runs the same
commands against simulated storage."""
from __future__ import annotations

import logging
from typing import BinaryIO, Callable

from fito.commit.failure import at as failed_at
from fito.commit.retention import discard as discard_attempt
from fito.coord.base import Decision, DecisionStore
from fito.errors import CoordinationUnavailableError, StaleFenceError
from fito.format.hashing import digest
from fito.protocol.drive import Executor, recording
from fito.protocol.messages import (
    CollectGarbage, Command, DecisionPublished, Discard, Event, ManifestWritten, Notify, Persist, Persisted,
    PublishDecision, PublishRejected, Ready, SendReady, ShardWritten, UnitEntry, WriteManifest, WriteShard,
    attempt_dir,
)
from fito.storage.base import Storage

log = logging.getLogger("fito")
PUBLISH_TRIES = 3

# (open file, the command) -> (object size, the units it holds): the adapter's way of writing a rank's object
WriteObject = Callable[[BinaryIO, WriteShard], "tuple[int, tuple[UnitEntry, ...]]"]
# the readies of every rank -> the manifest's bytes
BuildManifest = Callable[[tuple[Ready, ...]], bytes]


def observed(execute: Executor, who: str, observe: Callable[[str, Command], None] | None) -> Executor:
    """`execute`, with every command shown to `observe` before it runs (tracing, the differential test)."""
    return execute if observe is None else recording(execute, who, observe)


def persist(storage: Storage, cmd: Command) -> Event:
    if not isinstance(cmd, Persist):
        raise AssertionError(f"unexpected protocol command {cmd!r}")
    storage.persist(cmd.path)
    return Persisted(cmd.path)


class RankExecutor:
    """One rank's executor for one attempt: creates its object (never over an existing one), writes it through
    `write`, persists it. `own`: the object once this executor created it (a failed save removes only that)."""

    def __init__(self, storage: Storage, step: int, attempt: str, write: WriteObject) -> None:
        self.storage, self.write = storage, write
        self.phase, self.where, self.own = "unit write", attempt_dir(step, attempt), ""

    def __call__(self, cmd: Command) -> Event | None:
        if isinstance(cmd, WriteShard):
            self.phase, self.where = "unit write", cmd.path
            self.storage.makedirs(attempt_dir(cmd.epoch, cmd.attempt))
            with self.storage.create(cmd.path) as f:
                self.own = cmd.path  # only once created: a file that was already there is never this save's to remove
                size, units = self.write(f, cmd)
            return ShardWritten(cmd.path, size, units)
        if isinstance(cmd, SendReady):
            return None  # the adapter carries the READY to the coordinator (fito.dcp: in the WriteResults)
        self.phase, self.where = "persist", getattr(cmd, "path", self.where)
        return persist(self.storage, cmd)

    def failure(self, exc: BaseException) -> str:
        return failed_at(self.phase, self.where, exc)

    def remove_own(self) -> None:
        """Best effort, after a failure: remove the object this executor created (by name)."""
        if not self.own:
            return
        try:
            self.storage.delete(self.own)
        except Exception as exc:  # noqa: BLE001 - the save already failed; say so, do not mask it
            log.warning("could not remove %s of a failed save (%s); GC after the next commit removes it", self.own, exc)


class CoordinatorExecutor:
    """The coordinator's executor for one attempt. Notify and CollectGarbage go to the outbox (`notify`,
    `collect`): the outcome is the adapter's to report, and GC runs only once the outcome is known.
    `sent_commit`: a commit decision was sent to the store (it may have landed even if the reply was lost:
    such an attempt is never discarded)."""

    def __init__(self, storage: Storage, store: DecisionStore, step: int, attempt: str, algorithm: str,
                 manifest: BuildManifest, ranks: int) -> None:
        self.storage, self.store, self.algorithm, self.manifest = storage, store, algorithm, manifest
        self.ranks = ranks  # whose objects a discard removes, by name
        self.phase, self.where = "manifest write", attempt_dir(step, attempt)
        self.sent_commit = False
        self.notify: list[Notify] = []
        self.collect: list[CollectGarbage] = []

    def __call__(self, cmd: Command) -> Event | None:
        if isinstance(cmd, WriteManifest):  # the machine checked coverage: every item exactly once
            self.phase, self.where = "manifest write", cmd.path
            data = self.manifest(cmd.readies)
            self.storage.write_bytes(cmd.path, data)
            return ManifestWritten(cmd.path, digest(self.algorithm, data))
        if isinstance(cmd, PublishDecision):
            self.phase, self.where = "publish", f"step {cmd.epoch}'s decision"
            self.sent_commit = self.sent_commit or cmd.outcome == "commit"  # it may land even if the reply is lost
            if cmd.outcome == "commit":
                return publish_decision(self.store, cmd)
            try:  # an abort's record is a courtesy (presumed abort): its failure does not stop the discard
                return publish_decision(self.store, cmd)
            except Exception as exc:  # noqa: BLE001
                log.warning("the abort of step %d (%s) was not recorded: %s", cmd.epoch, cmd.attempt, self.failure(exc))
                return PublishRejected(f"the abort was not recorded: {self.failure(exc)}", definite=False)
        if isinstance(cmd, Discard):
            discard(self.storage, cmd.epoch, cmd.attempt, self.ranks)
            return None
        if isinstance(cmd, Notify):
            self.notify.append(cmd)
            return None
        if isinstance(cmd, CollectGarbage):
            self.collect.append(cmd)  # after the outcome is known
            return None
        self.phase, self.where = "persist", getattr(cmd, "path", self.where)
        return persist(self.storage, cmd)

    def failure(self, exc: BaseException) -> str:
        return failed_at(self.phase, self.where, exc)


def discard(storage: Storage, step: int, attempt: str, ranks: int) -> None:
    """Best effort, by the coordinator: remove a failed attempt's objects once every rank is past writing and
    no commit was sent for it. The GC plan's discard (fito.protocol.gc.plan_discard): its own objects by
    name, then its directories non-recursively, so a newer coordinator's attempt of the same step is never
    touched."""
    failed = discard_attempt(storage, step, attempt, ranks)  # type: ignore[arg-type]
    if failed:
        log.warning("could not remove all of the failed attempt %s (%s); GC after the next commit removes it",
                    attempt_dir(step, attempt), "; ".join(failed[:3]))


def publish_decision(store: DecisionStore, cmd: PublishDecision) -> Event:
    """Publish the coordinator's decision under its fence, retrying while the store is unreachable."""
    decision = Decision(cmd.epoch, cmd.attempt, cmd.outcome, cmd.manifest, cmd.manifest_hash,
                        decision_id=f"{cmd.epoch}:{cmd.attempt}:{cmd.outcome}")
    unreachable: Exception | None = None
    for attempt in range(PUBLISH_TRIES):
        try:
            store.publish(decision, cmd.fence)
            return DecisionPublished(cmd.outcome)
        except StaleFenceError as exc:  # refused for good, unless an earlier try may have landed
            return PublishRejected(str(exc), definite=unreachable is None)
        except CoordinationUnavailableError as exc:  # may have landed: the same decision_id is idempotent
            log.warning("decision store unreachable (try %d of %d): %s", attempt + 1, PUBLISH_TRIES, exc)
            unreachable = exc
    return PublishRejected(f"decision store unreachable, outcome unknown until it answers: {unreachable}", definite=False)
