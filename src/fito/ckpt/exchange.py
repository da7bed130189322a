"""Apply a module's verified tensors in place, by taking over its targets' storage or trading bytes with them.

A restore must be able to put every entry back if anything fails (fito.ckpt.apply). For a module the usual
way is a host copy of all its tensors taken before loading: as much new memory as the model, and for a model
of a few GB about as long to take as reading it. The restore's own targets, though, are private buffers that
are dropped once it returns. Two ways use them instead:
- adopt: a parameter or buffer whose storage no other tensor shares (no view or alias anywhere) takes the
  verified target as its storage (`tensor.data = target`: the same Parameter object, so the optimizer and
  every holder of it see the new values). Nothing but `data_ptr()` tells this from load_state_dict's copy,
  and it copies nothing: the old storage is kept until the restore returns; undoing is setting it back.
- exchange: any other tensor (a view into a flat buffer, a storage somebody holds a view of, shared or
  pinned memory) keeps its storage and trades bytes with its target, a few MiB at a time through one
  reused scratch buffer; the target is left holding the old values, and undoing is copying them back.

Only where either is exactly what `load_state_dict` would do: every submodule uses nn.Module's own
loading (no overrides, no load hooks, no extra state), every tensor is a plain, contiguous CPU tensor with
its own storage (no tied or aliased weights, no DTensors) of the target's dtype and shape.

An FSDP2 module (`fully_shard`, sharded: every parameter a DTensor) trades bytes between each parameter's
local shard and its target's (`sharded_exchangeable`): its only load hooks are FSDP2's own, which make sure
the parameters are sharded (they are) and re-register a local shard that load_state_dict replaced (none is:
the bytes change in place, as DCP's own load does). That takes the place of a host snapshot of the module:
no new memory to first-touch, and the targets hold the old values for the undo.
Anything else is loaded by `set_model_state_dict` after a host snapshot, as before."""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.tensor import DTensor

from fito.torch_compat import loads_like_nn_module, storage_use_count

CHUNK_BYTES = 16 << 20  # bytes per step through the one scratch buffer


def exchangeable(module: torch.nn.Module, targets: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(live tensor, target) pairs if `module` can be loaded from `targets` ({FQN: tensor}) by exchange; the
    live tensors are the module's own parameter and buffer objects (not aliases), so they can be adopted."""
    if type(module).load_state_dict is not torch.nn.Module.load_state_dict or not isinstance(targets, Mapping):
        return None
    if not all(loads_like_nn_module(m) for m in module.modules()):
        return None
    own = (*module.parameters(), *module.buffers())
    if not all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in own):
        return None  # a DTensor (tensor parallel without FSDP) or other subclass holds no storage of its own
    live = get_model_state_dict(module)  # {FQN: a detached alias of each parameter and persistent buffer}
    if set(live) != set(targets):
        return None
    owned = {t.untyped_storage().data_ptr(): t for t in own}
    pairs, storages = [], set()
    for key, tensor in live.items():
        target = targets[key]
        if not _swappable(tensor, target):
            return None
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages:
            return None  # tied or aliased: load_state_dict's copy order would matter
        storages.add(storage)
        pairs.append((owned.get(storage, tensor), target))
    return pairs


def sharded_exchangeable(module: torch.nn.Module, targets: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(live local shard, target local shard) pairs if `module` is an FSDP2 module in its sharded state whose
    every parameter is a DTensor laid out exactly as its target (mesh, placements, shape, dtype), on the CPU;
    its plain buffers pair as in `exchangeable`. None where anything differs: loaded after a snapshot."""
    if type(module).load_state_dict is not torch.nn.Module.load_state_dict or not isinstance(targets, Mapping):
        return None
    params = list(module.parameters())
    if not params or not all(type(p) is DTensor or type(getattr(p, "data", None)) is DTensor for p in params):
        return None  # not sharded (FSDP2 between forward and backward holds plain unsharded tensors)
    if not all(_loads_like_fsdp2(m) for m in module.modules()):
        return None
    live = get_model_state_dict(module)
    if set(live) != set(targets):
        return None
    pairs, storages = [], set()
    for key, tensor in live.items():
        target = targets[key]
        if isinstance(tensor, DTensor) or isinstance(target, DTensor):
            if not (isinstance(tensor, DTensor) and isinstance(target, DTensor)) or tensor.device_mesh != target.device_mesh \
                    or tensor.placements != target.placements:
                return None
            if tensor.dtype != target.dtype or tensor.shape != target.shape:
                return None
            tensor, target = tensor.to_local(), target.to_local()
        if not _swappable(tensor, target):
            return None
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in storages:
            return None  # tied or aliased
        storages.add(storage)
        pairs.append((tensor, target))
    return pairs


def _swappable(tensor: torch.Tensor, target: torch.Tensor) -> bool:
    """Both plain, contiguous CPU tensors of one dtype and shape: their bytes can trade places."""
    return (all(type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu" and t.is_contiguous()
                for t in (tensor, target))
            and tensor.dtype == target.dtype and tensor.shape == target.shape)


def _loads_like_fsdp2(m: torch.nn.Module) -> bool:
    """nn.Module's own loading, with no load hooks but the ones fully_shard registers (see the module note)."""
    cls: Any = type(m)
    base = torch.nn.Module
    if (cls._load_from_state_dict is not base._load_from_state_dict or cls.set_extra_state is not base.set_extra_state
            or cls.get_extra_state is not base.get_extra_state):
        return False
    try:
        pre = [getattr(getattr(h, "hook", h), "__qualname__", "") for h in m._load_state_dict_pre_hooks.values()]
        post = [getattr(h, "__qualname__", "") for h in m._load_state_dict_post_hooks.values()]
    except AttributeError:
        return False
    return all(q == "FSDPParamGroup._register_state_dict_hooks.<locals>.to_sharded_hook" for q in pre) and \
        all(q == "FSDPParam.__init__.<locals>.<lambda>" for q in post)


def adoptable(live: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether `live` can take `target`'s storage with nobody able to tell but by data_ptr(): no other tensor
    holds either storage, each spans all of its storage, and `live` is in neither shared nor pinned memory."""
    if live.is_shared() or live.is_pinned():
        return False
    return all(t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()
               and storage_use_count(t) == 0 for t in (live, target))  # None (torch cannot tell): never adopt


class Exchange:
    """`run()` loads the live tensors from the targets (adopting each target it can, trading bytes with the
    rest, which then hold the old values); `undo()` puts back whatever part of that ran, even if `run()` was
    interrupted between two steps. `adopt=False`: trade bytes only."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], *, adopt: bool = True) -> None:
        self._given, self._adopt = pairs, adopt
        self._adopted: list[tuple[torch.Tensor, torch.Tensor]] = []  # (live, an alias of its old storage)
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self._scratch = np.empty(0, dtype=np.uint8)
        self._done = (0, 0)  # pairs before [0] are exchanged whole, pair [0] up to byte [1]
        self._inflight: tuple[int, int, int] | None = None  # (pair, lo, hi): its old bytes are in the scratch

    def run(self) -> None:
        for _ in self.steps():
            pass

    def steps(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[None]:
        """The exchange, pausing after each copy: an interrupt can only land between two copies, and a test
        can stop at each of those points and `undo()`."""
        traded = []
        for live, target in self._given:
            if self._adopt and adoptable(live, target):  # checked here: a view taken since would forbid it
                self._adopted.append((live, live.data))  # first: undoing a swap that did not happen is harmless
                live.data = target
                yield
            else:
                traded.append((live, target))
        self._pairs = [(_bytes(live), _bytes(target)) for live, target in traded]
        self._scratch = np.empty(min(chunk_bytes, max((len(a) for a, _ in self._pairs), default=0)), dtype=np.uint8)
        for i, (live, target) in enumerate(self._pairs):
            for lo in range(0, len(live), chunk_bytes):
                hi = min(lo + chunk_bytes, len(live))
                old = self._scratch[:hi - lo]
                np.copyto(old, live[lo:hi])
                self._inflight = (i, lo, hi)
                yield
                np.copyto(live[lo:hi], target[lo:hi])
                yield
                np.copyto(target[lo:hi], old)
                yield
                self._done, self._inflight = (i, hi), None
            self._done = (i + 1, 0)

    def undo(self) -> None:
        if self._inflight is not None:
            i, lo, hi = self._inflight
            np.copyto(self._pairs[i][0][lo:hi], self._scratch[:hi - lo])
            self._inflight = None
        whole, part = self._done
        for i, (live, target) in enumerate(self._pairs[:whole + 1]):
            end = len(live) if i < whole else part
            np.copyto(live[:end], target[:end])
        self._done = (0, 0)
        for live, old in reversed(self._adopted):
            live.data = old
        self._adopted = []


def _bytes(t: torch.Tensor) -> np.ndarray:
    """The tensor's bytes as a writable numpy view: numpy's copy is one plain memcpy, where torch's small
    copies each start its thread pool (slow on a busy machine); a detached view also keeps autograd out."""
    flat = t.detach().reshape(-1)  # contiguous: a view
    return flat.view(torch.uint8).numpy() if flat.numel() else np.empty(0, dtype=np.uint8)
