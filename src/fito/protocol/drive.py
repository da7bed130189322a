"""The executor contract: feed a machine an event, execute each command it emits, feed each reply back.

`execute(command)` returns the event that answers the command, or None for commands that need no answer
(they go to the outbox: SendReady, Notify, CollectGarbage, ...). It may raise: the caller decides what a
failed operation means for the protocol (a rank reports RankFailed, a coordinator gives up: presumed abort).

Who calls what:
- the library (`fito.ckpt`) and `fito.dcp` call `drive`: every command of an attempt runs at once, in order;
- the model checker (`fito.model.explorer`) calls `feed` when a message is delivered and `step` when a
  process executes its next command, so that its scheduler can interleave processes, crashes and message
  loss between any two commands. `drive` is exactly `feed` followed by `step` until nothing is pending, so
  both run the same machines in the same order: commands one at a time as emitted; a reply is handled as
  soon as its command completes and the commands it yields queue behind those already pending.
- `recording` wraps any executor to log what a machine emitted (the differential test compares a real
  save's log with the checker's happy path)."""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from fito.protocol.messages import Command, Event

M = TypeVar("M")
Executor = Callable[[Command], "Event | None"]


def feed(machine: M, event: Event, pending: Sequence[Any] = ()) -> tuple[M, tuple[Any, ...]]:
    """Hand the machine one event; its commands queue behind `pending`."""
    machine, commands = machine.handle(event)  # type: ignore[attr-defined]
    return machine, tuple(pending) + tuple(commands)


def step(machine: M, pending: Sequence[Any], execute: Executor) -> tuple[M, tuple[Any, ...], Any | None]:
    """Execute the first pending command and feed its reply back. Returns the machine, the commands still
    pending, and the command itself if it went to the outbox (no reply), else None."""
    cmd, rest = pending[0], tuple(pending[1:])
    reply = execute(cmd)
    if reply is None:
        return machine, rest, cmd
    machine, rest = feed(machine, reply, rest)
    return machine, rest, None


def drive(machine: M, event: Event, execute: Executor) -> tuple[M, list[Command]]:
    """Feed `event`, then execute commands until none is pending. Returns the machine and the outbox."""
    machine, pending = feed(machine, event)
    outbox: list[Command] = []
    while pending:
        machine, pending, sent = step(machine, pending, execute)
        if sent is not None:
            outbox.append(sent)
    return machine, outbox


def recording(execute: Executor, who: str, log: Callable[[str, Command], None]) -> Executor:
    """`execute`, with every command logged as (who, command) before it runs."""
    def recorded(cmd: Command) -> Event | None:
        log(who, cmd)
        return execute(cmd)
    return recorded
