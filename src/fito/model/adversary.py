"""The Theorem 4.2 adversary: straddle any proposed boundary time, crash the straddler.

Against a protocol of the "temporal boundary" class (each component persists on its own, the system
declares the checkpoint done at a clock time T, and recovery loads whatever each component's storage
holds) the adversary wins for every T: the durable state at T is mixed, and so is the recovered state.

Against the bilateral protocol of correction 6 (docs/corrections.md) (versioned shards, READY only after fsync,
a durable decision record written after all READYs, recovery that reads only the decision, presumed
abort) the same schedule still leaves a mixed DURABLE state at T - the theorem's conclusion about
instants is true - but the RECOVERED state is always atomic: the boundary is a decision, not a time.
`crash_search` tries every single and double crash point to back that up on small n.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fito.model.lattice import Classification, EpochState, classify
from fito.model.traces import Event, Kind, Storage, Trace, durable_epoch, lattice_state

ProtocolName = Literal["temporal", "bilateral"]
COORD = "coord"


@dataclass(frozen=True)
class Timing:
    """What the asynchronous scheduler controls: when each process starts, how fast it goes,
    and when crashes hit (each crashed process recovers `recover_delay` later)."""

    start: dict[str, float]
    step: dict[str, float]
    crashes: dict[str, float] = field(default_factory=dict)
    recover_delay: float = 1.0
    coord_step: float = 0.5
    timeout: float = 30.0


@dataclass(frozen=True)
class Execution:
    trace: Trace
    participants: tuple[str, ...]
    notes: tuple[str, ...] = ()


class CheckpointProtocol(Protocol):
    name: str

    def execute(self, n: int, e: int, timing: Timing) -> Execution: ...

    def recover(self, ex: Execution, e: int) -> tuple[EpochState, ...]: ...


def participants(n: int) -> tuple[str, ...]:
    return tuple(f"c{i}" for i in range(n))


def _run_process(name: str, kinds: list[Kind], e: int, t0: float, dt: float, timing: Timing,
                 notes: dict[Kind, str] | None = None) -> tuple[list[Event], float | None]:
    """Events of one sequential process, cut at its crash. Returns (events, crash time or None)."""
    crash = timing.crashes.get(name)
    out = []
    for i, k in enumerate(kinds):
        t = t0 + i * dt
        if crash is not None and t >= crash:
            break
        out.append(Event(t, name, k, e, (notes or {}).get(k, "")))
    if crash is not None:
        out += [Event(crash, name, Kind.CRASH), Event(crash + timing.recover_delay, name, Kind.RECOVER)]
    return out, crash


class TemporalBoundary:
    """Each component persists on its own and marks itself done; the checkpoint "exists at time T".
    Recovery: every component loads what its own stable storage holds."""

    name = "temporal"

    def __init__(self, storage: Storage = "in-place") -> None:
        self.storage = storage

    def execute(self, n: int, e: int, timing: Timing) -> Execution:
        events: list[Event] = []
        parts = participants(n)
        for c in parts:
            evs, _ = _run_process(c, [Kind.BEGIN, Kind.WRITE, Kind.FLUSH, Kind.FSYNC, Kind.COMMIT], e,
                                  timing.start[c], timing.step[c], timing,
                                  {Kind.COMMIT: "local 'done' mark"})
            events += evs
        return Execution(Trace.build(events, parts, initial_epoch=e - 1, storage=self.storage), parts)

    def recover(self, ex: Execution, e: int) -> tuple[EpochState, ...]:
        end = ex.trace.events[-1].time if ex.trace.events else 0.0
        return tuple(lattice_state(ex.trace, c, end, e) for c in ex.participants)


class Bilateral:
    """Versioned shards, READY (ack) only after fsync, durable decision after all READYs, recovery
    from the decision alone, presumed abort (correction 6 (docs/corrections.md))."""

    name = "bilateral"
    storage: Storage = "versioned"

    def execute(self, n: int, e: int, timing: Timing) -> Execution:
        parts = participants(n)
        events: list[Event] = []
        acks: dict[str, float] = {}
        for c in parts:
            evs, _ = _run_process(c, [Kind.BEGIN, Kind.WRITE, Kind.FLUSH, Kind.FSYNC, Kind.ACK], e,
                                  timing.start[c], timing.step[c], timing,
                                  {Kind.WRITE: f"shard file for epoch {e} (never over an older one)",
                                   Kind.ACK: "READY with content hash, sent after fsync"})
            events += evs
            acks.update({ev.component: ev.time for ev in evs if ev.kind is Kind.ACK})
        notes = []
        if len(acks) == n:
            t_all = max(acks.values())
            coord_evs, _ = _run_process(
                COORD, [Kind.WRITE, Kind.FSYNC, Kind.COMMIT], e, t_all + timing.coord_step, timing.coord_step,
                timing, {Kind.WRITE: "decision record (temp file)",
                         Kind.FSYNC: "decision durable + atomic rename: THE COMMIT POINT",
                         Kind.COMMIT: "tell participants"})
            events += coord_evs
            told = [ev.time for ev in coord_evs if ev.kind is Kind.COMMIT]
            if told:
                for c in parts:
                    crash = timing.crashes.get(c)
                    t = told[0] + 0.1
                    if crash is None or t < crash:
                        events.append(Event(t, c, Kind.COMMIT, e, "learns the decision (not read by recovery)"))
        else:
            missing = sorted(set(parts) - set(acks))
            first = min(acks.values()) if acks else min(timing.start.values())
            notes.append(f"coordinator timed out at t={first + timing.timeout:.3f} waiting for READY from "
                         f"{', '.join(missing)}: no decision written (presumed abort)")
            if COORD in timing.crashes:
                tc = timing.crashes[COORD]
                events += [Event(tc, COORD, Kind.CRASH), Event(tc + timing.recover_delay, COORD, Kind.RECOVER)]
        trace = Trace.build(events, parts + (COORD,), initial_epoch=e - 1, storage="versioned")
        return Execution(trace, parts, tuple(notes))

    def recover(self, ex: Execution, e: int) -> tuple[EpochState, ...]:
        decided = any(ev.component == COORD and ev.kind is Kind.FSYNC and ev.epoch == e for ev in ex.trace.events)
        end = ex.trace.events[-1].time if ex.trace.events else 0.0
        if not decided:  # presumed abort: everyone loads e-1, whose versioned files were never touched
            return tuple(EpochState.R for _ in ex.participants)
        for c in ex.participants:  # the decision was written only after every fsynced READY
            if durable_epoch(ex.trace, c, end) != e:
                raise AssertionError(f"decision for {e} exists but {c} never made it durable: protocol bug")
        return tuple(EpochState.C for _ in ex.participants)


def make_protocol(name: ProtocolName, storage: Storage = "in-place") -> CheckpointProtocol:
    if name == "temporal":
        return TemporalBoundary(storage)
    if name == "bilateral":
        return Bilateral()
    raise ValueError(f"unknown protocol {name!r}; choose temporal or bilateral")


# ----------------------------------------------------------------------------------------------
# The adversary of Lemma 4.1 / Theorem 4.2
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdversaryResult:
    protocol: str
    boundary: float
    victim: str
    execution: Execution
    durable_at_boundary: tuple[EpochState, ...]
    recovered: tuple[EpochState, ...]

    @property
    def durable_class(self) -> Classification:
        return classify(self.durable_at_boundary)

    @property
    def recovered_class(self) -> Classification:
        return classify(self.recovered)

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol": self.protocol, "boundary": self.boundary, "victim": self.victim,
            "events": [{"time": ev.time, "component": ev.component, "kind": ev.kind.value, "epoch": ev.epoch,
                        "note": ev.note} for ev in self.execution.trace.events],
            "notes": list(self.execution.notes),
            "durable_at_boundary": "".join(s.name for s in self.durable_at_boundary),
            "durable_class": self.durable_class.kind,
            "recovered": "".join(s.name for s in self.recovered),
            "recovered_class": self.recovered_class.kind,
        }


def straddling_timing(n: int, boundary: float, victim: str) -> Timing:
    """Lemma 4.1's schedule: everyone but the victim finishes well before T; the victim begins just
    before T and is slowed so that its write is in flight at T; the crash hits it at T."""
    start = {c: boundary - 10.0 for c in participants(n)}
    step = {c: 1.0 for c in participants(n)}
    start[victim], step[victim] = boundary - 2.0, 1.5  # begin T-2, write T-0.5, fsync would be T+2.5
    return Timing(start=start, step=step, crashes={victim: boundary})


def straddle(protocol: CheckpointProtocol, n: int, boundary: float, e: int = 1,
             victim: str | None = None) -> AdversaryResult:
    """Given any proposed boundary time, build the straddling schedule plus crash and evaluate it."""
    if n < 2:
        raise ValueError("the adversary needs at least two components (one finishes, one straddles)")
    victim = victim or f"c{n - 1}"
    if victim not in participants(n):
        raise ValueError(f"victim must be one of {', '.join(participants(n))}")
    ex = protocol.execute(n, e, straddling_timing(n, boundary, victim))
    at_t = tuple(lattice_state(ex.trace, c, boundary, e) for c in ex.participants)
    return AdversaryResult(protocol.name, boundary, victim, ex, at_t, protocol.recover(ex, e))


@dataclass
class SearchResult:
    protocol: str
    runs: int = 0
    mixed_recovered: int = 0
    recovered_kinds: dict[str, int] = field(default_factory=dict)
    first_mixed: tuple[dict[str, float], tuple[EpochState, ...]] | None = None


def crash_search(protocol: CheckpointProtocol, n: int, e: int = 1, max_crashes: int = 2) -> SearchResult:
    """Crash every subset of up to `max_crashes` processes at every point of a failure-free run
    (just before and just after each of its events) and classify the recovered state."""
    base = Timing(start={c: 0.1 * i for i, c in enumerate(participants(n))},
                  step={c: 1.0 for c in participants(n)})
    clean = protocol.execute(n, e, base)
    times = sorted({ev.time for ev in clean.trace.events})
    points = sorted({t + d for t in times for d in (-1e-3, 1e-3)})
    procs = list(participants(n)) + ([COORD] if protocol.name == "bilateral" else [])
    res = SearchResult(protocol.name)
    for k in range(1, max_crashes + 1):
        for who in itertools.combinations(procs, k):
            for when in itertools.product(points, repeat=k):
                crashes = dict(zip(who, when))
                timing = Timing(start=base.start, step=base.step, crashes=crashes)
                rec = protocol.recover(protocol.execute(n, e, timing), e)
                kind = classify(rec).kind
                res.runs += 1
                res.recovered_kinds[kind] = res.recovered_kinds.get(kind, 0) + 1
                if kind == "mixed":
                    res.mixed_recovered += 1
                    if res.first_mixed is None:
                        res.first_mixed = (crashes, rec)
    return res


# ----------------------------------------------------------------------------------------------
# Correction 5: what P(mixed) means under a correct protocol
# ----------------------------------------------------------------------------------------------


@dataclass
class AttemptStats:
    """Random attempts: each unit independently fails (crashes before its data is durable) with
    probability q. Counts of the durable lattice class at the end of the attempt and of the state
    recovery produces."""

    protocol: str
    n: int
    q: float
    attempts: int = 0
    durable: dict[str, int] = field(default_factory=dict)
    recovered: dict[str, int] = field(default_factory=dict)

    def rate(self, table: dict[str, int], kind: str) -> float:
        return table.get(kind, 0) / self.attempts if self.attempts else 0.0


def attempt_outcomes(protocol: CheckpointProtocol, n: int, q: float, attempts: int, *, seed: int = 0,
                     e: int = 1) -> AttemptStats:
    """Run the protocol `attempts` times with independent unit failures and classify the results.

    Under the bilateral protocol the durable state is mixed with the lattice's P(mixed), but the
    recovered state never is: an attempt with any failure aborts and everyone falls back one epoch
    (probability 1 - p^n). Under a temporal protocol the recovered state is mixed as often as the
    durable one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    stats = AttemptStats(protocol.name, n, q)
    parts = participants(n)
    start = {c: 0.1 * i for i, c in enumerate(parts)}
    step = {c: 1.0 for c in parts}
    for _ in range(attempts):
        fails = rng.random(n) < q
        # a failing unit crashes somewhere between its begin and its fsync (index 3): never durable
        crashes = {c: start[c] + rng.uniform(0.0, 3.0) * step[c] for c, f in zip(parts, fails) if f}
        ex = protocol.execute(n, e, Timing(start=start, step=step, crashes=crashes))
        end = ex.trace.events[-1].time
        durable = classify(tuple(lattice_state(ex.trace, c, end, e) for c in parts)).kind
        recovered = classify(protocol.recover(ex, e)).kind
        stats.attempts += 1
        stats.durable[durable] = stats.durable.get(durable, 0) + 1
        stats.recovered[recovered] = stats.recovered.get(recovered, 0) + 1
    return stats
