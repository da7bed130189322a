"""fito.dcp.Writer: fito's commit protocol behind torch.distributed.checkpoint's StorageWriter.

DCP calls, in order: (all ranks) set_up_storage_writer, prepare_local_plan; (coordinator)
prepare_global_plan; (all ranks) write_data; (coordinator) finish, only if every rank's write_data
succeeded. Mapped onto the protocol (the executor is fito.commit's; this module adapts DCP's calls to it):
- prepare_global_plan: the coordinator takes its fencing token by its fence policy (fito.commit.attempt),
  names the attempt (it carries the fence), and begins the Coordinator machine with the global plan's items;
  every rank learns the attempt from its plan's storage_data.
- write_data: the Participant machine writes this rank's items to its own object of (step, attempt),
  persists it, and returns its READY inside the WriteResults (per item: offset, length, block hashes, tag).
- finish: each rank's READY is fed to the Coordinator, which checks coverage on the last one, has the
  manifest written and persisted, and publishes the decision under its fence: the commit point. A failure
  raises; DCP delivers it to every rank.
- a rank that failed (DCP's CheckpointException: finish is never called) or went silent (a collective timed
  out) reaches the Coordinator as RankFailed / TimedOut through `Writer.fail`, which fito.dcp.save and the
  Checkpointer call: the abort is published and the machine's Discard removes the attempt. (Plain dcp.save
  raises without calling the storage writer again: the attempt stays undecided, aborted by presumption.)
Both sides run through fito.protocol.drive; `observe` sees every command the machines emit."""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from torch.distributed.checkpoint import StorageWriter
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from fito import knobs
from fito.commit.attempt import Fence, FencePolicy
from fito.commit.coordinate import CoordinatorSide
from fito.commit.executor import RankExecutor, observed, publish_decision
from fito.commit.retention import collect_garbage
from fito.commit.write import write_object
from fito.coord.base import DecisionStore
from fito.coord.choose import default_store
from fito.errors import SaveAbortedError, StateMismatchError
from fito.format import manifest as manifest_fmt
from fito.format.hashing import ALGORITHMS, DEFAULT_ALGORITHM
from fito.format.manifest import ObjectEntry, Piece
from fito.format.objects import ObjectHeader
from fito.plan.metadata import expected_items, expected_of_plans, key_of, to_manifest
from fito.plan.save import LocalPlanData, differing_replicas, replica_digests, replicas_differ_message
from fito.protocol import Begin, Command, Participant, RankFailed, Ready, ReadyReceived, SendReady, TimedOut, UnitEntry
from fito.protocol.drive import drive
from fito.protocol.messages import Event, GlobalPlan, WriteShard
from fito.storage.base import Storage
from fito.storage import open_storage, url_of

__all__ = ["AttemptPlan", "Writer", "publish_decision"]  # publish_decision: fito.commit.executor's, for old callers

log = logging.getLogger("fito")
READY_FQN = "__fito_ready__"  # the index of the one WriteResult per rank that carries its READY
REPLICAS_FQN = "__fito_replicas__"  # with DCP's planner: the digests of the replicas a rank holds


@dataclass(frozen=True)
class AttemptPlan:
    """What the coordinator tells every rank in its plan: the attempt it writes for."""

    step: int
    attempt: str
    rank: int
    block_bytes: int
    hash_replicas: bool = False  # DCP's own planner deduplicated without fito's replica check: hash them here


class Writer(StorageWriter):
    """`dcp.save(state, storage_writer=fito.dcp.Writer(root, step))`, with DCP's planner (values stored as JSON
    from the planner's objects, replicas hashed in write_data and compared before the commit) or fito's
    (`planner=fito.dcp.SavePlanner()`: replicas compared before anything is written). `root` may come as
    dcp.save's `checkpoint_id` instead: `Writer(step=s)`.

    Every rank creates a Writer on the same root (a shared file system). `keep`: after the commit, keep only
    the newest `keep` committed steps (None keeps all); undecided attempts of this or older coordinators are
    removed either way. `store`: where decisions live (default: the SQLite log in `root`). `fence`: returns
    the coordinator's fencing token; by default each save takes a new one (a `fito.Checkpointer` holds one
    token for its whole life, so a save of an older, fenced-out Checkpointer is refused). `observe`: called
    with ("rank<r>" or "coord", command) for every protocol command, before it runs (tracing; the
    differential test against the model checker). `rollback=True`: this save rolls the run back on purpose, so
`keep` deletes the committed steps above `step` first; without it a save below the newest committed step
keeps every higher step (and logs a warning: a job that restarted without restoring). `progress`: called
with the byte count of each block this
rank writes, as it is written (a progress bar; keep it cheap); if it has a `resize(total)` method, that is
called first with this rank's planned tensor bytes (its share of the replicas)."""

    def __init__(self, root: str | os.PathLike[str] | Storage | None = None, step: int | None = None, *, keep: int | None = None,
                 store: DecisionStore | None = None, hash: str = DEFAULT_ALGORITHM,
                 fence: Callable[[], int] | Fence | None = None, observe: Callable[[str, Command], None] | None = None,
                 progress: Callable[[int], None] | None = None, rollback: bool = False) -> None:
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}: Writer(root, step) or Writer(step=s) "
                             "with dcp.save(..., checkpoint_id=root)")
        if keep is not None and keep < 1:
            raise ValueError(f"keep={keep}: the newest committed step is always kept; use keep >= 1 or None")
        if hash not in ALGORITHMS:
            raise ValueError(f"hash={hash!r}: choose one of {sorted(ALGORITHMS)}")
        self._storage = None if root is None else open_storage(root)  # else: dcp.save's checkpoint_id
        self.step, self.keep, self.algorithm, self.rollback = step, keep, hash, rollback
        self._store, self._owns_store = store, store is None
        self.rank, self.is_coordinator = 0, True
        self.observe = observe
        self.progress = progress
        # the fence policy (fito.commit.attempt): a token per save, or the one a Checkpointer holds for life
        self._fence = fence if isinstance(fence, Fence) else Fence(FencePolicy.PER_SAVE, source=fence)
        self._token: int | None = None
        self._attempt = ""
        self._coordinator: CoordinatorSide | None = None  # rank 0, from prepare_global_plan on
        self._metadata: Metadata | None = None
        self._planned: list[WriteItem] = []  # this rank's items before DCP's planner deduplicated them

    # ---------------------------------------------------------------- DCP's calls
    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise ValueError("fito.dcp.Writer has no root: pass it, Writer(root, step), or dcp.save(..., checkpoint_id=root)")
        return self._storage

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id is not None and self._storage is None:
            self._storage = open_storage(checkpoint_id)
        elif checkpoint_id is not None and url_of(checkpoint_id) != self.storage.url:
            raise ValueError(f"fito.dcp.Writer writes to {self.storage.url}; checkpoint_id={checkpoint_id!r} names another place")

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("use_collectives") is False:
            raise ValueError("fito.dcp.Writer needs collectives: the commit waits for every rank's READY")
        self.is_coordinator, self.rank = is_coordinator, int(kwargs.get("rank", 0))

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        # fito's planner hashed this rank's replicas into the plan; with DCP's own, keep the items as planned
        # (before deduplication) and hash the replicas in write_data, where the planner's state is at hand
        self._planned = [] if isinstance(plan.storage_data, LocalPlanData) else list(plan.items)
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # The fence is taken before this coordinator's first write of the save: any older one is fenced out.
        self._attempt = self._fence.new_attempt(self.store)  # names carry the fence and the log's identity
        self._token = self._fence.token
        block = knobs.block_bytes()
        assert self._token is not None
        # the Coordinator begins now, so a rank that fails or goes silent reaches it (fail())
        self._coordinator = CoordinatorSide(self.storage, self.store, self.step, self._attempt, self._token, len(plans),
                                            tuple(expected_of_plans(plans).items()), self.algorithm, self._manifest,
                                            self.observe)
        hash_replicas = len(plans) > 1 and not all(isinstance(p.storage_data, LocalPlanData) for p in plans)
        return [dataclasses.replace(p, storage_data=AttemptPlan(self.step, self._attempt, rank, block, hash_replicas))
                for rank, p in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        spec = plan.storage_data
        if not isinstance(spec, AttemptPlan) or spec.rank != self.rank:
            raise StateMismatchError(f"rank {self.rank}: the coordinator's plan carries no attempt for this rank ({spec!r})")
        # a cached plan carries a previous save's attempt: writing it would collide with a committed step
        stale = spec.step != self.step or (self.is_coordinator and spec.attempt != self._attempt)
        if stale or getattr(planner, "_enable_plan_caching", False):
            said = f"its plan names attempt {spec.attempt!r} of step {spec.step}" if stale else "plan caching is on"
            raise StateMismatchError(f"rank {self.rank}, save of step {self.step}: {said}; a cached plan would reuse a "
                                     "previous save's attempt, so nothing was written. Turn plan caching off: "
                                     "DefaultSavePlanner(enable_plan_caching=False), the default")
        pieces: list[Piece] = []

        def write(f: BinaryIO, cmd: WriteShard) -> tuple[int, tuple[UnitEntry, ...]]:
            header = ObjectHeader(cmd.epoch, cmd.rank, len(plan.items), cmd.attempt)
            size = write_object(f, header, plan, planner, spec.block_bytes, self.algorithm, pieces, self.progress)
            return size, tuple(UnitEntry(fqn, p.offset, p.length, "", p.tag, p.blocks, chunk)
                               for (fqn, chunk), p in ((key_of(item.index), p) for item, p in zip(plan.items, pieces)))

        execute = RankExecutor(self.storage, spec.step, spec.attempt, write)
        try:
            _, outbox = drive(Participant(self.rank), Begin(spec.step, spec.attempt),
                              observed(execute, f"rank{self.rank}", self.observe))
        except Exception as exc:  # DCP hands it to every rank; say what failed where, and leave nothing behind
            log.exception("rank %d failed to persist step %d", self.rank, spec.step)
            execute.remove_own()
            if isinstance(exc, StateMismatchError):  # the state refused as it was serialized (a value too big)
                raise
            said = execute.failure(exc)
            raise SaveAbortedError(said, step=spec.step, phase=execute.phase, failures={self.rank: said}) from exc
        ready = next(c.ready for c in outbox if isinstance(c, SendReady))  # only after the object is durable
        # The READY vouches for every item (offset, length, block hashes, tag); the per-item results only
        # tell DCP the sizes.
        results = [WriteResult(index=item.index, size_in_bytes=p.length, storage_data=None) for item, p in zip(plan.items, pieces)]
        results.append(WriteResult(index=MetadataIndex(READY_FQN), size_in_bytes=ready.size, storage_data=ready))
        if spec.hash_replicas:  # DCP's planner kept one copy of each replica by name: are the copies equal?
            digests = replica_digests(self._planned, planner)
            results.append(WriteResult(index=MetadataIndex(REPLICAS_FQN), size_in_bytes=0, storage_data=digests))
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        try:
            self._finish(metadata, results)
        finally:
            self._close_store()

    def fail(self, event: RankFailed | TimedOut) -> None:
        """Tell the coordinator that a rank failed (RankFailed) or did not answer in time (TimedOut) after the
        attempt began: the machine publishes the abort and discards the attempt. Called by fito.dcp.save and
        the Checkpointer with what DCP reported; a no-op on other ranks and once an outcome is decided."""
        try:
            if self._coordinator is not None:
                self._coordinator.fail(event)
        finally:
            self._close_store()

    def _close_store(self) -> None:
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=self.storage.url)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False  # never picked by DCP from a bare path: pass it as storage_writer

    # ---------------------------------------------------------------- the coordinator's side
    @property
    def store(self) -> DecisionStore:
        if self._store is None:
            self._store = default_store(self.storage)  # fito.coord.choose: the one lookup
        return self._store

    def _manifest(self, readies: tuple[Ready, ...]) -> bytes:
        assert self._metadata is not None, "a manifest before finish()"
        pieces = {u.key: Piece(r.rank, u.offset, u.length, u.blocks, u.epoch) for r in readies for u in r.units}
        objects = [ObjectEntry(r.rank, r.file, r.size) for r in readies]
        m = to_manifest(self.step, self._attempt, self.algorithm, knobs.block_bytes(), self._metadata, pieces, objects)
        return manifest_fmt.build(m)

    def _finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        step, coordinator = self.step, self._coordinator
        assert coordinator is not None, "finish() before prepare_global_plan()"
        self._metadata = metadata
        # DCP's metadata, which a reader plans from, is what the attempt must cover (built from the plans the
        # machine began with, unless a planner added to it)
        arrived: list[Event] = [GlobalPlan(tuple(expected_items(metadata).items())), *_gather(results)]
        differ = differing_replicas([_replicas_of(r) for r in results])
        if differ:  # the objects are written but nothing is decided: the machine aborts and discards
            coordinator.fail(RankFailed(self.rank, "the copies of a replicated item differ"))
            raise SaveAbortedError(step=step, message=f"save of step {step}: " + replicas_differ_message(
                differ, "nothing was committed, the previous committed step is intact"))
        try:
            for event in arrived:
                coordinator.handle(event)
        except Exception as exc:
            log.exception("coordinator failed during step %d", step)
            said = coordinator.executor.failure(exc)
            phase = coordinator.executor.phase
            coordinator.fail(RankFailed(self.rank, said))  # aborts only while no commit was sent
            raise SaveAbortedError(f"rank 0 (coordinator) failed: {said}", step=step, phase=phase,
                                   failures={self.rank: said}) from exc
        notify, collect = coordinator.notify, coordinator.collect
        if not notify:
            raise SaveAbortedError(step=step, message=f"save of step {step}: the protocol stopped in phase "
                                   f"{coordinator.machine.phase.value}; nothing was committed, the previous committed step is intact")
        if notify[0].outcome != "commit":
            raise SaveAbortedError(step=step, message=f"save of step {step} aborted: {notify[0].reason}; nothing was committed, the "
                                   "previous committed step is intact")
        try:  # only a warning: never in the way of the commit or of the collection below
            self._warn_if_below(step)
        except Exception as exc:  # noqa: BLE001
            log.warning("step %d committed; could not compare it with the other committed steps (%s: %s)", step,
                        type(exc).__name__, exc)
        try:  # the commit is durable; a failed cleanup must not turn it into an error
            for gc in collect:
                collect_garbage(self.storage, self.store, gc.fence, self.keep, newest=(gc.newest_epoch, gc.newest_attempt),
                                rollback=self.rollback)
        except Exception as exc:  # noqa: BLE001
            log.warning("step %d committed, but cleaning up older attempts failed (%s: %s); they are retried after "
                        "the next save, or run `fito gc %s`", step, type(exc).__name__, exc, self.storage.url)

    def _warn_if_below(self, step: int) -> None:
        """A save below a committed step is legitimate (a rollback, which the caller then says) but is also
        what a job that restarted without restoring does: say so, and what retention and restore() do."""
        if self.rollback:
            return
        higher = sorted({d.epoch for d in self.store.committed() if d.epoch > step})
        if higher:
            log.warning("%s: step %d was saved below committed step %d (did the job restart without restoring?). "
                        "The higher steps %s are kept: retention deletes them only after a save with rollback=True. "
                        "restore() now returns step %d (the newest by commit order); restore(step=%d) returns the "
                        "higher one", self.storage.url, step, higher[-1], higher, step, higher[-1])


def _replicas_of(rank_results: list[WriteResult]) -> dict[Any, str]:
    return next((wr.storage_data for wr in rank_results if wr.index.fqn == REPLICAS_FQN), None) or {}


def _gather(results: list[list[WriteResult]]) -> list[ReadyReceived | RankFailed]:
    """What each rank's WriteResults tell the coordinator, in rank order: its READY, or that it failed."""
    events: list[ReadyReceived | RankFailed] = []
    for rank, rank_results in enumerate(results):
        ready = [wr.storage_data for wr in rank_results if wr.index.fqn == READY_FQN]
        if len(ready) != 1 or not isinstance(ready[0], Ready) or ready[0].rank != rank:
            events.append(RankFailed(rank, "its write results carry no READY of its own"))
        else:
            events.append(ReadyReceived(ready[0]))
    return events
