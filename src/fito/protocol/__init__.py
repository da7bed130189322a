"""Sans-I/O commit protocol: participants and coordinator are state machines that consume events and
emit commands. The library executes the commands against real storage and a real decision store; the
model checker (fito.model.explorer) executes the very same machines against simulated ones."""
from fito.protocol.coordinator import Coordinator, CoordinatorPhase
from fito.protocol.messages import (
    Aborted, Begin, CollectGarbage, Command, Committed, DecisionPublished, Discard, Event, ManifestWritten,
    Notify, Persist, Persisted, PublishDecision, PublishRejected, Ready, ReadyReceived, RankFailed,
    SendReady, ShardWritten, TimedOut, UnitEntry, WriteManifest, WriteShard,
)
from fito.protocol.participant import Participant, ParticipantPhase
from fito.protocol.recovery import choose_epoch

__all__ = [
    "Aborted", "Begin", "CollectGarbage", "Command", "Committed", "Coordinator", "CoordinatorPhase",
    "DecisionPublished", "Discard", "Event", "ManifestWritten", "Notify", "Participant", "ParticipantPhase",
    "Persist", "Persisted", "PublishDecision", "PublishRejected", "RankFailed", "Ready",
    "ReadyReceived", "SendReady", "ShardWritten", "TimedOut", "UnitEntry", "WriteManifest", "WriteShard",
    "choose_epoch",
]
