"""fito's save planner for torch.distributed.checkpoint: DCP's planning (flattening, DTensor chunks,
replica deduplication) with three changes.

- Replicas are hashed before deduplication. DCP matches replicas by name only and keeps one copy: two
  ranks holding different values under one name would silently lose one. Here every rank hashes each item
  another rank may also hold, and the coordinator refuses the save, naming the key, if the copies differ.
- Non-tensor values are JSON (fito's tree codec), never torch.save.
- Plan caching is off: a cached plan would carry a previous save's attempt id."""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any, Mapping

from torch.distributed.checkpoint import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, WriteItem, WriteItemType
from torch.distributed.tensor import DTensor

from fito.errors import StateMismatchError
from fito.format.hashing import DEFAULT_ALGORITHM, digest
from fito.plan.metadata import key_of
from fito.plan.tree import check_depth
from fito.plan.values import encode_value, tensor_bytes

ReplicaKey = tuple[str, tuple[int, ...] | None]


@dataclass(frozen=True)
class LocalPlanData:
    """What a rank's local plan carries to the coordinator: the digest of every item it may share."""

    replica_digests: dict[ReplicaKey, str]


class SavePlanner(DefaultSavePlanner):
    """`known_digests`: {fqn: digest} of whole plain tensors the caller has already hashed with the default
    algorithm over the same bytes (fito.Checkpointer does, to find rank-local entries; a pack of small tensors,
    fito.ckpt.packs, it names by the digest of its members' digests: equal exactly when the bytes are); not
    hashed again.
    `single_rank=True` (the caller knows the save runs on one rank): nothing can be a replica, so nothing is
    hashed for the replica check."""

    def __init__(self, *, flatten_sharded_tensors: bool = True, enable_plan_caching: bool = False,
                 known_digests: Mapping[str, str] | None = None, single_rank: bool = False) -> None:
        if enable_plan_caching:
            raise ValueError("fito.dcp.SavePlanner: plan caching would reuse a previous save's attempt id; leave it off")
        super().__init__(flatten_state_dict=True, flatten_sharded_tensors=flatten_sharded_tensors,
                         dedup_save_to_lowest_rank=False, enable_plan_caching=False)
        self.known_digests = dict(known_digests or {})
        self.single_rank = single_rank

    def set_up_planner(self, state_dict: Any, storage_meta: StorageMeta | None = None,
                       is_coordinator: bool = False) -> None:
        # DCP's own parameters by name: DCP warns at every save about a planner whose signature lacks them.
        # fito's state checks run before DCP walks the state (its flattening recurses: a bare RecursionError).
        check_depth(state_dict, "")
        super().set_up_planner(state_dict, storage_meta, is_coordinator)

    def transform_object(self, write_item: WriteItem, object: Any) -> Any:  # noqa: A002 - DCP's name
        if write_item.type == WriteItemType.BYTE_IO:
            return io.BytesIO(encode_value(object, write_item.index.fqn))
        return object

    def create_local_plan(self) -> SavePlan:
        plan = super().create_local_plan()
        digests = {}
        for item in ([] if self.single_rank else plan.items):
            if self._may_be_replicated(item):
                known = self.known_digests.get(item.index.fqn) if item.type == WriteItemType.TENSOR else None
                digests[key_of(item.index)] = known or self._digest(item)
        return dataclasses.replace(plan, storage_data=LocalPlanData(digests))

    def _may_be_replicated(self, item: WriteItem) -> bool:
        return may_be_replicated(item, self.state_dict)

    def _digest(self, item: WriteItem) -> str:
        data = self.resolve_data(item)
        raw = data.getbuffer() if isinstance(data, io.BytesIO) else tensor_bytes(data)
        return digest(DEFAULT_ALGORITHM, raw)

    def create_global_plan(self, all_plans: list[SavePlan]) -> tuple[list[SavePlan], Metadata]:
        # The check runs before DCP's deduplication keeps one copy of each replica. Deduplication itself is
        # DCP's (public entry point, no private import): with dedup_save_to_lowest_rank=False each replicated
        # item goes to the rank with the least planned so far (tests/test_torch_compat.py pins both).
        check_replicas(all_plans)
        return super().create_global_plan(all_plans)


def may_be_replicated(item: WriteItem, state_dict: Mapping[str, Any]) -> bool:
    """Whether another rank may hold `item` under the same name (DCP would keep one copy)."""
    if item.type != WriteItemType.SHARD:
        return True  # plain tensors and values: every rank plans them, DCP keeps one by name
    obj = state_dict.get(item.index.fqn)
    if isinstance(obj, DTensor):  # a shard is replicated along any mesh dimension it is not split over
        mesh = obj.device_mesh
        return any(p.is_replicate() and mesh.size(dim) > 1 for dim, p in enumerate(obj.placements))
    return False


def differing_replicas(digests: list[dict[ReplicaKey, str]]) -> list[str]:
    """The keys whose digests differ between ranks (digests[r]: rank r's), described for an error."""
    seen: dict[ReplicaKey, tuple[int, str]] = {}
    differ: list[str] = []
    for rank, mine in enumerate(digests):
        for key, value in mine.items():
            first = seen.setdefault(key, (rank, value))
            if first[1] != value:
                differ.append(f"{key[0]!r} (rank {first[0]} has {first[1]}, rank {rank} has {value})")
    return differ


def replicas_differ_message(differ: list[str], when: str) -> str:
    return (f"{len(differ)} value(s) differ between ranks under one name: {'; '.join(differ[:5])}. DCP would keep "
            f"one copy and drop the others; {when}. Make the ranks agree (e.g. broadcast the value) or save "
            "per-rank values under per-rank names (e.g. f'rng.rank{rank}')")


def check_replicas(all_plans: list[SavePlan]) -> None:
    """Refuse to deduplicate replicas whose bytes differ (on the coordinator, before anything is written)."""
    for rank, plan in enumerate(all_plans):
        if not isinstance(plan.storage_data, LocalPlanData):
            raise StateMismatchError(
                f"rank {rank} planned its save without fito.dcp.SavePlanner; pass planner=fito.dcp.SavePlanner() "
                "on every rank"
            )
    differ = differing_replicas([p.storage_data.replica_digests for p in all_plans])
    if differ:
        raise StateMismatchError(replicas_differ_message(differ, "nothing was written"))


def item_bytes(item: WriteItem, planner: Any) -> memoryview:
    """What is stored for an item: a tensor's bytes, or a value as JSON. fito's planner encodes values itself;
    DCP's own would torch.save (pickle) them, so they are encoded here from the planner's object instead."""
    if item.type != WriteItemType.BYTE_IO:
        return tensor_bytes(planner.resolve_data(item))  # lazily: DCP may allocate (a device-to-host copy) here
    if isinstance(planner, SavePlanner):
        return memoryview(planner.resolve_data(item).getbuffer())
    lookup = getattr(planner, "lookup_object", None)
    if lookup is None:
        raise StateMismatchError(
            f"{item.index.fqn}: fito.dcp.Writer stores values as JSON (never pickle) and {type(planner).__name__} "
            "cannot hand over the value itself; use DCP's DefaultSavePlanner (or a subclass) or fito.dcp.SavePlanner()")
    return memoryview(encode_value(lookup(item.index), item.index.fqn))


def replica_digests(items: list[WriteItem], planner: Any) -> dict[Any, str]:
    """The digest of each item of this rank's plan that another rank may also hold (fito's planner does this
    while planning; with DCP's, every holder hashes its copy here and the coordinator compares)."""
    state = getattr(planner, "state_dict", {})
    return {key_of(item.index): digest(DEFAULT_ALGORITHM, item_bytes(item, planner))
            for item in items if may_be_replicated(item, state)}
