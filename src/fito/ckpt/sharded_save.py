"""`Checkpointer.save` on the sharded core: the state's entries become DCP items (fito.ckpt.entries), the
rank-local ones get per-rank names (fito.ckpt.rank_local), and `torch.distributed.checkpoint.save` runs
them through fito's planner (replicas hashed, then written once, balanced over the ranks that hold them)
and fito.dcp.Writer (objects unique to the attempt, READY after persist, coverage, manifest, the decision
under the Checkpointer's fence: the commit point).

`prepare` does everything that must see the live state and returns the commit, which only reads what it was
given. A blocking save captures, hashes the plain tensors and holds the rank-local vote (fito.ckpt.rank_local)
before it commits. A background save stalls only to capture and copy the entries' tensors to host memory
(fito.ckpt.staging): the hashing and the vote then run on that copy, in the background, before the commit. A
rank that failed to capture votes at once, in the caller's thread, so every rank's save fails alike."""
from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.tensor import DTensor

from fito.ckpt import rank_local
from fito.ckpt.entries import capture
from fito.ckpt.memory import gc_paused
from fito.dcp.saving import peer_lost, save_error, tell_coordinator
from fito.dcp.writer import Writer
from fito.errors import FitoError, PeerLostError, SaveAbortedError
from fito.plan.save import SavePlanner
from fito.plan.values import tensor_bytes

if TYPE_CHECKING:
    from fito.ckpt.checkpointer import Checkpointer

log = logging.getLogger("fito")
VALIDATION_ENTRY = "__validation__"
# DCP warns at every save and load without torch.distributed; a single-process Checkpointer is normal use.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def prepare(ck: "Checkpointer", step: int, state: Mapping[str, Any], *, stage: bool,
            rollback: bool = False) -> Callable[[], int]:
    """Capture `state` for step `step` on this rank (collectively: every rank calls it together). The cyclic
    GC pauses while the caller waits (fito.ckpt.memory.gc_paused), never in a background commit."""
    with gc_paused():
        commit = _prepare(ck, step, state, stage=stage, rollback=rollback)
    if stage:
        return commit

    def paused() -> int:
        with gc_paused():
            return commit()
    return paused


def _prepare(ck: "Checkpointer", step: int, state: Mapping[str, Any], *, stage: bool,
             rollback: bool) -> Callable[[], int]:
    internal = {VALIDATION_ENTRY: ck.validation_loss()} if ck.validator is not None else {}
    entries = digests = None
    error: BaseException | None = None
    try:
        if ck.rank == 0:  # the fencing token, before this coordinator's first write (taken once, at the first save)
            token = ck.take_fence()
            if token.startswith("!"):
                ck.refuse_start(step, token[1:])
        entries = capture(state, internal)
        if stage:  # the only stall of a background save: the vote below runs on this copy, in the background
            copy = staged_entries(ck, entries)
            return lambda: _vote(ck, step, copy, None, rollback)()
        digests = _digests(ck, entries)
    except Exception as exc:  # noqa: BLE001 - every rank must hear of it before anyone starts the save
        error = exc
    return _vote(ck, step, entries, error, rollback, digests)


def _digests(ck: "Checkpointer", entries: list) -> list[list[str | None]]:
    # Digests find values that differ between ranks; on one rank there is nothing to compare.
    return [rank_local.leaf_digests(e) if ck.world_size > 1 else [None] * len(e.leaves) for e in entries]


def _vote(ck: "Checkpointer", step: int, entries: list | None, error: BaseException | None, rollback: bool,
          digests: list[list[str | None]] | None = None) -> Callable[[], int]:
    """The rank-local vote (every rank, once per save), then the commit of what it decided."""
    if error is None and digests is None:
        assert entries is not None
        digests = _digests(ck, entries)
    try:
        local = rank_local.decide(ck.transport, entries, digests, error)
    except PeerLostError as exc:  # the agreement step, before anything is written
        raise peer_lost(step, exc, "before it started") from exc
    assert entries is not None and digests is not None
    flat, known = items(entries, digests, local, ck.rank)
    writer = Writer(ck.storage, step, keep=ck.keep, hash=ck.algorithm, store=ck.store if ck.rank == 0 else None,
                    fence=ck.fence if ck.rank == 0 else None, rollback=rollback)  # the token taken above, held for life
    group = getattr(ck.transport, "group", None)
    # The bar's total: what this rank holds; it writes its share of the replicas, so the bar may end early.
    total = sum(local_bytes(v) for v in flat.values() if isinstance(v, torch.Tensor))

    def commit() -> int:
        try:
            with ck.progress_bar(f"save step {step}", total) as advance:
                writer.progress = advance
                dcp.save(flat, storage_writer=writer, planner=SavePlanner(known_digests=known, single_rank=ck.world_size == 1), process_group=group)
        except CheckpointException as exc:
            tell_coordinator(writer, exc)  # rank 0: the machine publishes the abort and discards the attempt
            raise save_error(step, exc) from None
        except FitoError:
            raise
        except Exception as exc:
            if ck.transport.world_size == 1:
                tell_coordinator(writer, exc)
                raise SaveAbortedError(f"save of step {step} aborted: {type(exc).__name__}: {exc}; nothing was "
                                       "committed, the previous committed epoch is intact", step=step,
                                       failures={0: f"{type(exc).__name__}: {exc}"}) from exc
            # a peer died or timed out inside one of DCP's collectives: the transport learns which
            lost = ck.transport.lost_peer(exc, f"DCP's collectives of the save of step {step}", group)  # type: ignore[attr-defined]
            tell_coordinator(writer, lost)
            raise peer_lost(step, lost, "") from exc
        return step
    return commit


def items(entries: list, digests: list[list[str | None]], local: set[str], rank: int
          ) -> tuple[dict[str, Any], dict[str, str]]:
    """The flat DCP state ({item name: tensor or JSON text}) and the digests already known of its tensors."""
    flat: dict[str, Any] = {}
    known: dict[str, str] = {}
    for e, ds in zip(entries, digests):
        owner = rank if e.name in local else None
        flat[rank_local.doc_key(e.name, owner)], tensors = e.packed(ds)
        for path, t, d in tensors:
            key = rank_local.tensor_key(e.name, owner, path)
            flat[key] = t
            if d is not None:
                known[key] = d
    return flat, known


def staged_entries(ck: "Checkpointer", entries: list) -> list:
    """The entries with every tensor copied into one reused host buffer (the only stall of a background save);
    DTensors are rebuilt around their staged local shard, with the same mesh, placements and global shape. The
    documents are already the capture's own (JSON values, no live references)."""
    leaves = [t for e in entries for t in e.leaves]
    views = ck.stage([(str(i), _host_or_device(t)) for i, t in enumerate(leaves)])
    copies = iter(_staged_copy(t, view) for t, (_, view) in zip(leaves, views))
    return [dataclasses.replace(e, leaves=[next(copies) for _ in e.leaves]) for e in entries]


def _staged_copy(t: torch.Tensor, view: memoryview) -> torch.Tensor:
    local = t.to_local() if isinstance(t, DTensor) else t
    copy = (torch.frombuffer(view, dtype=torch.uint8) if len(view) else torch.empty(0, dtype=torch.uint8))
    copy = copy.view(local.dtype).reshape(local.shape) if local.numel() else torch.empty(local.shape, dtype=local.dtype)
    return (DTensor.from_local(copy, t.device_mesh, t.placements, run_check=False, shape=t.shape, stride=t.stride())
            if isinstance(t, DTensor) else copy)


def _host_or_device(t: torch.Tensor) -> memoryview | torch.Tensor:
    """What the staging buffer copies from: a host tensor's bytes, or (this rank's part of) a device tensor
    itself, which it copies to host memory once, straight into its slice (fito.ckpt.staging)."""
    local = t.to_local() if isinstance(t, DTensor) else t
    return tensor_bytes(t) if local.device.type == "cpu" else local


def local_bytes(t: torch.Tensor) -> int:
    """Bytes of this rank's part of a tensor (a DTensor's local shard)."""
    local = t.to_local() if isinstance(t, DTensor) else t
    return local.numel() * local.element_size()
