"""The model checker's transition system: one protocol variant under one `Config`. `Model` builds the
initial world (epoch 1 committed, epoch 2 being saved), lists every successor of a world (a process
executes its next command, a message is delivered or lost, the coordinator times out, a process crashes,
the job restarts, possibly leaving a zombie coordinator, or training goes on to the next save), and checks
a world against the properties of fito.model.explorer_properties (memoised on what recovery reads)."""
from __future__ import annotations

from typing import Callable

from fito.model.explorer_properties import Violation, crash_violations, liveness_violations, replica_violations
from fito.model.explorer_world import Config, Ghost, World
from fito.model.protocols import INITIAL_ATTEMPT, INITIAL_EPOCH, NEXT_EPOCH, Record, Variant, attempt_name, global_plan
from fito.model.simexec import SimExecutor, add_attempt as _add, net_add as _net_add
from fito.model.simfs import SimDisk, SimFile
from fito.model.planted import DedupCoordinator
from fito.protocol import (
    Aborted, Begin, Command, Committed, Coordinator, CoordinatorPhase, PublishDecision, RankFailed, ReadyReceived,
    TimedOut, WriteShard,
)
from fito.protocol.drive import feed, recording, step


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
        if i < self.n:
            return self.variant.participant(i)
        make = self.variant.coordinator
        if self.config.replicas and make is Coordinator:
            make = DedupCoordinator
        if self.config.discard and isinstance(make, type) and issubclass(make, Coordinator):
            return make(self.n, discard=True)  # the library's own machine: fito.commit.coordinate's
        return make(self.n)

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
        m, cmds = feed(self.fresh(self.n), Begin(*ghost.current, fence[1], global_plan(self.n, self.config.replicas)))
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
                if i < self.n and isinstance(w.pending[i][0], WriteShard):
                    if self.config.short_writes:
                        out.append(self.execute(w, i, short=True))
                    if self.config.replicas and self.n > 1:
                        out.append(self.execute(w, i, differs=True))
                if i >= self.n and self.config.store_unreachable and isinstance(w.pending[i][0], PublishDecision):
                    out.append(self.execute(w, i, unreachable=1))  # the decision never reached the store
                    out.append(self.execute(w, i, unreachable=2))  # it landed, its answer was lost
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
        if self.config.reader and g.reader < 0:
            # Opening for reading takes no token (the library's fence policy); the planted bug takes one.
            token = w.fence[0] + 1 if self.variant.reader_fences else 0
            fence = (token,) + w.fence[1:] if token else w.fence
            out.append(("reader: open the checkpoint read-only" + (", taking a fencing token" if token else ""),
                        w._replace(ghost=g._replace(reader=token, intruder=token or g.intruder), fence=fence)))
        zombie = w.machines[self.zombie] if self.config.zombies else None
        if (self.config.zombie_saves and not g.zombie_saved and not w.pending[self.zombie]
                and getattr(zombie, "phase", None) in (CoordinatorPhase.COMMITTED, CoordinatorPhase.ABORTED)):
            out.append(self._zombie_saves(w, zombie))
        epoch = g.current[0]
        if g.attempts < self.config.attempts and g.current not in g.committed:
            nxt_attempt = (epoch, attempt_name(g.named))
            ghost = g._replace(aborted=_add(g.aborted, g.current), current=nxt_attempt, attempts=g.attempts + 1,
                               named=g.named + 1)
            zombie_idle = self.config.zombies and not w.pending[self.zombie] and w.machines[self.zombie] == self._fresh[self.zombie]
            # no process is left that could touch a dead attempt again (a live zombie could still publish one)
            settle = self.config.settle_dead and (not self.config.zombies or zombie_idle)
            disk = settle_dead(w.disk, ghost, self.n) if settle else w.disk
            nxt = self._begin(disk, w.store, ghost, self._new_job_fence(w.fence))
            out.append((f"job restart: every process restarts and begins epoch {epoch} attempt {nxt_attempt[1]}",
                        nxt._replace(owners=w.owners + nxt.owners)))
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

    def _zombie_saves(self, w: World, zombie: Coordinator) -> tuple[str, World]:
        """The old job (whose coordinator survived the restart) goes on training and begins its next save:
        with its life's token (the library), or with a new one (a token per save: the planted bug)."""
        g = w.ghost
        per_save = self.variant.fence_per_save
        token = w.fence[0] + 1 if per_save else w.fence[2]
        att = (zombie.epoch + 1, attempt_name(g.named))
        m, cmds = feed(self._fresh[self.zombie], Begin(*att, token, global_plan(self.n, self.config.replicas)))
        fence = (token, w.fence[1], token) if per_save else w.fence
        ghost = g._replace(named=g.named + 1, zombie_saved=True, intruder=token if per_save else g.intruder)
        nxt = self._set(w._replace(ghost=ghost, fence=fence, owners=w.owners + ((att[1], token),)), self.zombie, m, cmds)
        return (f"zombie coord: its job goes on and begins saving epoch {att[0]} attempt {att[1]}"
                + (", taking a new fencing token" if per_save else ""), nxt)

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

    def execute(self, w: World, i: int, short: bool = False, differs: bool = False,
                unreachable: int = 0) -> tuple[str, World]:
        """Process i executes its next pending command (a failed file operation is caught as the library does)."""
        try:
            return self._exec_ok(w, i, short, differs, unreachable)
        except (FileNotFoundError, FileExistsError) as exc:
            return self._io_failed(w, i, exc)

    def _io_failed(self, w: World, i: int, exc: OSError) -> tuple[str, World]:
        """The library's driver catches a failed file operation. A rank reports RankFailed to the
        coordinator. A coordinator's own command failing (its manifest's write or persist) is fed to its
        machine as RankFailed of its own rank, rank 0 (fito.dcp.Writer._finish): the machine stays in the
        phase that issued the command, so while no commit was sent it aborts, publishes the abort and
        discards, as the library's does; past that it ignores the event and the process gives up."""
        cmd = w.pending[i][0]
        net, ghost = w.net, w.ghost
        m = w.machines[i]
        machine, pending = self._fresh[i], ()
        said = f"{type(exc).__name__}"
        if i < self.n:
            net = _net_add(net, self.n, RankFailed(i, said))
            outcome = "save given up"
        else:
            att = (getattr(m, "epoch", -1), getattr(m, "attempt", ""))
            if att not in ghost.committed:  # the save raised SaveAbortedError: it is aborted for the user
                ghost = ghost._replace(aborted=_add(ghost.aborted, att))
            # the commands queued behind the failed one are dropped, as the library's loop is left by the raise
            fed, cmds = feed(m, RankFailed(0, said))
            outcome = "save given up"
            if fed != m or cmds:
                machine, pending = fed, cmds
                outcome = "RankFailed(rank 0) fed to its machine: abort"
        nxt = self._set(World(w.machines, w.pending, net, w.disk, w.store, ghost, w.fence, w.owners), i, machine, pending)
        return f"{self.who(i)}: {type(cmd).__name__} FAILED ({type(exc).__name__}: {exc}); {outcome}", nxt

    def _exec_ok(self, w: World, i: int, short: bool = False, differs: bool = False,
                 unreachable: int = 0) -> tuple[str, World]:
        """Process i executes its next command through its simulated executor, and the reply goes back to
        its machine: one `step` of the executor contract the library drives (fito.protocol.drive)."""
        sim = SimExecutor(self, w, i, short, differs, unreachable)
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
            hit = crash_violations(self.variant, self.n, w)
            self._check_memo[key] = hit
            images = hit[1]
        violations = hit[0]
        liveness = liveness_violations(w, self.n, self.config.timeouts) + replica_violations(w)
        return (violations + liveness if liveness else violations), images


def settle_dead(disk: SimDisk, ghost: Ghost, owner: int) -> SimDisk:
    """At a job restart that leaves no zombie, and with none alive from before: every attempt never committed
    is dead. No process of its is left and no coordinator can publish it, so recovery never reads its files (it
    reads committed manifests and what they name) and nothing writes, persists or unlinks them by name again.
    What stays observable of a dead attempt is whether its directory holds a file: the GC's listing (and so
    whether the GC deletes it) and a discard's "is the step's directory empty". So each dead attempt's files
    are replaced by one durable marker, `epochs/<step>/<attempt>/dead` (on node `owner`, the coordinator's),
    if any of them has a name now, else by nothing. Which of its objects existed, and which were durable,
    multiplied every state of the retry; the tests check the verdicts are those of the search that keeps them
    (`Config(settle_dead=False)`, tests/model/test_settle_dead.py)."""
    live = {f"{e:012d}/{a}" for e, a in ghost.committed}
    files: list = []
    dead: set[str] = set()
    changed = False
    for p, f in disk.files:
        parts = p.split("/")
        if len(parts) >= 4 and parts[0] == "epochs" and f"{parts[1]}/{parts[2]}" not in live:
            changed = True
            if f.linked:
                dead.add("/".join(parts[:3]))
            continue
        files.append((p, f))
    if not changed:
        return disk
    marker = ("dead",)
    files += [(f"{d}/dead", SimFile(marker, marker, True, True, owner)) for d in dead]
    return SimDisk(tuple(sorted(files)), disk.removed)


def _msg(ev: object) -> str:
    """How a message in flight is named in a trace."""
    if isinstance(ev, ReadyReceived):
        return f"READY(rank{ev.ready.rank}, e{ev.ready.epoch}/{ev.ready.attempt})"
    if isinstance(ev, Committed):
        return f"COMMIT(e{ev.epoch}/{ev.attempt})"
    if isinstance(ev, Aborted):
        return f"ABORT(e{ev.epoch}/{ev.attempt})"
    if isinstance(ev, RankFailed):
        return f"FAILED(rank{ev.rank})"
    return repr(ev)
