"""The coordinator's side: collect READY from every rank, check that they cover the global plan exactly, write
and persist the manifest, then publish the decision durably under its fencing token (the commit point), and
only then tell the ranks. A failed or timed-out rank, a coverage gap or a refused publish is an abort; anything
short of a published commit is an abort anyway (presumed abort). Garbage collection comes strictly after.

With `discard=True` (the library's coordinators) an aborted attempt is also removed by the machine's own
command: Discard follows the abort's Notify once no commit of the attempt can land (none was sent, or the
store refused it for good). A refused commit whose outcome is unknown is left to GC."""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from fito.protocol.coverage import Voucher, check_coverage
from fito.protocol.messages import (
    NO_FENCE, Begin, CollectGarbage, Command, DecisionPublished, Discard, Event, Expected, GlobalPlan,
    ManifestWritten, Notify, Persist, Persisted, PublishDecision, PublishRejected, RankFailed, Ready, ReadyReceived, TimedOut,
    WriteManifest, manifest_path,
)


class CoordinatorPhase(enum.Enum):
    IDLE = "idle"
    COLLECTING = "collecting"
    WRITING_MANIFEST = "writing-manifest"
    PERSISTING = "persisting"  # the manifest
    PUBLISHING = "publishing"
    COMMITTED = "committed"
    ABORTING = "aborting"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Coordinator:
    world_size: int
    phase: CoordinatorPhase = CoordinatorPhase.IDLE
    epoch: int = -1
    attempt: str = ""
    readies: tuple[Ready, ...] = ()
    manifest: str = ""
    manifest_hash: str = ""
    reason: str = ""
    fence: int = NO_FENCE  # the fencing token every publish and GC of this attempt carries
    expected: Expected | None = None  # the global plan's items (Begin); None: no global plan
    discard: bool = False  # emit Discard once an abort is decided (see the module docstring)

    def handle(self, event: Event) -> tuple["Coordinator", list[Command]]:
        C = CoordinatorPhase
        if isinstance(event, Begin) and self.phase in (C.IDLE, C.COMMITTED, C.ABORTED):
            # replace(), not Coordinator(...): a subclass (a model-checker variant or mutation) stays itself
            return replace(self, phase=C.COLLECTING, epoch=event.epoch, attempt=event.attempt, readies=(),
                           manifest="", manifest_hash="", reason="", fence=event.fence,
                           expected=event.expected), []
        if isinstance(event, GlobalPlan) and self.phase is C.COLLECTING:
            return replace(self, expected=event.expected), []
        if isinstance(event, ReadyReceived) and self.phase is C.COLLECTING:
            return self.on_ready(event.ready)
        if isinstance(event, ManifestWritten) and self.phase is C.WRITING_MANIFEST:
            return replace(self, phase=C.PERSISTING, manifest=event.path, manifest_hash=event.hash), [Persist(event.path)]
        if isinstance(event, Persisted) and self.phase is C.PERSISTING:
            return self.publish()
        if isinstance(event, DecisionPublished) and self.phase is C.PUBLISHING:
            return self.on_published()
        if isinstance(event, DecisionPublished) and self.phase is C.ABORTING:
            return replace(self, phase=C.ABORTED), [Notify(self.epoch, self.attempt, "abort", self.reason),
                                                    *self.discards()]
        if isinstance(event, PublishRejected) and self.phase in (C.PUBLISHING, C.ABORTING):
            # Fenced out: our decision never landed, so by presumed abort the attempt is aborted. An abort's
            # record is a courtesy: refused or not, no commit was sent and the attempt can be removed.
            reason = f"decision refused: {event.reason}"
            gone = self.phase is C.ABORTING or event.definite
            return replace(self, phase=C.ABORTED, reason=reason), [Notify(self.epoch, self.attempt, "abort", reason),
                                                                   *(self.discards() if gone else [])]
        if isinstance(event, (RankFailed, TimedOut)) and self.phase in (
            C.COLLECTING, C.WRITING_MANIFEST, C.PERSISTING,
        ):
            reason = f"rank {event.rank} failed: {event.reason}" if isinstance(event, RankFailed) else event.reason
            return self.abort(reason)
        return self, []

    def on_ready(self, ready: Ready) -> tuple["Coordinator", list[Command]]:
        if ready.epoch != self.epoch or ready.attempt != self.attempt:
            return self, []  # READY from another attempt: not ours to count
        if any(r.rank == ready.rank for r in self.readies):
            return self, []
        readies = tuple(sorted(self.readies + (ready,), key=lambda r: r.rank))
        nxt = replace(self, readies=readies)
        if len(readies) < self.world_size:
            return nxt, []
        problems = nxt.coverage_problems()
        if problems:  # never write a manifest that does not vouch for the whole plan, exactly once
            return nxt.abort("coverage check failed: " + "; ".join(problems))
        return self.write_manifest(nxt)

    def coverage_problems(self) -> list[str]:
        """Every item of the global plan vouched for exactly once, with its size and this epoch's tag."""
        if self.expected is None:
            return []
        vouchers = (Voucher(r.rank, u.key, u.length, u.epoch) for r in self.readies for u in r.units)
        return check_coverage(self.epoch, dict(self.expected), vouchers)

    def write_manifest(self, nxt: "Coordinator") -> tuple["Coordinator", list[Command]]:
        path = manifest_path(self.epoch, self.attempt)
        return replace(nxt, phase=CoordinatorPhase.WRITING_MANIFEST), [
            WriteManifest(path, self.epoch, self.attempt, nxt.readies)
        ]

    def publish(self) -> tuple["Coordinator", list[Command]]:
        return replace(self, phase=CoordinatorPhase.PUBLISHING), [
            PublishDecision(self.epoch, self.attempt, "commit", self.manifest, self.manifest_hash, self.fence)
        ]

    def on_published(self) -> tuple["Coordinator", list[Command]]:
        return replace(self, phase=CoordinatorPhase.COMMITTED), [
            Notify(self.epoch, self.attempt, "commit"),
            CollectGarbage(self.epoch, self.attempt, self.fence),
        ]

    def discards(self) -> list[Command]:
        return [Discard(self.epoch, self.attempt)] if self.discard else []

    def abort(self, reason: str) -> tuple["Coordinator", list[Command]]:
        # Recording the abort is a courtesy for `fito inspect`; safety rests on presumed abort.
        return replace(self, phase=CoordinatorPhase.ABORTING, reason=reason), [
            PublishDecision(self.epoch, self.attempt, "abort", fence=self.fence)
        ]
