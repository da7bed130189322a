"""The discard a coordinator runs after its attempt failed, and planted bugs against the newer commit rules
(issue 16), as machines the checker explores.

* `DiscardingCoordinator` -- the library's coordinator plus discard: once its abort is decided (an abort
  published, or its publish refused because it was fenced out), it deletes its own attempt by the
  library's plan, `fito.protocol.gc.plan_discard`: its objects by name, then its directories only if empty
  (`Discard`, executed by fito.model.simexec). With `Config(discard=True)` the checker runs it in place of
  the plain coordinator.
* `RecursiveDiscard` (planted bug) -- `Writer.discard` before issue 16: look whether `epochs/<step>` holds
  anything but this attempt, and if not, remove it recursively. The look and the removal are two steps, so a
  newer coordinator's attempt of the same step can appear in between -- and is deleted after it committed.
* `NoCoverageCheck` (planted bug) -- a coordinator that accepts the READYs without checking that they vouch
  for every chunk of the global plan. Caught with `Config(short_writes=True)`, where a rank's write may
  vouch for none of its chunks (its plan missed them)."""
from __future__ import annotations

from dataclasses import dataclass

from fito.protocol import Coordinator, CoordinatorPhase
from fito.protocol.messages import DecisionPublished, Discard, Event, PublishRejected


@dataclass(frozen=True)
class CheckDiscardable:
    """The buggy discard's first step: delete one's objects, then look whether the step's directory holds
    anything else."""

    epoch: int
    attempt: str


@dataclass(frozen=True)
class DiscardChecked:
    """Reply to CheckDiscardable: whether the step's directory held nothing but the attempt."""

    empty: bool


@dataclass(frozen=True)
class RemoveTree:
    """rmtree of a directory, whatever is in it now."""

    path: str


def _aborts_now(before: Coordinator, event: Event) -> bool:
    """Whether `event` is the one that makes `before` decide its abort (what the library discards after)."""
    C = CoordinatorPhase
    return (isinstance(event, DecisionPublished) and before.phase is C.ABORTING) or (
        isinstance(event, PublishRejected) and before.phase in (C.PUBLISHING, C.ABORTING))


@dataclass(frozen=True)
class DiscardingCoordinator(Coordinator):
    def handle(self, event: Event) -> tuple[Coordinator, list]:
        nxt, cmds = super().handle(event)
        if _aborts_now(self, event):
            return nxt, [*cmds, self.discard_command()]
        return nxt, cmds

    def discard_command(self) -> object:
        return Discard(self.epoch, self.attempt)


@dataclass(frozen=True)
class RecursiveDiscard(DiscardingCoordinator):
    def discard_command(self) -> object:
        return CheckDiscardable(self.epoch, self.attempt)

    def handle(self, event: Event) -> tuple[Coordinator, list]:
        if isinstance(event, DiscardChecked):
            epoch_dir = f"epochs/{self.epoch:012d}"
            return self, [RemoveTree(epoch_dir)] if event.empty else []
        return super().handle(event)


@dataclass(frozen=True)
class NoCoverageCheck(Coordinator):
    def coverage_problems(self) -> list[str]:
        return []


