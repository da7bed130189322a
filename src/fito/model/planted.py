"""The discard a coordinator runs after its attempt failed, and planted bugs against the newer commit rules
(issue 16), as machines the checker explores.

* Discard is the library's own machine: `fito.protocol.Coordinator(n, discard=True)`, the one
  fito.commit.coordinate runs. Once its abort is decided (an abort published, or refused; or its commit
  refused for good) it emits `Discard`, which fito.model.simexec executes by the library's plan,
  `fito.protocol.gc.plan_discard`: its objects by name, then its directories only if empty. With
  `Config(discard=True)` the checker begins every coordinator with `discard=True`.
* `RecursiveDiscard` (planted bug) -- `Writer.discard` before issue 16: look whether `epochs/<step>` holds
  anything but this attempt, and if not, remove it recursively. The look and the removal are two steps, so a
  newer coordinator's attempt of the same step can appear in between -- and is deleted after it committed.
* `NoCoverageCheck` (planted bug) -- a coordinator that accepts the READYs without checking that they vouch
  for every chunk of the global plan. Caught with `Config(short_writes=True)`, where a rank's write may
  vouch for none of its chunks (its plan missed them).
* `DedupCoordinator` -- replicated chunks written by several ranks (`Config(replicas=True)`: every rank
  writes a copy of one replicated item and vouches for it by hash): the coordinator keeps one copy per key,
  and only if every holder's hash is the same; copies that differ are refused (the save aborts), the rule
  `fito.plan.save.differing_replicas` applies before a DCP save is committed. Then the plan's coverage is
  checked on what was kept, as the library's coordinator does.
* `DedupKeepsFirst` (planted bug) -- keeps the first copy of each replicated key without comparing the
  others' hashes: a rank's differing value is silently replaced by another rank's."""
from __future__ import annotations

from dataclasses import dataclass

from fito.protocol import Coordinator
from fito.protocol.coverage import Key, Voucher, check_coverage
from fito.protocol.layout import step_dir
from fito.protocol.messages import Command, Event

REPLICA_KEY: Key = ("replica", None)  # the model's one replicated item: every rank holds and writes a copy


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


@dataclass(frozen=True)
class RecursiveDiscard(Coordinator):
    """The library's coordinator whose Discard is the old look-then-rmtree (when begun with discard=True)."""

    def discards(self) -> list[Command]:
        return [CheckDiscardable(self.epoch, self.attempt)] if self.discard else []  # type: ignore[list-item]

    def handle(self, event: Event) -> tuple[Coordinator, list]:
        if isinstance(event, DiscardChecked):
            return self, [RemoveTree(step_dir(self.epoch))] if event.empty else []
        return super().handle(event)


@dataclass(frozen=True)
class NoCoverageCheck(Coordinator):
    def coverage_problems(self) -> list[str]:
        return []


@dataclass(frozen=True)
class DedupCoordinator(Coordinator):
    """Keeps one copy of each replicated item, by hash: refuses (aborts) when the holders' hashes differ."""

    def coverage_problems(self) -> list[str]:
        kept, differ = self.dedup()
        if differ:  # named without ranks: which rank holds which copy says nothing the hashes do not
            return [f"{len(differ)} replicated value(s) differ between ranks: {', '.join(differ)}; nothing "
                    "is committed"]
        return [] if self.expected is None else check_coverage(self.epoch, dict(self.expected), kept)

    def dedup(self) -> tuple[list[Voucher], list[str]]:
        """The vouchers with one copy per replicated key (the lowest rank's), and the keys whose copies differ."""
        kept: list[Voucher] = []
        copies: dict[Key, set[str]] = {}
        for r in self.readies:  # sorted by rank
            for u in r.units:
                if u.key == REPLICA_KEY:
                    if u.key in copies:
                        copies[u.key].add(u.hash)
                        continue  # a copy of one already kept
                    copies[u.key] = {u.hash}
                kept.append(Voucher(r.rank, u.key, u.length, u.epoch))
        differ = [f"{k[0]!r} ({len(h)} different copies)" for k, h in copies.items() if len(h) > 1]
        return kept, differ if self.compares_replicas() else []

    def compares_replicas(self) -> bool:
        return True


@dataclass(frozen=True)
class DedupKeepsFirst(DedupCoordinator):
    def compares_replicas(self) -> bool:
        return False
