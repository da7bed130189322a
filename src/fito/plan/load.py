"""fito's load planner for torch.distributed.checkpoint: DCP's read planning (chunk overlap, so any world
size or mesh can load any other's checkpoint) made strict, and JSON for non-tensor values.

Strict both ways: a key of the checkpoint the target lacks, or a key of the target the checkpoint lacks, is
an error (stock DCP skips the first silently). Global shapes and dtypes must match (stock DCP casts), and
every element of every target tensor must be covered by the checkpoint's chunks. Nothing here touches the
target: values are applied by the returned actions, which fito.dcp.Reader runs only after every rank verified
every byte it reads."""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Any, Callable

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem
from torch.distributed.tensor import DTensor

from fito.errors import StateMismatchError, UnsafeCheckpointError
from fito.plan.values import decode_value

Action = Callable[[], None]


class LoadPlanMark:
    """Carried in a local load plan so the reader can tell its planner is this one."""


LOAD_MARK = LoadPlanMark()


class LoadPlanner(DefaultLoadPlanner):
    """`skip`: checkpoint keys this rank deliberately leaves unread (fito.Checkpointer passes the keys other
    ranks restore, e.g. their rank-local entries, and checks those entries itself); every other key is strict."""

    def __init__(self, *, flatten_sharded_tensors: bool = True, skip: Collection[str] = ()) -> None:
        super().__init__(flatten_state_dict=True, flatten_sharded_tensors=flatten_sharded_tensors, allow_partial_load=False)
        self.skip = frozenset(skip)

    def create_local_plan(self) -> LoadPlan:
        assert self.metadata is not None
        check_keys(self.state_dict, self.metadata, self.skip)
        plan = super().create_local_plan()
        check_cover(self.state_dict, plan.items)
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


def check_keys(state: Mapping[str, Any], metadata: Metadata, skip: Collection[str] = ()) -> None:
    saved, target = set(metadata.state_dict_metadata) - set(skip), set(state)
    problems = []
    if saved - target:
        problems.append(f"in the checkpoint but not in the target: {_few(saved - target)}")
    if target - saved:
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
        raise StateMismatchError(
            "the checkpoint does not fit the target (fito loads strictly; load a subset by passing a state with "
            f"only those keys, and the checkpoint must hold exactly them): {'; '.join(problems[:8])}"
        )


def check_cover(state: Mapping[str, Any], items: list[ReadItem]) -> None:
    """Every element of this rank's part of every target tensor is read exactly once."""
    read: dict[str, int] = defaultdict(int)
    for item in items:
        read[item.dest_index.fqn] += math.prod(item.lengths)
    for fqn, obj in state.items():
        if not isinstance(obj, torch.Tensor):
            continue
        if isinstance(obj, DTensor):
            if obj.device_mesh.get_coordinate() is None:
                continue  # this rank is not on the tensor's mesh
            local = obj.to_local().numel()
        else:
            local = obj.numel()
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
