"""A rank's side of the commit: write its shard under a fresh path, persist it (bytes and name durable),
and only then vouch for it with READY (a reflective acknowledgement carrying the content hashes)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from fito.protocol.messages import (
    Aborted, Begin, Command, Committed, Event, Persist, Persisted, Ready, SendReady, ShardWritten, WriteShard,
    shard_path,
)


class ParticipantPhase(enum.Enum):
    IDLE = "idle"
    WRITING = "writing"
    PERSISTING = "persisting"
    READY_SENT = "ready-sent"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Participant:
    """Immutable: `handle` returns the next machine and the commands to execute, so the model checker
    can keep any state it reached without copying."""

    rank: int
    phase: ParticipantPhase = ParticipantPhase.IDLE
    epoch: int = -1
    attempt: str = ""
    written: ShardWritten | None = None

    def handle(self, event: Event) -> tuple["Participant", list[Command]]:
        P = ParticipantPhase
        if isinstance(event, Begin) and self.phase in (P.IDLE, P.COMMITTED, P.ABORTED):
            nxt = replace(self, phase=P.WRITING, epoch=event.epoch, attempt=event.attempt, written=None)
            return nxt, [WriteShard(self.rank, event.epoch, event.attempt, shard_path(event.epoch, event.attempt, self.rank))]
        if isinstance(event, ShardWritten) and self.phase is P.WRITING:
            return self.after_write(event)
        if isinstance(event, Persisted) and self.phase is P.PERSISTING:
            return self.send_ready()
        if isinstance(event, Committed) and event.attempt == self.attempt and self.phase is P.READY_SENT:
            return replace(self, phase=P.COMMITTED), []
        if isinstance(event, Aborted) and event.attempt == self.attempt and self.phase not in (P.COMMITTED,):
            return replace(self, phase=P.ABORTED), []
        return self, []  # stale or duplicate event: ignored

    def after_write(self, event: ShardWritten) -> tuple["Participant", list[Command]]:
        return replace(self, phase=ParticipantPhase.PERSISTING, written=event), [Persist(event.path)]

    def send_ready(self) -> tuple["Participant", list[Command]]:
        assert self.written is not None
        ready = Ready(self.epoch, self.attempt, self.rank, self.written.path, self.written.size, self.written.units)
        return replace(self, phase=ParticipantPhase.READY_SENT), [SendReady(ready)]
