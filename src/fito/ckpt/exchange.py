"""Apply a module's verified tensors by exchanging bytes with its parameters and buffers, in place.

A restore must be able to put every entry back if anything fails (fito.ckpt.apply). For a module the usual
way is a host copy of all its tensors taken before loading: as much new memory as the model, and for a model
of a few GB about as long to take as reading it. The restore's own targets, though, are private buffers that
are dropped once it returns. Exchanging their bytes with the live tensors, a few MiB at a time through one
reused scratch buffer, loads the module and leaves its old values in the targets: the snapshot costs no new
memory, and undoing is copying them back.

Only where the exchange is exactly what `load_state_dict` would do: every submodule uses nn.Module's own
loading (no overrides, no load hooks, no extra state), every tensor is a plain, contiguous CPU tensor with
its own storage (no tied or aliased weights, no DTensors) of the target's dtype and shape. Anything else is
loaded by `set_model_state_dict` after a host snapshot, as before."""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict

CHUNK_BYTES = 16 << 20  # bytes per step through the one scratch buffer


def exchangeable(module: torch.nn.Module, targets: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(live tensor, target) pairs if `module` can be loaded from `targets` ({FQN: tensor}) by exchange."""
    if type(module).load_state_dict is not torch.nn.Module.load_state_dict or not isinstance(targets, Mapping):
        return None
    for m in module.modules():
        cls = type(m)
        if (cls._load_from_state_dict is not torch.nn.Module._load_from_state_dict
                or cls.set_extra_state is not torch.nn.Module.set_extra_state
                or cls.get_extra_state is not torch.nn.Module.get_extra_state
                or m._load_state_dict_pre_hooks or m._load_state_dict_post_hooks):
            return None
    live = get_model_state_dict(module)  # {FQN: a detached alias of each parameter and persistent buffer}
    if set(live) != set(targets):
        return None
    pairs, storages = [], set()
    for key, tensor in live.items():
        target = targets[key]
        if not all(type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu" and t.is_contiguous()
                   for t in (tensor, target)):
            return None
        if tensor.dtype != target.dtype or tensor.shape != target.shape:
            return None
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages:
            return None  # tied or aliased: load_state_dict's copy order would matter
        storages.add(storage)
        pairs.append((tensor, target))
    return pairs


class Exchange:
    """`run()` loads the live tensors from the targets and leaves their old bytes in the targets; `undo()`
    puts back whatever part of that ran, even if `run()` was interrupted between two steps."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._pairs = [(_bytes(live), _bytes(target)) for live, target in pairs]
        self._scratch = np.empty(0, dtype=np.uint8)
        self._done = (0, 0)  # pairs before [0] are exchanged whole, pair [0] up to byte [1]
        self._inflight: tuple[int, int, int] | None = None  # (pair, lo, hi): its old bytes are in the scratch

    def run(self) -> None:
        for _ in self.steps():
            pass

    def steps(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[None]:
        """The exchange, pausing after each copy: an interrupt can only land between two copies, and a test
        can stop at each of those points and `undo()`."""
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


def _bytes(t: torch.Tensor) -> np.ndarray:
    """The tensor's bytes as a writable numpy view: numpy's copy is one plain memcpy, where torch's small
    copies each start its thread pool (slow on a busy machine); a detached view also keeps autograd out."""
    flat = t.detach().reshape(-1)  # contiguous: a view
    return flat.view(torch.uint8).numpy() if flat.numel() else np.empty(0, dtype=np.uint8)
