"""Explicit-state model checker for checkpoint commit protocols.

The explorer drives the SAME sans-I/O machines the library uses (`fito.protocol.Participant` and
`Coordinator`, or a variant from `fito.model.protocols`) through every interleaving of: command execution
by each process, delivery, delay and loss of every message, coordinator timeouts, crash-and-restart of any
process at any point (the node's un-fsynced writes are lost), and job restarts that retry the save.

Scenario: epoch 1 is committed and durable; epoch 2 is being saved. At EVERY reachable state the checker
also pulls the plug: it enumerates every post-crash disk POSIX allows (un-fsynced data lost, kept or torn;
un-fsynced directory entries lost or kept) for the files recovery reads, runs the variant's recovery on
each, and checks the properties. Exploration is breadth-first in a deterministic order, so the first
counterexample found for a property is a shortest one; `replay` re-executes a trace and re-checks it."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

from fito.model.protocols import (
    INITIAL_ATTEMPT, INITIAL_EPOCH, NEXT_EPOCH, Record, Recovery, Variant, attempt_name, get_variant, global_plan,
)
from fito.model.simexec import SimExecutor, add_attempt as _add, net_add as _net_add
from fito.model.simfs import MISSING, Content, SimDisk, each_crash_image, unit
from fito.protocol import Aborted, Begin, Command, Committed, RankFailed, ReadyReceived, TimedOut
from fito.protocol.drive import feed, recording, step

Attempt = tuple[int, str]


class Ghost(NamedTuple):
    """History the properties need but no process knows: what was committed or aborted, ever."""

    committed: tuple[Attempt, ...]  # in commit order
    aborted: tuple[Attempt, ...]  # sorted
    current: Attempt
    attempts: int  # attempts of the current epoch begun so far
    named: int  # attempts begun in the whole run (names them)


class World(NamedTuple):
    machines: tuple  # participants 0..n-1, then the coordinator
    pending: tuple[tuple, ...]  # commands each process emitted and has not executed yet
    net: tuple[tuple[int, object], ...]  # in-flight messages (destination, event), sorted: a multiset
    disk: SimDisk
    store: tuple[Record, ...]  # the durable, atomic decision log
    ghost: Ghost
    fence: tuple[int, ...] = (0, 0, 0)  # the store's newest token, then the token of coord and of the zombie
    owners: tuple[tuple[str, int], ...] = ()  # attempt -> fencing token of the coordinator that began it


@dataclass(frozen=True)
class Config:
    ranks: int = 2
    attempts: int = 1  # attempts per epoch; more than one lets a job restart retry the save
    epochs: int = 1  # epochs saved after the committed epoch 1 (2, 3, ...), each once the previous committed
    zombies: bool = False  # a job restart may leave the old coordinator running (fencing must stop it)
    # Checkpointer before b7688c9: the token was taken at the first publish, and garbage collection deleted
    # every undecided attempt. Now (the default): token taken when the coordinator starts, and GC deletes
    # only undecided attempts of its own or older coordinators (attempt names carry the fence).
    fence_at_first_publish: bool = False
    keep: int = 1  # retention: committed epochs kept after a commit
    crashes: bool = True
    message_loss: bool = True
    timeouts: bool = True


# ---- properties ----
PROPERTIES: dict[str, str] = {
    "AlwaysRecoversOneCommittedEpoch": "always: after any crash, recovery returns all units of ONE committed "
    "(epoch, attempt), or fails loudly; never a mix, never torn bytes",
    "CommittedStaysRecoverable": "always: once an epoch is committed, recovery returns it (or a newer "
    "commit); it may only disappear when a newer commit is durable",
    "AbortedNeverVisible": "always: no unit of an aborted attempt is ever returned by recovery",
    "EventuallyDecides": "eventually: when no process has work left and no message is in flight, the "
    "attempt is committed or aborted (no silent limbo)",
}


class Violation(NamedTuple):
    property: str
    detail: str


@dataclass
class Counterexample:
    property: str
    trace: list[str]
    detail: str

    def render(self) -> str:
        lines = [f"counterexample to {self.property} ({len(self.trace)} steps):"]
        lines += [f"  {i:2d}. {step}" for i, step in enumerate(self.trace, 1)]
        lines.append(f"  => {self.detail}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"property": self.property, "trace": self.trace, "detail": self.detail}


@dataclass
class Result:
    protocol: str
    config: Config
    states: int = 0
    transitions: int = 0
    crash_images: int = 0
    max_depth: int = 0
    seconds: float = 0.0
    complete: bool = True
    violations: dict[str, Counterexample] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def verdict(self) -> str:
        """Three-valued: a search cut short without a violation decides nothing."""
        return "violated" if self.violations else "holds" if self.complete else "unknown"

    def property_verdict(self, name: str) -> str:
        return "violated" if name in self.violations else "holds" if self.complete else "unknown"

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol, "ranks": self.config.ranks, "attempts": self.config.attempts,
            "epochs": self.config.epochs,
            "keep": self.config.keep, "states": self.states, "transitions": self.transitions,
            "crash_images": self.crash_images, "max_depth": self.max_depth, "seconds": round(self.seconds, 3),
            "states_per_second": round(self.states / self.seconds, 1) if self.seconds else None,
            "complete": self.complete, "verdict": self.verdict,
            "ok": {"holds": True, "violated": False, "unknown": None}[self.verdict],
            "properties": {p: self.property_verdict(p) for p in PROPERTIES},
            "counterexamples": [c.to_json() for c in self.violations.values()],
        }


# ---- the model ----
class Model:
    """One protocol variant under one configuration: initial state, successors, property checks."""

    def __init__(self, variant: Variant, config: Config,
                 observe: Callable[[str, Command], None] | None = None) -> None:
        self.variant = variant
        self.config = config
        self.observe = observe  # sees (process, command) for every command executed (fito.protocol.drive.recording)
        self.n = config.ranks
        self._check_memo: dict[tuple, tuple[list[Violation], int]] = {}
        self.procs = self.n + 2 if config.zombies else self.n + 1  # ranks, coord, [zombie coordinator]
        self.zombie = self.n + 1
        self._fresh = [self.fresh(i) for i in range(self.procs)]

    # -- names --
    def who(self, i: int) -> str:
        return "coord" if i == self.n else "zombie coord" if i == self.zombie else f"rank{i}"

    def fresh(self, i: int) -> object:
        return self.variant.coordinator(self.n) if i >= self.n else self.variant.participant(i)

    # -- initial state --
    def initial(self) -> World:
        disk, store = self.variant.initial_disk(self.n)
        ghost = Ghost(((INITIAL_EPOCH, INITIAL_ATTEMPT),), (), (NEXT_EPOCH, attempt_name(0)), 1, 1)
        return self._begin(disk, store, ghost, self._new_job_fence((0, 0, 0)))

    def _new_job_fence(self, fence: tuple[int, ...]) -> tuple[int, ...]:
        """A (re)started job's coordinator takes a new token at once (or, old behaviour, at its first publish)."""
        if self.config.fence_at_first_publish:
            return (fence[0], 0) + fence[2:]
        return (fence[0] + 1, fence[0] + 1) + fence[2:]

    def initial_label(self) -> str:
        return (f"start: epoch {INITIAL_EPOCH} committed and durable on {self.n} ranks; every process begins "
                f"saving epoch {NEXT_EPOCH} attempt {attempt_name(0)}")

    def _begin(self, disk: SimDisk, store: tuple[Record, ...], ghost: Ghost, fence: tuple[int, ...]) -> World:
        machines, pending = [], []
        for i in range(self.n):
            m, cmds = feed(self.fresh(i), Begin(*ghost.current))
            machines.append(m)
            pending.append(cmds)
        # the coordinator begins with its fencing token (0 if it takes it at its first publish) and the plan
        m, cmds = feed(self.fresh(self.n), Begin(*ghost.current, fence[1], global_plan(self.n)))
        machines.append(m)
        pending.append(cmds)
        if self.config.zombies:
            machines.append(self._fresh[self.zombie])
            pending.append(())
        return World(tuple(machines), tuple(pending), (), disk, store, ghost, fence, ((ghost.current[1], fence[1]),))

    # -- transitions --
    def successors(self, w: World) -> list[tuple[str, World]]:
        out: list[tuple[str, World]] = []
        for i in range(self.procs):
            if w.pending[i]:
                out.append(self.execute(w, i))
        seen_msgs = set()
        for k, (dest, ev) in enumerate(w.net):
            if (dest, ev) in seen_msgs:
                continue
            seen_msgs.add((dest, ev))
            out.append(self.deliver(w, k))
            if self.config.message_loss:
                out.append((f"net: lose {_msg(ev)} to {self.who(dest)}", self._lose(w, k)))
        if self.config.timeouts:
            coord = w.machines[self.n]
            m, cmds = feed(coord, TimedOut(), w.pending[self.n])
            if m != coord or cmds != w.pending[self.n]:
                out.append(("coord: timeout waiting for READY", self._set(w, self.n, m, cmds)))
        if self.config.crashes:
            for i in range(self.procs):
                nxt = self._crash(w, i)
                if nxt != w:
                    out.append((f"crash {self.who(i)} (restarts empty; its un-fsynced writes are lost)", nxt))
        g = w.ghost
        epoch = g.current[0]
        if g.attempts < self.config.attempts and g.current not in g.committed:
            nxt_attempt = (epoch, attempt_name(g.named))
            ghost = g._replace(aborted=_add(g.aborted, g.current), current=nxt_attempt, attempts=g.attempts + 1,
                               named=g.named + 1)
            nxt = self._begin(w.disk, w.store, ghost, self._new_job_fence(w.fence))
            out.append((f"job restart: every process restarts and begins epoch {epoch} attempt {nxt_attempt[1]}",
                        nxt._replace(owners=w.owners + nxt.owners)))
            zombie_idle = self.config.zombies and not w.pending[self.zombie] and w.machines[self.zombie] == self._fresh[self.zombie]
            if zombie_idle:
                # The scheduler restarts the job but fails to kill the old coordinator: it keeps its
                # machine, its pending commands and its fencing token.
                ghost = g._replace(current=nxt_attempt, attempts=g.attempts + 1, named=g.named + 1)
                nxt = self._begin(w.disk, w.store, ghost, self._new_job_fence((w.fence[0], 0, w.fence[1])))
                nxt = self._set(nxt._replace(owners=w.owners + nxt.owners), self.zombie, w.machines[self.n], w.pending[self.n])
                nxt = nxt._replace(net=tuple((self.zombie, ev) for dest, ev in w.net if dest == self.n))
                out.append((f"job restart, but the old coordinator survives as a zombie; every other process "
                            f"begins epoch {epoch} attempt {nxt_attempt[1]}", nxt))
        if g.current in g.committed and epoch < NEXT_EPOCH + self.config.epochs - 1:
            # Training went on: the next save() builds fresh machines; stale messages may still arrive.
            nxt_attempt = (epoch + 1, attempt_name(g.named))
            ghost = g._replace(current=nxt_attempt, attempts=1, named=g.named + 1)
            nxt = self._begin(w.disk, w.store, ghost, w.fence)
            out.append((f"next save: every process begins epoch {epoch + 1} attempt {nxt_attempt[1]}",
                        nxt._replace(net=w.net, owners=w.owners + nxt.owners)))
        return [(label, s) for label, s in out if s != w]

    def deliver(self, w: World, k: int) -> tuple[str, World]:
        """The k-th message in flight arrives: its destination's machine is fed the event (fito.protocol.drive.feed)."""
        dest, ev = w.net[k]
        m, cmds = feed(w.machines[dest], ev, w.pending[dest])
        return f"net: deliver {_msg(ev)} to {self.who(dest)}", self._set(self._lose(w, k), dest, m, cmds)

    @staticmethod
    def _lose(w: World, k: int) -> World:
        return World(w.machines, w.pending, w.net[:k] + w.net[k + 1:], w.disk, w.store, w.ghost, w.fence, w.owners)

    @staticmethod
    def _set(w: World, i: int, machine: object, pending: tuple) -> World:
        return World(
            w.machines[:i] + (machine,) + w.machines[i + 1:], w.pending[:i] + (pending,) + w.pending[i + 1:],
            w.net, w.disk, w.store, w.ghost, w.fence, w.owners,
        )

    def _crash(self, w: World, i: int) -> World:
        ghost = w.ghost
        if i == self.n and self.variant.presumed_abort and ghost.current not in ghost.committed:
            ghost = ghost._replace(aborted=_add(ghost.aborted, ghost.current))
        fence = w.fence
        if i == self.zombie:
            m = w.machines[i]
            att = (getattr(m, "epoch", -1), getattr(m, "attempt", ""))
            if att[0] >= 0 and att not in ghost.committed:
                ghost = ghost._replace(aborted=_add(ghost.aborted, att))
        if i >= self.n:
            fence = fence[:i - self.n + 1] + (0,) + fence[i - self.n + 2:]  # a new process has no token yet
        fresh = self._fresh[i]
        if w.machines[i] == fresh and not w.pending[i] and ghost is w.ghost and not w.disk.has_volatile(i):
            return w  # crashing a process that holds nothing changes nothing
        w = self._set(w, i, fresh, ())
        return World(w.machines, w.pending, w.net, w.disk.lose_volatile(i), w.store, ghost, fence, w.owners)

    def execute(self, w: World, i: int) -> tuple[str, World]:
        """Process i executes its next pending command (a failed file operation is caught as the library does)."""
        try:
            return self._exec_ok(w, i)
        except (FileNotFoundError, FileExistsError) as exc:
            return self._io_failed(w, i, exc)

    def _io_failed(self, w: World, i: int, exc: OSError) -> tuple[str, World]:
        """The library's driver catches a failed file operation: a rank reports RankFailed to the
        coordinator; a coordinator gives up the attempt without publishing (presumed abort)."""
        cmd = w.pending[i][0]
        net, ghost = w.net, w.ghost
        m = w.machines[i]
        if i < self.n:
            net = _net_add(net, self.n, RankFailed(i, f"{type(exc).__name__}"))
        else:
            att = (getattr(m, "epoch", -1), getattr(m, "attempt", ""))
            if att not in ghost.committed:
                ghost = ghost._replace(aborted=_add(ghost.aborted, att))
        nxt = self._set(World(w.machines, w.pending, net, w.disk, w.store, ghost, w.fence, w.owners), i, self._fresh[i], ())
        return f"{self.who(i)}: {type(cmd).__name__} FAILED ({type(exc).__name__}: {exc}); save given up", nxt

    def _exec_ok(self, w: World, i: int) -> tuple[str, World]:
        """Process i executes its next command through its simulated executor, and the reply goes back to
        its machine: one `step` of the executor contract the library drives (fito.protocol.drive)."""
        sim = SimExecutor(self, w, i)
        execute = sim if self.observe is None else recording(sim, self.who(i), self.observe)
        machine, rest, _ = step(w.machines[i], w.pending[i], execute)
        nxt = self._set(World(w.machines, w.pending, sim.net, sim.disk, sim.store, sim.ghost, sim.fence, w.owners),
                        i, machine, rest)
        return f"{self.who(i)}: {sim.label}", nxt

    # -- properties --
    def check(self, w: World) -> tuple[list[Violation], int]:
        """Violations in state w, and how many crash images were examined (memoised on disk+store+ghost)."""
        key = (w.disk, w.store, w.ghost.committed, w.ghost.aborted)
        hit = self._check_memo.get(key)
        images = 0
        if hit is None:
            hit = self._check_crashes(w)
            self._check_memo[key] = hit
            images = hit[1]
        violations = hit[0]
        liveness = self._check_liveness(w)
        return (violations + liveness if liveness else violations), images

    def _check_crashes(self, w: World) -> tuple[list[Violation], int]:
        g = w.ghost
        newest = g.committed[-1]
        found: dict[str, Violation] = {}
        images = 0
        for image, rec in each_crash_image(w.disk, lambda read: self.variant.recover(read, w.store, self.n)):
            images += 1
            assert isinstance(rec, Recovery)
            loaded = _describe_units(rec)
            where = f"power failure now; {image.describe()}; recovery {loaded}"
            got = _uniform(rec.units, self.n) if rec.units is not None else None
            if rec.units is not None and (got is None or got not in g.committed):
                found.setdefault("AlwaysRecoversOneCommittedEpoch", Violation(
                    "AlwaysRecoversOneCommittedEpoch",
                    f"{where} -- committed so far: {_atts(g.committed)}"))
            if got != newest:
                found.setdefault("CommittedStaysRecoverable", Violation(
                    "CommittedStaysRecoverable", f"{where} -- but e{newest[0]}/{newest[1]} is committed"))
            if rec.units is not None and any(_att(c) in g.aborted for c in rec.units if _att(c) is not None):
                found.setdefault("AbortedNeverVisible", Violation(
                    "AbortedNeverVisible", f"{where} -- aborted: {_atts(g.aborted)}"))
        return list(found.values()), images

    def _check_liveness(self, w: World) -> list[Violation]:
        if any(w.pending) or w.net:
            return []
        g = w.ghost
        if g.current in g.committed or g.current in g.aborted:
            return []
        coord = w.machines[self.n]
        if self.config.timeouts and feed(coord, TimedOut()) != (coord, ()):
            return []  # the timeout will still decide
        return [Violation("EventuallyDecides",
                          f"nothing left to do and no message in flight, yet e{g.current[0]}/{g.current[1]} is "
                          f"neither committed nor aborted")]


# ---- helpers ----
def _att(c: object) -> Attempt | None:
    return (c[2], c[3]) if isinstance(c, tuple) and c and c[0] == "unit" else None


def _uniform(units: tuple[Content, ...] | None, ranks: int) -> Attempt | None:
    """The (epoch, attempt) if the units are exactly every rank's unit of one attempt, else None."""
    if units is None or len(units) != ranks:
        return None
    first = _att(units[0])
    if first is None:
        return None
    return first if all(u == unit(r, *first) for r, u in enumerate(units)) else None


def _describe_units(rec: Recovery) -> str:
    if rec.units is None:
        return f"fails loudly ({rec.error})"
    parts = []
    for r, c in enumerate(rec.units):
        if c is MISSING:
            parts.append(f"rank{r}=<missing file>")
        elif c is None:
            parts.append(f"rank{r}=<empty file>")
        elif c[0] == "unit":
            parts.append(f"rank{r}=e{c[2]}/{c[3]}")
        else:
            parts.append(f"rank{r}=<torn bytes>")
    return "loads " + ", ".join(parts)


def _atts(items: Iterable[Attempt]) -> str:
    return "[" + ", ".join(f"e{e}/{a}" for e, a in items) + "]"


def _msg(ev: object) -> str:
    if isinstance(ev, ReadyReceived):
        return f"READY(rank{ev.ready.rank}, e{ev.ready.epoch}/{ev.ready.attempt})"
    if isinstance(ev, Committed):
        return f"COMMIT(e{ev.epoch}/{ev.attempt})"
    if isinstance(ev, Aborted):
        return f"ABORT(e{ev.epoch}/{ev.attempt})"
    if isinstance(ev, RankFailed):
        return f"FAILED(rank{ev.rank})"
    return repr(ev)


# ---- search ----
ProgressFn = Callable[[int, int, int], None]  # (states, frontier, depth)


def explore(
    protocol: str | Variant, config: Config = Config(), *, mutation: str | None = None,
    stop_at_first: bool = False, max_states: int | None = None, progress: ProgressFn | None = None,
) -> Result:
    """Breadth-first search of every reachable state; every state is checked against every property."""
    variant = protocol if isinstance(protocol, Variant) else get_variant(protocol, mutation)
    model = Model(variant, config)
    start = time.perf_counter()
    init = model.initial()
    # state -> (parent, label, depth); one dict, one hash per successor
    parents: dict[World, tuple[World | None, str, int]] = {init: (None, "", 0)}
    frontier: deque[World] = deque([init])
    result = Result(variant.name, config)
    popped = 0
    while frontier:
        w = frontier.popleft()
        d = parents[w][2]
        result.max_depth = max(result.max_depth, d)
        violations, images = model.check(w)
        result.crash_images += images
        for v in violations:
            if v.property not in result.violations:
                result.violations[v.property] = Counterexample(v.property, _trace(parents, w, model), v.detail)
        if stop_at_first and result.violations:
            result.complete = False
            break
        for label, nxt in model.successors(w):
            result.transitions += 1
            size = len(parents)
            parents.setdefault(nxt, (w, label, d + 1))
            if len(parents) != size:
                frontier.append(nxt)
        if max_states is not None and len(parents) >= max_states and frontier:
            result.complete = False
            break
        popped += 1
        if progress is not None and popped % 1000 == 0:
            progress(len(parents), len(frontier), d)
    result.states = len(parents)
    result.seconds = time.perf_counter() - start
    if progress is not None:
        progress(result.states, 0, result.max_depth)
    return result


def _trace(parents: dict, w: World, model: Model) -> list[str]:
    steps: list[str] = []
    while True:
        parent, label, _ = parents[w]
        if parent is None:
            break
        steps.append(label)
        w = parent
    steps.append(model.initial_label())
    return list(reversed(steps))


def replay(
    protocol: str | Variant, config: Config, trace: list[str], *, mutation: str | None = None,
) -> tuple[World, list[Violation]]:
    """Re-execute a trace (as printed: first line is the start) and re-check the final state."""
    variant = protocol if isinstance(protocol, Variant) else get_variant(protocol, mutation)
    model = Model(variant, config)
    w = model.initial()
    steps = trace[1:] if trace and trace[0].startswith("start:") else trace
    for n, step in enumerate(steps, 1):
        for label, nxt in model.successors(w):
            if label == step:
                w = nxt
                break
        else:
            raise ValueError(f"step {n} ({step!r}) is not enabled in the replayed state")
    violations, _ = model.check(w)
    return w, violations


def happy_path(protocol: str | Variant = "bilateral", ranks: int = 2, *,
               mutation: str | None = None) -> tuple[list[tuple[str, Command]], World]:
    """The commands every process executes when nothing goes wrong (no crash, loss or timeout), in order,
    as (process, command), and the final state. The schedule is the explorer's first successor at each
    state: the lowest-numbered process with work executes, else the first message in flight arrives."""
    variant = protocol if isinstance(protocol, Variant) else get_variant(protocol, mutation)
    log: list[tuple[str, Command]] = []
    model = Model(variant, Config(ranks=ranks, crashes=False, message_loss=False, timeouts=False),
                  observe=lambda who, cmd: log.append((who, cmd)))
    w = model.initial()
    while True:
        busy = [i for i in range(model.procs) if w.pending[i]]
        if busy:
            _, w = model.execute(w, busy[0])
        elif w.net:
            _, w = model.deliver(w, 0)
        else:
            return log, w
