"""fito.dcp.Writer: fito's commit protocol behind torch.distributed.checkpoint's StorageWriter.

DCP calls, in order: (all ranks) set_up_storage_writer, prepare_local_plan; (coordinator)
prepare_global_plan; (all ranks) write_data; (coordinator) finish, only if every rank's write_data
succeeded. Mapped onto the protocol:
- prepare_global_plan: the coordinator takes a new fencing token and names the attempt (it carries the
  fence); every rank learns it from its plan's storage_data.
- write_data: the Participant machine writes this rank's items to its own object of (step, attempt),
  persists it, and returns its READY inside the WriteResults (per item: offset, length, block hashes, tag).
- finish: the Coordinator machine, begun with the fence and the global plan's items, checks coverage on the
  last READY, has the manifest written and persisted, and publishes the decision under its fence: the commit
  point. A failure raises; DCP delivers it to every rank.
Both sides run through fito.protocol.drive.drive; `observe` sees every command the machines emit."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from torch.distributed.checkpoint import StorageWriter
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from fito import knobs
from fito.ckpt.checkpointer import attempt_id
from fito.ckpt.failure import at as failed_at
from fito.ckpt.retention import collect_garbage, discard
from fito.coord.base import Decision, DecisionStore
from fito.coord.choose import default_store
from fito.errors import CoordinationUnavailableError, SaveAbortedError, StaleFenceError, StateMismatchError
from fito.format import manifest as manifest_fmt
from fito.format.hashing import ALGORITHMS, DEFAULT_ALGORITHM, digest
from fito.format.manifest import ObjectEntry, Piece
from fito.format.objects import HEADER, ObjectHeader, block_digest, padding
from fito.plan.metadata import expected_items, key_of, to_manifest
from fito.plan.save import LocalPlanData, differing_replicas, item_bytes, replica_digests, replicas_differ_message
from fito.protocol import (
    Begin, Command, Coordinator, DecisionPublished, ManifestWritten, Notify, Participant, Persist, Persisted,
    PublishDecision, PublishRejected, RankFailed, Ready, ReadyReceived, SendReady, ShardWritten,
    UnitEntry, WriteManifest, WriteShard,
)
from fito.protocol.drive import Executor, drive, recording
from fito.protocol.messages import CollectGarbage, Event, attempt_dir
from fito.storage.base import Storage
from fito.storage import open_storage, url_of

log = logging.getLogger("fito")
READY_FQN = "__fito_ready__"  # the index of the one WriteResult per rank that carries its READY
REPLICAS_FQN = "__fito_replicas__"  # with DCP's planner: the digests of the replicas a rank holds
PUBLISH_TRIES = 3
OVERLAP_BYTES = 1 << 20  # a block at least this big is hashed in a helper thread while it is written


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
                 fence: Callable[[], int] | None = None, observe: Callable[[str, Command], None] | None = None,
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
        self._fence: int | None = None
        self._fence_source = fence
        self._attempt = ""
        self._ranks = 0
        self.finishing = False  # finish() began: from here on, a commit may have been sent
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
        self._fence = self._fence_source() if self._fence_source is not None else self.store.acquire_fence()
        self._attempt = attempt_id(self._fence, self.store.log_id())  # names carry the log's identity
        self._ranks = len(plans)  # whose objects a discard removes, by name
        block = knobs.block_bytes()
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
        phase, where, own = "unit write", attempt_dir(spec.step, spec.attempt), ""

        def execute(cmd: Command) -> Event | None:
            nonlocal phase, where, own
            if isinstance(cmd, WriteShard):
                phase, where = "unit write", cmd.path
                self.storage.makedirs(attempt_dir(cmd.epoch, cmd.attempt))
                header = ObjectHeader(cmd.epoch, cmd.rank, len(plan.items), cmd.attempt)
                with self.storage.create(cmd.path) as f:
                    own = cmd.path  # only once created: a file that was already there is never this save's to remove
                    size = _write_object(f, header, plan, planner, spec.block_bytes, self.algorithm, pieces, self.progress)
                units = tuple(UnitEntry(fqn, p.offset, p.length, "", p.tag, p.blocks, chunk)
                              for (fqn, chunk), p in ((key_of(item.index), p) for item, p in zip(plan.items, pieces)))
                return ShardWritten(cmd.path, size, units)
            if isinstance(cmd, SendReady):
                return None  # the READY travels back to the coordinator in the WriteResults
            phase, where = "persist", getattr(cmd, "path", where)
            return self._persist(cmd)

        try:
            _, outbox = drive(Participant(self.rank), Begin(spec.step, spec.attempt), self._observed(f"rank{self.rank}", execute))
        except Exception as exc:  # DCP hands it to every rank; say what failed where, and leave nothing behind
            log.exception("rank %d failed to persist step %d", self.rank, spec.step)
            if own:
                _discard(self.storage.delete, own)
            if isinstance(exc, StateMismatchError):  # the state refused as it was serialized (a value too big)
                raise
            said = failed_at(phase, where, exc)
            raise SaveAbortedError(said, step=spec.step, phase=phase, failures={self.rank: said}) from exc
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
        self.finishing = True
        try:
            self._finish(metadata, results)
        finally:
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
            self._store = default_store(self.storage)  # SQLite in a local root, the object log on S3
        return self._store

    def _finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        step, attempt, fence = self.step, self._attempt, self._fence
        assert fence is not None, "finish() before prepare_global_plan()"
        arrived = _gather(results)
        differ = differing_replicas([_replicas_of(r) for r in results])
        if differ:  # the objects are written but nothing is decided: remove them, commit nothing
            self.discard()
            raise SaveAbortedError(step=step, message=f"save of step {step}: " + replicas_differ_message(
                differ, "nothing was committed, the previous committed step is intact"))
        block = knobs.block_bytes()
        notify: list[Notify] = []
        collect: list[CollectGarbage] = []
        phase, where, sent_commit = "manifest write", attempt_dir(step, attempt), False

        def execute(cmd: Command) -> Event | None:
            nonlocal phase, where, sent_commit
            if isinstance(cmd, WriteManifest):  # the machine checked coverage: every item exactly once
                phase, where = "manifest write", cmd.path
                pieces = {u.key: Piece(r.rank, u.offset, u.length, u.blocks, u.epoch) for r in cmd.readies for u in r.units}
                objects = [ObjectEntry(r.rank, r.file, r.size) for r in cmd.readies]
                m = to_manifest(step, attempt, self.algorithm, block, metadata, pieces, objects)
                data = manifest_fmt.build(m)
                self.storage.write_bytes(cmd.path, data)
                return ManifestWritten(cmd.path, digest(self.algorithm, data))
            if isinstance(cmd, PublishDecision):
                phase, where = "publish", f"step {cmd.epoch}'s decision"
                sent_commit = sent_commit or cmd.outcome == "commit"  # it may land even if the reply is lost
                return publish_decision(self.store, cmd)
            if isinstance(cmd, Notify):
                notify.append(cmd)
                return None
            if isinstance(cmd, CollectGarbage):
                collect.append(cmd)  # after the outcome is known; see below
                return None
            phase, where = "persist", getattr(cmd, "path", where)
            return self._persist(cmd)

        execute = self._observed("coord", execute)
        expected = tuple(expected_items(metadata).items())
        try:
            coordinator, _ = drive(Coordinator(len(results)), Begin(step, attempt, fence, expected), execute)
            for event in arrived:
                coordinator, _ = drive(coordinator, event, execute)
        except Exception as exc:
            log.exception("coordinator failed during step %d", step)
            if not sent_commit:
                self.discard()
            said = failed_at(phase, where, exc)
            raise SaveAbortedError(f"rank 0 (coordinator) failed: {said}", step=step, phase=phase, failures={self.rank: said}) from exc
        if notify and notify[0].outcome != "commit" and not sent_commit:
            self.discard()
        if not notify:
            raise SaveAbortedError(step=step, message=f"save of step {step}: the protocol stopped in phase {coordinator.phase.value}; "
                                   "nothing was committed, the previous committed step is intact")
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

    def discard(self) -> None:
        """Best effort, by the coordinator: remove this attempt's files once every rank is past writing and no
        commit was sent for it (a commit whose reply was lost may still land; GC handles those). The GC
        plan's discard (fito.protocol.gc.plan_discard): its own objects by name, then its directories
        non-recursively, so a newer coordinator's attempt of the same step is never touched."""
        if not self._attempt:
            return
        failed = discard(self.storage, self.step, self._attempt, self._ranks)  # type: ignore[arg-type]
        if failed:
            log.warning("could not remove all of the failed attempt %s (%s); GC after the next commit removes it",
                        attempt_dir(self.step, self._attempt), "; ".join(failed[:3]))

    def _observed(self, who: str, execute: Executor) -> Executor:
        return execute if self.observe is None else recording(execute, who, self.observe)

    def _persist(self, cmd: Command) -> Event:
        if not isinstance(cmd, Persist):
            raise AssertionError(f"unexpected protocol command {cmd!r}")
        self.storage.persist(cmd.path)
        return Persisted(cmd.path)


def _write_object(f: BinaryIO, header: ObjectHeader, plan: SavePlan, planner: SavePlanner, block_bytes: int,
                  algorithm: str, pieces: list[Piece], progress: Callable[[int], None] | None = None) -> int:
    """Header, then each item on a 64-byte boundary, hashed block by block as it is written (a large block
    in a helper thread during its own write: both release the GIL). Returns the size."""
    _write_all(f, memoryview(header.pack()))
    offset = HEADER.size
    resize = getattr(progress, "resize", None)  # a bar sized to this rank's share of the replicas
    planned = planned_bytes(plan)
    if resize is not None:
        resize(planned)
    hasher: ThreadPoolExecutor | None = None
    try:
        for item in plan.items:
            raw = item_bytes(item, planner)
            raw = raw.cast("B") if raw.format != "B" or raw.ndim != 1 else raw
            if resize is not None and item.type == WriteItemType.BYTE_IO:  # a value's size is known only now
                planned += len(raw)
                resize(planned)
            blocks = []
            for start in range(0, max(len(raw), 1), block_bytes):
                block = raw[start:start + block_bytes]
                if len(block) < OVERLAP_BYTES:  # small: a thread hand-off would cost more than the hash
                    blocks.append(block_digest(algorithm, block))
                    _write_all(f, block)
                else:
                    hasher = hasher or ThreadPoolExecutor(1, thread_name_prefix="fito-hash")
                    pending = hasher.submit(block_digest, algorithm, block)
                    _write_all(f, block)
                    blocks.append(pending.result())
                if progress is not None:
                    progress(len(block))
            pieces.append(Piece(header.rank, offset, len(raw), tuple(blocks), header.epoch))
            offset += len(raw)
            pad = padding(offset)
            if pad:
                _write_all(f, memoryview(bytes(pad)))
                offset += pad
    finally:
        if hasher is not None:
            hasher.shutdown()
    return offset


def planned_bytes(plan: SavePlan) -> int:
    """The bytes of the tensors in this rank's plan (a value's size is known once it is serialized)."""
    total = 0
    for item in plan.items:
        if item.tensor_data is not None:
            total += math.prod(item.tensor_data.chunk.sizes) * item.tensor_data.properties.dtype.itemsize
    return total


def _write_all(f: BinaryIO, data: memoryview) -> None:
    while len(data):
        data = data[f.write(data):]


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


def _discard(remove: Callable[[str], None], rel: str) -> None:
    try:
        remove(rel)
    except Exception as exc:  # noqa: BLE001 - the save already failed; say so, do not mask it
        log.warning("could not remove %s of a failed save (%s); GC after the next commit removes it", rel, exc)


def publish_decision(store: DecisionStore, cmd: PublishDecision) -> Event:
    """Publish the coordinator's decision under its fence, retrying while the store is unreachable."""
    decision = Decision(cmd.epoch, cmd.attempt, cmd.outcome, cmd.manifest, cmd.manifest_hash,
                        decision_id=f"{cmd.epoch}:{cmd.attempt}:{cmd.outcome}")
    unreachable: Exception | None = None
    for attempt in range(PUBLISH_TRIES):
        try:
            store.publish(decision, cmd.fence)
            return DecisionPublished(cmd.outcome)
        except StaleFenceError as exc:
            return PublishRejected(str(exc))
        except CoordinationUnavailableError as exc:  # may have landed: the same decision_id is idempotent
            log.warning("decision store unreachable (try %d of %d): %s", attempt + 1, PUBLISH_TRIES, exc)
            unreachable = exc
    return PublishRejected(f"decision store unreachable, outcome unknown until it answers: {unreachable}")
