"""The coordinator's side of one attempt: the Coordinator machine, begun when the attempt is chosen, fed every
event the adapter learns (each rank's READY, a rank's failure, a timeout), its commands run by the executor.

Every outcome is the machine's: a commit is published under the fence; a failed or silent rank, a coverage
gap or a refused publish is an abort, published through the decision store (presumed abort covers an abort
that could not be recorded) and followed by the machine's Discard. The adapter (fito.dcp.Writer) only says
what happened and reports the outcome."""
from __future__ import annotations

import logging
from typing import Callable

from fito.commit.executor import BuildManifest, CoordinatorExecutor, observed
from fito.coord.base import DecisionStore
from fito.protocol import Begin, Command, Coordinator, CoordinatorPhase, Event, Notify
from fito.protocol.drive import feed, step
from fito.protocol.messages import CollectGarbage, Expected, RankFailed, TimedOut
from fito.storage.base import Storage

log = logging.getLogger("fito")
# phases in which the machine still takes a rank's failure or a timeout (no commit was sent yet)
OPEN = (CoordinatorPhase.COLLECTING, CoordinatorPhase.WRITING_MANIFEST, CoordinatorPhase.PERSISTING)


class CoordinatorSide:
    """Begin a Coordinator (with `discard=True`) for `attempt` of `step` under `fence`, expecting `expected`
    from `ranks` ranks. `manifest`: the manifest's bytes from the READYs (the adapter's format)."""

    def __init__(self, storage: Storage, store: DecisionStore, step: int, attempt: str, fence: int, ranks: int,
                 expected: Expected, algorithm: str, manifest: BuildManifest,
                 observe: Callable[[str, Command], None] | None = None) -> None:
        self.step, self.attempt = step, attempt
        self.executor = CoordinatorExecutor(storage, store, step, attempt, algorithm, manifest, ranks)
        self._execute = observed(self.executor, "coord", observe)
        self.machine = Coordinator(ranks, discard=True)
        self.handle(Begin(step, attempt, fence, expected))

    @property
    def open(self) -> bool:
        """Whether the machine still takes events (no outcome decided, no commit sent)."""
        return self.machine.phase in OPEN

    @property
    def notify(self) -> list[Notify]:
        return self.executor.notify

    @property
    def collect(self) -> list[CollectGarbage]:
        return self.executor.collect

    def handle(self, event: Event) -> None:
        """Feed one event and run the commands it yields, one at a time (fito.protocol.drive's order). If a
        command raises, the machine stays in the phase that issued it: a commit sent is never discarded."""
        self.machine, pending = feed(self.machine, event)
        while pending:
            self.machine, pending, _ = step(self.machine, pending, self._execute)

    def fail(self, event: RankFailed | TimedOut) -> None:
        """A rank failed or the coordinator stopped waiting: the machine aborts (if it still can), publishes
        the abort and discards. Best effort: the save has failed already, and presumed abort keeps it so."""
        if not self.open:
            return
        try:
            self.handle(event)
        except Exception as exc:  # noqa: BLE001 - the caller raises the save's own error
            log.warning("step %d, attempt %s: the abort could not be completed (%s: %s); nothing was committed, "
                        "GC after the next commit removes what is left", self.step, self.attempt,
                        type(exc).__name__, exc)
