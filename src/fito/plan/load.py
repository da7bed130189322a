"""fito's load planner for torch.distributed.checkpoint: DCP's read planning (chunk overlap, so any world
size or mesh can load any other's checkpoint) made strict, and JSON for non-tensor values.

Strict both ways: a key of the checkpoint the target lacks, or a key of the target the checkpoint lacks, is
an error (stock DCP skips the first silently). Global shapes and dtypes must match (stock DCP casts), and
every element of every target tensor must be covered by the checkpoint's chunks. Nothing here touches the
target: values are applied by the returned actions, which fito.dcp.Reader runs only after every rank verified
every byte it reads."""
from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Any, Callable

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, ChunkStorageMetadata, Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem
from torch.distributed.tensor import DTensor

from fito.errors import StateMismatchError, UnsafeCheckpointError
from fito.plan.values import decode_value

try:  # DCP's own description of a target's chunks (private; local_chunks falls back to the same rules)
    from torch.distributed.checkpoint.planner_helpers import _create_chunk_list
except ImportError:  # pragma: no cover - another torch
    _create_chunk_list = None

Action = Callable[[], None]
log = logging.getLogger("fito")


class LoadPlanMark:
    """Carried in a local load plan so the reader can tell its planner is this one."""


LOAD_MARK = LoadPlanMark()


class LoadPlanner(DefaultLoadPlanner):
    """`skip`: checkpoint keys this rank deliberately leaves unread (fito.Checkpointer passes the keys other
    ranks restore, e.g. their rank-local entries, and checks those entries itself); every other key is strict.
    `strict=False`: a partial load -- keys only the checkpoint has are left unread, keys only the target has keep
    their values -- listed after the load in `missing_keys` and `unexpected_keys` (flattened FQNs, as in
    `nn.Module.load_state_dict`'s result) and in a warning on the "fito" logger. Keys both hold stay strict."""

    def __init__(self, *, flatten_sharded_tensors: bool = True, skip: Collection[str] = (), strict: bool = True) -> None:
        super().__init__(flatten_state_dict=True, flatten_sharded_tensors=flatten_sharded_tensors,
                         allow_partial_load=not strict)
        self.skip, self.strict = frozenset(skip), strict
        self.missing_keys: list[str] = []
        self.unexpected_keys: list[str] = []

    def create_local_plan(self) -> LoadPlan:
        assert self.metadata is not None
        self.missing_keys, self.unexpected_keys = check_keys(self.state_dict, self.metadata, self.skip, strict=self.strict)
        if self.missing_keys or self.unexpected_keys:
            log.warning("partial load (strict=False): missing in the checkpoint, kept as they were: %s; in the "
                        "checkpoint, not loaded: %s", _few(set(self.missing_keys)), _few(set(self.unexpected_keys)))
        plan = super().create_local_plan()
        check_cover({k: v for k, v in self.state_dict.items() if k not in set(self.missing_keys)}, plan.items)
        return dataclasses.replace(plan, storage_data=LOAD_MARK)

    def prepare_value(self, read_item: ReadItem, raw: bytes | memoryview, where: str) -> Action:
        """Decode a verified value and find where it goes; the returned action puts it there."""
        fqn = read_item.dest_index.fqn
        value = decode_value(raw, f"{where}: {fqn}", read_item.storage_index.fqn)
        container, key = _slot(self.original_state_dict, self.mappings[fqn], fqn)

        def apply() -> None:
            container[key] = value
        return apply

    def load_bytes(self, read_item: ReadItem, value: Any) -> None:
        self.prepare_value(read_item, value.getvalue(), "checkpoint")()


def value_action(planner: Any, read_item: ReadItem, raw: bytes | memoryview, where: str) -> Action:
    """For any DCP load planner: decode a verified value (JSON; DCP's own planner would torch.load it) and
    find where it goes in the planner's target, as DCP's DefaultLoadPlanner.load_bytes puts it."""
    if isinstance(planner, LoadPlanner):
        return planner.prepare_value(read_item, raw, where)
    fqn = read_item.dest_index.fqn
    value = decode_value(raw, f"{where}: {fqn}")
    if getattr(planner, "flatten_state_dict", False) and fqn in getattr(planner, "mappings", {}):
        container, key = _slot(planner.original_state_dict, planner.mappings[fqn], fqn)
    elif isinstance(getattr(planner, "state_dict", None), dict):
        container, key = planner.state_dict, fqn
    else:
        raise StateMismatchError(
            f"{fqn}: fito.dcp.Reader puts values back itself (it never unpickles) and {type(planner).__name__} has no "
            "state dict to put them in; use DCP's DefaultLoadPlanner (or a subclass) or fito.dcp.LoadPlanner()")

    def apply() -> None:
        container[key] = value
    return apply


def check_keys(state: Mapping[str, Any], metadata: Metadata, skip: Collection[str] = (), *,
               strict: bool = True) -> tuple[list[str], list[str]]:
    """(keys of the target the checkpoint lacks, keys of the checkpoint the target lacks): an error if `strict`
    and either is not empty; keys both hold must fit either way."""
    saved, target = set(metadata.state_dict_metadata) - set(skip), set(state)
    problems = []
    if saved - target and strict:
        problems.append(f"in the checkpoint but not in the target: {_few(saved - target)}")
    if target - saved and strict:
        problems.append(f"in the target but not in the checkpoint: {_few(target - saved)}")
    for fqn in sorted(saved & target):
        md, obj = metadata.state_dict_metadata[fqn], state[fqn]
        if isinstance(md, BytesStorageMetadata) and isinstance(obj, torch.Tensor):
            problems.append(f"{fqn}: a value in the checkpoint, a tensor in the target")
        elif isinstance(md, TensorStorageMetadata):
            if not isinstance(obj, torch.Tensor):
                problems.append(f"{fqn}: a tensor in the checkpoint, a {type(obj).__name__} in the target")
            elif tuple(md.size) != tuple(obj.size()) or md.properties.dtype != obj.dtype:
                problems.append(f"{fqn}: checkpoint {_spec(md.properties.dtype, md.size)}, target {_spec(obj.dtype, obj.size())}")
    if problems:
        hint = ("; to load only the keys both hold, pass planner=fito.dcp.LoadPlanner(strict=False) (what was left out "
                "is listed), or skip=[keys] to leave named checkpoint keys unread") if strict else ""
        raise StateMismatchError(f"the checkpoint does not fit the target: {'; '.join(problems[:8])}{hint}")
    return sorted(target - saved), sorted(saved - target)


def local_chunks(obj: torch.Tensor) -> list[ChunkStorageMetadata]:
    """The boxes of the global tensor this rank's target holds, as DCP's own planning sees them: a DTensor's
    or any object's `__create_chunk_list__`, a ShardedTensor's local shards, or a plain tensor whole."""
    if _create_chunk_list is not None:
        return _create_chunk_list(obj)
    if hasattr(obj, "__create_chunk_list__"):  # a torch without the private helper: the same three cases
        return obj.__create_chunk_list__()
    if isinstance(obj, ShardedTensor):
        return [ChunkStorageMetadata(torch.Size(s.metadata.shard_offsets), torch.Size(s.metadata.shard_sizes))
                for s in obj.local_shards()]
    return [ChunkStorageMetadata(torch.Size([0] * obj.dim()), obj.size())]


def check_cover(state: Mapping[str, Any], items: list[ReadItem], only: Collection[str] | None = None) -> None:
    """Every element of this rank's part of every target tensor (of `only`'s keys, if given) is read exactly
    once."""
    read: dict[str, int] = defaultdict(int)
    for item in items:
        read[item.dest_index.fqn] += math.prod(item.lengths)
    for fqn, obj in state.items():
        if not isinstance(obj, torch.Tensor) or (only is not None and fqn not in only):
            continue
        if isinstance(obj, DTensor) and obj.device_mesh.get_coordinate() is None:
            continue  # this rank is not on the tensor's mesh
        local = sum(math.prod(c.sizes) for c in local_chunks(obj))
        if read[fqn] != local:
            raise UnsafeCheckpointError(
                path="checkpoint metadata", unit=fqn, expected=f"chunks covering the {local} elements this rank holds",
                found=f"{read[fqn]} elements", hint="the checkpoint's chunks overlap or leave gaps; nothing was restored",
            )


def _slot(root: Any, path: tuple[Any, ...], fqn: str) -> tuple[Any, Any]:
    """The container and key of `path` in the target, matching DCP's string keys to the target's own keys
    (DCP turns int dict keys into strings; fito puts values back under the key the target has)."""
    container = root
    for depth, part in enumerate(path):
        if isinstance(container, Mapping):
            key = part if part in container else next((k for k in container if str(k) == str(part)), None)
            if key is None:
                break
        elif isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container):
            key = part
        else:
            break
        if depth == len(path) - 1:
            return container, key
        container = container[key]
    raise StateMismatchError(f"{fqn}: the target has no place for this value (path {list(path)})")


def _few(keys: set[str]) -> str:
    ordered = sorted(keys)
    more = f" and {len(ordered) - 5} more" if len(ordered) > 5 else ""
    return ", ".join(repr(k) for k in ordered[:5]) + more


def _spec(dtype: torch.dtype, size: Any) -> str:
    return f"{str(dtype).removeprefix('torch.')}{list(size)}"
