"""The executor contract: feed a machine an event, execute each command it emits, feed each reply back.

`execute(command)` returns the event that answers the command, or None for commands that need no answer
(they go to the outbox: SendReady, Notify, CollectGarbage, ...). The library and the model checker drive
the same machines; only the executor differs."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from fito.protocol.messages import Command, Event

M = TypeVar("M")


def drive(machine: M, event: Event, execute: Callable[[Command], Event | None]) -> tuple[M, list[Command]]:
    events: list[Event] = [event]
    outbox: list[Command] = []
    while events:
        machine, commands = machine.handle(events.pop(0))  # type: ignore[attr-defined]
        for cmd in commands:
            reply: Any = execute(cmd)
            if reply is None:
                outbox.append(cmd)
            else:
                events.append(reply)
    return machine, outbox
