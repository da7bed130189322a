"""The trace model of §2-§4: timed events per component, Snap(t, e) and Conv(P, e).

Snap(t, e) (Def 2.3) is a proposition about a clock time: at t, every component's durable state
reflects epoch e. Conv(P, e) (Def 2.4) is a proposition about an execution prefix: every component
has a commit of e in the prefix, and that commit is stable under crash-recovery (it follows the
component's fsync of e). The two have different types: Conv depends only on the order of each
component's events, so re-timing a trace never changes it; Snap changes with the clock. The
examples below make one true and the other false, in both directions.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Literal

from fito.model.lattice import EpochState

Storage = Literal["in-place", "versioned"]


class Kind(str, Enum):
    """Local actions of a persistence process (Def 3.1) plus failures."""

    BEGIN = "begin"        # checkpoint signal received
    WRITE = "write"        # write syscall issued: data in the page cache, possibly partly on disk
    FLUSH = "flush"        # buffers handed to the device: still not durable
    FSYNC = "fsync"        # fsync returned: the epoch's data is durable
    ACK = "ack"            # told the coordinator "persisted" (reflective ack)
    CRASH = "crash"        # process dies; volatile state is lost
    RECOVER = "recover"    # process restarts and reads its stable storage
    COMMIT = "commit"      # the component (or the coordinator) records epoch e as committed
    ABORT = "abort"        # the coordinator records epoch e's attempt as aborted
    NOTIFY = "notify"      # the coordinator tells every component the outcome
    GC = "gc"              # retention: older epochs retired, then deleted


@dataclass(frozen=True)
class Event:
    time: float
    component: str
    kind: Kind
    epoch: int | None = None
    note: str = ""

    def describe(self) -> str:
        ep = "" if self.epoch is None else f"({self.epoch})"
        note = f"  -- {self.note}" if self.note else ""
        return f"t={self.time:8.3f}  {self.component:<6} {self.kind.value}{ep}{note}"


@dataclass(frozen=True)
class Trace:
    """A timed trace: events of every component, ordered by time (ties keep insertion order).

    `initial` is each component's durable epoch before the trace starts. `storage` says whether a
    write goes over the previous epoch's file (in-place: a crash before fsync leaves it torn, i.e.
    ambiguous) or to a new per-epoch file (versioned: the previous epoch survives).
    """

    events: tuple[Event, ...]
    components: tuple[str, ...]
    initial: dict[str, int] = field(default_factory=dict)
    storage: Storage = "in-place"

    @staticmethod
    def build(events: Iterable[Event], components: Sequence[str], initial_epoch: int = 0,
              storage: Storage = "in-place") -> Trace:
        evs = sorted(events, key=lambda ev: ev.time)  # sorted() is stable: ties keep their order
        unknown = {ev.component for ev in evs} - set(components)
        if unknown:
            raise ValueError(f"events name unknown components {sorted(unknown)}")
        return Trace(tuple(evs), tuple(components), {c: initial_epoch for c in components}, storage)

    def prefix(self, k: int) -> tuple[Event, ...]:
        """The first k events: an execution prefix (order only, no clock)."""
        return self.events[:k]

    def of(self, component: str) -> list[Event]:
        return [ev for ev in self.events if ev.component == component]

    def describe(self) -> str:
        return "\n".join(ev.describe() for ev in self.events)


# ----------------------------------------------------------------------------------------------
# Durable state of one component
# ----------------------------------------------------------------------------------------------


def durable_epoch(trace: Trace, component: str, t: float) -> int | None:
    """The epoch a component's stable storage holds at time t (events at t included);
    None means ambiguous: an in-place write was cut by a crash before its fsync (torn)."""
    epoch: int | None = trace.initial.get(component, 0)
    pending: int | None = None
    for ev in trace.events:
        if ev.time > t:
            break
        if ev.component != component:
            continue
        if ev.kind is Kind.WRITE:
            pending = ev.epoch
        elif ev.kind is Kind.FSYNC:
            epoch, pending = ev.epoch, None
        elif ev.kind is Kind.CRASH and pending is not None:
            if trace.storage == "in-place":
                epoch = None  # old bytes partly overwritten: nobody can tell which epoch this is
            pending = None
    return epoch


def lattice_state(trace: Trace, component: str, t: float, e: int) -> EpochState:
    """Position of one component in the lattice of attempt e: C (holds e), R (holds an earlier
    epoch), A (torn). A component already past e has no position in this attempt's lattice."""
    d = durable_epoch(trace, component, t)
    if d is None:
        return EpochState.A
    if d > e:
        raise ValueError(f"{component} holds epoch {d} > {e}: outside the lattice of attempt {e}")
    return EpochState.C if d == e else EpochState.R


def durable_vector(trace: Trace, t: float, e: int) -> tuple[EpochState, ...]:
    return tuple(lattice_state(trace, c, t, e) for c in trace.components)


# ----------------------------------------------------------------------------------------------
# The two predicates
# ----------------------------------------------------------------------------------------------


def snap(trace: Trace, t: float, e: int) -> bool:
    """Def 2.3: at clock time t every component's durable state reflects epoch e."""
    return all(durable_epoch(trace, c, t) == e for c in trace.components)


def stable_commits(prefix: Sequence[Event], e: int) -> set[str]:
    """Components with a commit of e that follows their own fsync of e in the prefix.
    A commit before the fsync (ack-before-fsync) is not stable: a crash can take it back."""
    fsynced: set[str] = set()
    stable: set[str] = set()
    for ev in prefix:
        if ev.epoch != e:
            continue
        if ev.kind is Kind.FSYNC:
            fsynced.add(ev.component)
        elif ev.kind is Kind.COMMIT and ev.component in fsynced:
            stable.add(ev.component)
    return stable


def conv(prefix: Sequence[Event], components: Iterable[str], e: int) -> bool:
    """Def 2.4: the prefix contains a stable commit of e for every component. No clock is read."""
    return set(components) <= stable_commits(prefix, e)


def conv_trace(trace: Trace, e: int) -> bool:
    return conv(trace.events, trace.components, e)


def first_conv_prefix(trace: Trace, e: int) -> int | None:
    """Length of the shortest prefix on which Conv holds (it then holds on every longer one)."""
    for k in range(len(trace.events) + 1):
        if conv(trace.prefix(k), trace.components, e):
            return k
    return None


def snap_intervals(trace: Trace, e: int) -> list[tuple[float, float]]:
    """Maximal clock intervals [start, end) on which Snap(t, e) holds. Durable state changes only at
    events, so checking each event time decides Snap for every t."""
    times = sorted({ev.time for ev in trace.events})
    out: list[tuple[float, float]] = []
    for k, t in enumerate(times):
        if not snap(trace, t, e):
            continue
        end = times[k + 1] if k + 1 < len(times) else float("inf")
        if out and out[-1][1] == t:
            out[-1] = (out[-1][0], end)
        else:
            out.append((t, end))
    return out


def retime(trace: Trace, clock: Callable[[Event], float]) -> Trace:
    """Give every event a new time; must keep each component's own order (an admissible
    asynchronous re-timing: the adversary controls relative speeds, not local program order)."""
    new = [replace(ev, time=clock(ev)) for ev in trace.events]
    for c in trace.components:
        times = [ev.time for ev in new if ev.component == c]
        if any(b < a for a, b in zip(times, times[1:])):
            raise ValueError(f"re-timing reorders the events of {c}; that is not an admissible schedule")
    return Trace(tuple(sorted(new, key=lambda ev: ev.time)), trace.components, dict(trace.initial), trace.storage)


# ----------------------------------------------------------------------------------------------
# Examples: one predicate holds, the other does not
# ----------------------------------------------------------------------------------------------


def _persist(c: str, e: int, t0: float, dt: float = 1.0, commit: bool = True) -> list[Event]:
    kinds = [Kind.BEGIN, Kind.WRITE, Kind.FLUSH, Kind.FSYNC] + ([Kind.COMMIT] if commit else [])
    return [Event(t0 + i * dt, c, k, e) for i, k in enumerate(kinds)]


@dataclass(frozen=True)
class TraceExample:
    name: str
    trace: Trace
    epoch: int
    at: float                 # the clock time at which Snap is asked
    explanation: str

    @property
    def snap_holds(self) -> bool:
        return snap(self.trace, self.at, self.epoch)

    @property
    def conv_holds(self) -> bool:
        return conv_trace(self.trace, self.epoch)


def examples() -> list[TraceExample]:
    """Four two-component traces separating Snap from Conv."""
    comps = ("c0", "c1")
    snap_no_conv = Trace.build(_persist("c0", 1, 0.0, commit=False) + _persist("c1", 1, 0.5, commit=False),
                               comps, storage="versioned")
    conv_no_snap = Trace.build(
        _persist("c0", 1, 0.0) + _persist("c0", 2, 5.0) + _persist("c1", 1, 12.0), comps, storage="versioned")
    straddle = Trace.build(_persist("c0", 1, 0.0) + _persist("c1", 1, 3.0, dt=2.0), comps, storage="versioned")
    unstable = Trace.build(
        _persist("c0", 1, 0.0)
        + [Event(0.0, "c1", Kind.BEGIN, 1), Event(1.0, "c1", Kind.WRITE, 1),
           Event(2.0, "c1", Kind.COMMIT, 1, "acked before fsync"), Event(3.0, "c1", Kind.CRASH),
           Event(4.0, "c1", Kind.RECOVER)],
        comps, storage="in-place")
    return [
        TraceExample("snap-without-conv", snap_no_conv, 1, 4.0,
                     "both components fsynced epoch 1 by t=4, so Snap(4,1) holds, but no commit was ever "
                     "recorded: the history establishes nothing (a recovery reading decisions ignores it)"),
        TraceExample("conv-without-snap", conv_no_snap, 1, 14.0,
                     "every component committed epoch 1 (versioned files), so Conv holds; but c0 had moved "
                     "to epoch 2 before c1 finished epoch 1: at no instant do both hold epoch 1"),
        TraceExample("boundary-straddle", straddle, 1, 5.0,
                     "Conv holds on the whole history, yet at the 'checkpoint time' t=5 chosen by the clock "
                     "c1 is mid-write: Snap(5,1) is false"),
        TraceExample("ack-before-fsync", unstable, 1, 2.5,
                     "both components record commit(1), but c1's precedes its fsync; its crash leaves a torn "
                     "file: Conv is false (the commit is not stable) and Snap is false after t=3"),
    ]
