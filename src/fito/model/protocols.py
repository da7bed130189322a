"""The protocols the model checker compares, side by side.

* `bilateral` -- the library's own machines from `fito.protocol`, unchanged.
* `paper-literal` -- §9.1 of the paper as written: the decision lives only in the coordinator's memory, the
  coordinator broadcasts commit, each rank marks the epoch stable locally, recovery trusts local marks.
  Built by subclassing the library's machines, so the only difference is the one the paper makes.
* `naive` -- "checkpoint at time t": each rank overwrites its file in place and fsyncs; a step counts as
  saved once every rank finished; recovery loads whatever is on disk.
* mutations -- planted bugs in `bilateral` (subclasses overriding one method each) that the checker must
  catch: READY before fsync, garbage collection before the decision is durable, publish before all READYs.

Recovery functions read the (post-crash) disk through a `Reader`, so the explorer can branch on every state
POSIX allows for each file a recovery actually reads."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, NamedTuple, Union

from fito.protocol import (
    Aborted, Begin, CollectGarbage, Command, Committed, Coordinator, CoordinatorPhase, Event, Notify,
    Participant, ParticipantPhase, Persist, Persisted, PublishDecision, Ready, ReadyReceived, SendReady,
    ShardWritten, UnitEntry, choose_epoch,
)
from fito.protocol.gc import live_commits
from fito.protocol.messages import Expected, manifest_path, shard_path
from fito.model.planted import REPLICA_KEY, DedupKeepsFirst, NoCoverageCheck, RecursiveDiscard
from fito.model.simfs import MISSING, Content, Reader, SimDisk, content_hash, unit

INITIAL_EPOCH = 1
INITIAL_ATTEMPT = "x"  # epoch 1, committed before exploration starts
NEXT_EPOCH = 2


def attempt_name(k: int) -> str:
    """The k-th attempt begun in a run: a, b, ..., z, a26, ... (unique across epochs, like the library's
    random attempt ids; the participant matches COMMIT/ABORT by attempt id alone)."""
    return chr(ord("a") + k) if k < 26 else f"a{k}"


# ---- model-only commands (not part of the library's protocol) ----
@dataclass(frozen=True)
class CommitPoint:
    """Ghost annotation: the variant's own notion of "this step is now saved" was reached."""

    epoch: int
    attempt: str


@dataclass(frozen=True)
class WriteInPlace:
    """naive: open(path, "wb") over the previous step's file and write."""

    rank: int
    epoch: int
    attempt: str
    path: str


@dataclass(frozen=True)
class MarkStable:
    """paper-literal: the rank records locally (atomically, durably) that (epoch, attempt) is its checkpoint."""

    rank: int
    epoch: int
    attempt: str


@dataclass(frozen=True)
class DiscardTentative:
    """paper-literal rollback: the rank deletes its tentative file."""

    path: str


ModelCommand = Union[Command, CommitPoint, WriteInPlace, MarkStable, DiscardTentative]


def naive_path(rank: int) -> str:
    return f"naive/rank-{rank:05d}.pt"


def mark_path(rank: int) -> str:
    return f"marks/rank-{rank:05d}"


# ---- the decision store, as the model sees it ----
class Record(NamedTuple):
    """One row of the durable, atomic decision log (seq = position in the store tuple)."""

    epoch: int
    attempt: str
    outcome: str
    manifest: str = ""
    manifest_hash: str = ""
    retired: bool = False


def committed_records(store: tuple[Record, ...]) -> list[Record]:
    """The rule `DecisionStore.committed` uses (one function): commits, not retired, later wins per epoch."""
    return live_commits(store)


# ---- what a recovery returns ----
class Recovery(NamedTuple):
    units: tuple[Content, ...] | None  # per rank, in rank order; None = recovery failed loudly
    error: str = ""


class RecoveryError(Exception):
    pass


def unit_entry(rank: int, c: Content, epoch: int) -> UnitEntry:
    """What rank `rank` vouches for in the model: its one unit, named after it, one byte long."""
    return UnitEntry(f"rank{rank}", 0, 1, content_hash(c), epoch)


def global_plan(ranks: int, replicas: bool = False) -> Expected:
    """The model's global plan, as the coordinator's Begin carries it: each rank's one unit, one byte each
    (with `replicas`, also the one replicated item every rank holds, kept once)."""
    return tuple(((f"rank{r}", None), 1) for r in range(ranks)) + ((REPLICA_KEY, 1),) * replicas


def replica_copy(epoch: int, attempt: str, differs: bool = False) -> tuple:
    """A rank's copy of the replicated item (equal on every rank unless this one `differs`)."""
    return ("replica", epoch, attempt, int(differs))


def manifest_content(epoch: int, attempt: str, readies: tuple[Ready, ...]) -> tuple:
    # per rank, its own unit (recovery loads units; the kept replica's hash is not what it compares)
    entries = tuple((r.rank, r.file, u.hash, u.epoch) for r in readies for u in r.units if u.key != REPLICA_KEY)
    return ("manifest", epoch, attempt, entries)


def recover_bilateral(read: Reader, store: tuple[Record, ...], ranks: int) -> Recovery:
    """The library's rule: newest committed decision whose manifest and units verify (hash + epoch tag)."""
    chosen: dict[str, tuple] = {}

    def verify(rec: Record) -> Exception | None:
        m = read(rec.manifest)
        if m is MISSING or m is None or content_hash(m) != rec.manifest_hash:
            return RecoveryError(f"epoch {rec.epoch}: manifest missing or hash mismatch")
        entries = sorted(m[3])
        if [e[0] for e in entries] != list(range(ranks)):
            return RecoveryError(f"epoch {rec.epoch}: manifest covers ranks {[e[0] for e in entries]}")
        loaded = []
        for rank, path, h, tag in entries:
            c = read(path)
            if c is MISSING or c is None or content_hash(c) != h:
                return RecoveryError(f"epoch {rec.epoch}: unit of rank {rank} missing or hash mismatch")
            if c[0] != "unit" or c[2] != tag:
                return RecoveryError(f"epoch {rec.epoch}: unit of rank {rank} has epoch tag {c[2]}, expected {tag}")
            loaded.append(c)
        chosen[rec.attempt + str(rec.epoch)] = tuple(loaded)
        return None

    try:
        rec, _skipped = choose_epoch(committed_records(store), verify, fallback=True)
    except Exception as exc:  # noqa: BLE001 - any loud failure is a legitimate outcome of recovery
        return Recovery(None, str(exc) or type(exc).__name__)
    return Recovery(chosen[rec.attempt + str(rec.epoch)])


def recover_naive(read: Reader, store: tuple[Record, ...], ranks: int) -> Recovery:
    """Load whatever each rank's file holds."""
    return Recovery(tuple(read(naive_path(r)) for r in range(ranks)))


def recover_paper_literal(read: Reader, store: tuple[Record, ...], ranks: int) -> Recovery:
    """Each rank trusts its own local commit mark."""
    out = []
    for r in range(ranks):
        mark = read(mark_path(r))
        if mark is MISSING or mark is None:
            out.append(MISSING)
            continue
        out.append(read(shard_path(mark[1], mark[2], r)))
    return Recovery(tuple(out))


# ---- naive machines ----
@dataclass(frozen=True)
class NaiveRank:
    rank: int
    phase: str = "idle"
    epoch: int = -1
    attempt: str = ""

    def handle(self, event: Event) -> tuple["NaiveRank", list[ModelCommand]]:
        if isinstance(event, Begin):
            return replace(self, phase="writing", epoch=event.epoch, attempt=event.attempt), [
                WriteInPlace(self.rank, event.epoch, event.attempt, naive_path(self.rank))
            ]
        if isinstance(event, ShardWritten) and self.phase == "writing":
            return replace(self, phase="fsync"), [Persist(event.path)]
        if isinstance(event, Persisted) and self.phase == "fsync":
            ready = Ready(self.epoch, self.attempt, self.rank, naive_path(self.rank), 1, ())
            return replace(self, phase="done"), [SendReady(ready)]
        return self, []


@dataclass(frozen=True)
class NaiveClock:
    """Only bookkeeping: the step counts as saved when every rank has finished writing."""

    world_size: int
    epoch: int = -1
    attempt: str = ""
    done: tuple[int, ...] = ()

    def handle(self, event: Event) -> tuple["NaiveClock", list[ModelCommand]]:
        if isinstance(event, Begin):
            return NaiveClock(self.world_size, event.epoch, event.attempt), []
        if isinstance(event, ReadyReceived) and event.ready.attempt == self.attempt and event.ready.rank not in self.done:
            done = tuple(sorted(self.done + (event.ready.rank,)))
            cmds: list[ModelCommand] = [CommitPoint(self.epoch, self.attempt)] if len(done) == self.world_size else []
            return replace(self, done=done), cmds
        return self, []


# ---- paper-literal machines: the library's, with the decision kept in memory ----
@dataclass(frozen=True)
class PaperParticipant(Participant):
    def handle(self, event: Event) -> tuple[Participant, list[ModelCommand]]:
        P = ParticipantPhase
        if isinstance(event, Committed) and event.attempt == self.attempt and self.phase is P.READY_SENT:
            return replace(self, phase=P.COMMITTED), [MarkStable(self.rank, self.epoch, self.attempt)]
        if isinstance(event, Aborted) and event.attempt == self.attempt and self.phase is not P.COMMITTED:
            nxt, _ = super().handle(event)
            return nxt, [DiscardTentative(shard_path(self.epoch, self.attempt, self.rank))]
        return super().handle(event)


@dataclass(frozen=True)
class PaperCoordinator(Coordinator):
    def write_manifest(self, nxt: Coordinator) -> tuple[Coordinator, list[ModelCommand]]:
        # "If ready is received from all within a timeout: the coordinator broadcasts commit."
        return replace(nxt, phase=CoordinatorPhase.COMMITTED), [
            CommitPoint(self.epoch, self.attempt), Notify(self.epoch, self.attempt, "commit"),
        ]

    def abort(self, reason: str) -> tuple[Coordinator, list[ModelCommand]]:
        return replace(self, phase=CoordinatorPhase.ABORTED, reason=reason), [
            Notify(self.epoch, self.attempt, "abort", reason)
        ]


# ---- planted bugs (mutations of bilateral) ----
@dataclass(frozen=True)
class ReadyBeforeFsync(Participant):
    """Vouches for the shard as soon as write() returned, before its bytes are durable."""

    def after_write(self, event: ShardWritten) -> tuple[Participant, list[Command]]:
        ready = Ready(self.epoch, self.attempt, self.rank, event.path, event.size, event.units)
        return replace(self, phase=ParticipantPhase.PERSISTING, written=event), [SendReady(ready), Persist(event.path)]

    def send_ready(self) -> tuple[Participant, list[Command]]:
        return replace(self, phase=ParticipantPhase.READY_SENT), []


@dataclass(frozen=True)
class GcBeforeDecision(Coordinator):
    """Deletes the previous epoch before the new decision is durable."""

    def publish(self) -> tuple[Coordinator, list[Command]]:
        return replace(self, phase=CoordinatorPhase.PUBLISHING), [
            CollectGarbage(self.epoch, self.attempt, self.fence),
            PublishDecision(self.epoch, self.attempt, "commit", self.manifest, self.manifest_hash, self.fence),
        ]

    def on_published(self) -> tuple[Coordinator, list[Command]]:
        return replace(self, phase=CoordinatorPhase.COMMITTED), [Notify(self.epoch, self.attempt, "commit")]


@dataclass(frozen=True)
class PublishBeforeAllReady(Coordinator):
    """Writes the manifest and publishes as soon as the first READY arrives."""

    def on_ready(self, ready: Ready) -> tuple[Coordinator, list[Command]]:
        if ready.epoch != self.epoch or ready.attempt != self.attempt:
            return self, []
        readies = tuple(sorted(self.readies + (ready,), key=lambda r: r.rank))
        return self.write_manifest(replace(self, readies=readies))


# ---- the registry ----
@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    participant: Callable[[int], object]  # rank -> fresh machine
    coordinator: Callable[[int], object]  # world size -> fresh machine
    initial_disk: Callable[[int], tuple[SimDisk, tuple[Record, ...]]]
    recover: Callable[[Reader, tuple[Record, ...], int], Recovery]
    presumed_abort: bool = True  # an attempt whose coordinator died undecided is aborted
    reader_fences: bool = False  # planted bug: the read-only opener takes a fencing token
    fence_per_save: bool = False  # planted bug: a coordinator takes a new token at every save, not once per life


def _initial_bilateral(ranks: int) -> tuple[SimDisk, tuple[Record, ...]]:
    disk = SimDisk()
    readies = []
    for r in range(ranks):
        path = shard_path(INITIAL_EPOCH, INITIAL_ATTEMPT, r)
        c = unit(r, INITIAL_EPOCH, INITIAL_ATTEMPT)
        disk = disk.write_durable(path, c, r)
        entry = unit_entry(r, c, INITIAL_EPOCH)
        readies.append(Ready(INITIAL_EPOCH, INITIAL_ATTEMPT, r, path, 1, (entry,)))
    m = manifest_content(INITIAL_EPOCH, INITIAL_ATTEMPT, tuple(readies))
    mpath = manifest_path(INITIAL_EPOCH, INITIAL_ATTEMPT)
    disk = disk.write_durable(mpath, m, ranks)
    return disk, (Record(INITIAL_EPOCH, INITIAL_ATTEMPT, "commit", mpath, content_hash(m)),)


def _initial_naive(ranks: int) -> tuple[SimDisk, tuple[Record, ...]]:
    disk = SimDisk()
    for r in range(ranks):
        disk = disk.write_durable(naive_path(r), unit(r, INITIAL_EPOCH, INITIAL_ATTEMPT), r)
    return disk, ()


def _initial_paper(ranks: int) -> tuple[SimDisk, tuple[Record, ...]]:
    disk = SimDisk()
    for r in range(ranks):
        disk = disk.write_durable(shard_path(INITIAL_EPOCH, INITIAL_ATTEMPT, r), unit(r, INITIAL_EPOCH, INITIAL_ATTEMPT), r)
        disk = disk.write_durable(mark_path(r), ("mark", INITIAL_EPOCH, INITIAL_ATTEMPT), r)
    return disk, ()


BILATERAL = Variant(
    "bilateral", "fito's protocol: fsync before READY, durable fenced decision, GC after commit",
    Participant, Coordinator, _initial_bilateral, recover_bilateral,
)
VARIANTS: dict[str, Variant] = {
    "naive": Variant(
        "naive", "each rank overwrites its file in place at time t; recovery loads what is on disk",
        NaiveRank, NaiveClock, _initial_naive, recover_naive, presumed_abort=False,
    ),
    "paper-literal": Variant(
        "paper-literal", "§9.1 as written: decision in coordinator memory, ranks mark commit locally",
        PaperParticipant, PaperCoordinator, _initial_paper, recover_paper_literal,
    ),
    "bilateral": BILATERAL,
}
MUTATIONS: dict[str, Variant] = {
    "ready-before-fsync": replace(
        BILATERAL, name="bilateral+ready-before-fsync", summary="READY sent before the shard is fsynced",
        participant=ReadyBeforeFsync,
    ),
    "gc-before-decision": replace(
        BILATERAL, name="bilateral+gc-before-decision", summary="old epoch deleted before the new decision is durable",
        coordinator=GcBeforeDecision,
    ),
    "publish-before-all-ready": replace(
        BILATERAL, name="bilateral+publish-before-all-ready", summary="decision published after the first READY",
        coordinator=PublishBeforeAllReady,
    ),
    "recursive-discard": replace(
        BILATERAL, name="bilateral+recursive-discard",
        summary="an aborted coordinator's discard removes the step's directory recursively after finding it empty",
        coordinator=RecursiveDiscard,
    ),
    "reader-takes-fence": replace(
        BILATERAL, name="bilateral+reader-takes-fence",
        summary="a read-only opener takes a fencing token, fencing out the live writer", reader_fences=True,
    ),
    "fence-per-save": replace(
        BILATERAL, name="bilateral+fence-per-save",
        summary="a new fencing token at every save instead of once per life: an old job fences the new one out",
        fence_per_save=True,
    ),
    "no-coverage-check": replace(
        BILATERAL, name="bilateral+no-coverage-check",
        summary="the coordinator accepts READYs that do not vouch for every chunk of the plan",
        coordinator=NoCoverageCheck,
    ),
    "dedup-keeps-differing": replace(
        BILATERAL, name="bilateral+dedup-keeps-differing",
        summary="the coordinator keeps one copy of a replicated item without comparing the other copies' hashes",
        coordinator=DedupKeepsFirst,
    ),
}


# What each planted bug needs of the scenario to show (Config fields set on): discard runs only when an
# attempt fails, and the race needs a second attempt of the same step and a coordinator that survives the
# restart; a coverage gap needs a rank whose write misses chunks; a dedup, an item every rank writes a copy of.
MUTATION_SETTINGS: dict[str, dict[str, object]] = {
    "recursive-discard": {"attempts": 2, "zombies": True, "discard": True},
    "no-coverage-check": {"short_writes": True},
    "reader-takes-fence": {"reader": True},
    "fence-per-save": {"attempts": 2, "zombies": True, "zombie_saves": True},
    "dedup-keeps-differing": {"replicas": True},
}


def get_variant(protocol: str, mutation: str | None = None) -> Variant:
    if mutation:
        if protocol != "bilateral":
            raise ValueError("mutations are planted in the bilateral protocol only")
        if mutation not in MUTATIONS:
            raise ValueError(f"unknown mutation {mutation!r}; choose from {', '.join(MUTATIONS)}")
        return MUTATIONS[mutation]
    if protocol not in VARIANTS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[protocol]
