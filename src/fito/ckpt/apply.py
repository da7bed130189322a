"""Apply a checked restore plan to the caller's objects, all or nothing.

Every check that can run before anything changes runs in `plan_restore` (fito.ckpt.state). What remains is
user code (`load_state_dict` of a scheduler, a data loader, any stateful object) that may still raise. So
`RestorePlan.apply` first snapshots every entry it will touch, then applies them in the state's order; if one
raises, every entry applied so far (and the one that failed, which may be half-loaded) is put back from its
snapshot, and a RestoreFailedError names the entry and the cause.

Memory: the snapshots are a host copy of what the restore touches (module and optimizer state, tensor entries,
stateful `state_dict()`s; value entries cost nothing, the old object is kept). They are held until restore()
returns, so a restore peaks at about the checkpoint's size in verified read buffers plus the same again in
snapshots -- except for the common cases that need none: a plain CPU module is loaded by exchanging bytes
with its read buffers or adopting them, an FSDP2 module by exchanging its local shards' bytes with its read
buffers' (fito.ckpt.exchange), an optimizer that had no state is put back by
clearing it, and one loaded by torch's own load_state_dict (which replaces its state, never writes into it)
by putting the old state objects back. Modules, optimizers and tensors have passed every shape, dtype and
key check by then and are not expected to fail, but they are covered too: a failure elsewhere must not leave
them overwritten."""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from fito.errors import RestoreFailedError
from fito.torch_compat import loads_like_torch_optimizer

Action = Callable[[], None]


@dataclass(frozen=True)
class EntryPlan:
    """One entry of the caller's state: how to apply the checkpoint's data, and how to snapshot it first
    (`backup()` copies the entry as it is now and returns the action that puts that copy back)."""

    name: str
    apply: Action
    backup: Callable[[], Action]


class Applied:
    """Entries a plan has applied, with their snapshots, until the caller keeps them or rolls them back."""

    def __init__(self, where: str, undo: list[tuple[str, Action]]) -> None:
        self.where, self._undo = where, undo

    def rollback(self) -> None:
        """Put every applied entry back, newest first. Raises RestoreFailedError naming any that could not be."""
        failed = []
        while self._undo:
            name, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep putting the others back
                failed.append(f"{name!r} ({type(exc).__name__}: {exc})")
        if failed:
            raise RestoreFailedError(f"{self.where}: could not put back {', '.join(failed)}: those entries may be "
                                     "partly restored; the other entries are as they were")


class RestorePlan:
    """Checked actions for every entry of a state; nothing has been changed yet."""

    def __init__(self, where: str, entries: list[EntryPlan]) -> None:
        self.where, self.entries = where, entries

    def apply(self) -> Applied:
        """Apply every entry, or none: on a failure, roll back and raise RestoreFailedError."""
        snapshots = []
        for e in self.entries:  # all of them before anything changes
            try:
                snapshots.append((e.name, e.backup()))
            except Exception as exc:
                raise RestoreFailedError(f"{self.where}: could not snapshot entry {e.name!r} before loading it "
                                         f"({type(exc).__name__}: {exc}); nothing was changed") from exc
        applied = Applied(self.where, [])
        for entry, undo in zip(self.entries, snapshots):
            applied._undo.append(undo)  # before apply: a load that raises may have changed part of the entry
            try:
                entry.apply()
            except BaseException as exc:
                if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: put back, then let it go on
                    applied.rollback()
                    raise
                try:
                    applied.rollback()
                except RestoreFailedError as worse:
                    raise RestoreFailedError(f"{self.where}: loading entry {entry.name!r} failed with "
                                             f"{type(exc).__name__}: {exc}; then {worse}") from exc
                raise RestoreFailedError(
                    f"{self.where}: loading entry {entry.name!r} failed with {type(exc).__name__}: {exc}; "
                    "every entry was put back, the caller's state is unchanged"
                ) from exc
        return applied


def host_copy(value: Any) -> Any:
    """A deep copy of a state_dict-like value: tensors cloned to host memory (not the device: a snapshot must
    not double GPU memory), numpy arrays copied, containers rebuilt, other leaves deep-copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        out = {k: host_copy(v) for k, v in value.items()}
        if hasattr(value, "_metadata"):  # a module state_dict's per-submodule versions, read by load_state_dict
            out = OrderedDict(out)
            out._metadata = copy.deepcopy(value._metadata)  # type: ignore[attr-defined]
        return out
    if isinstance(value, list):
        return [host_copy(v) for v in value]
    if type(value) is tuple:
        return tuple(host_copy(v) for v in value)
    return copy.deepcopy(value)


def backup_module(module: torch.nn.Module) -> Action:
    # The base class's methods, not the object's: an override that raises must not block putting it back.
    snapshot = host_copy(torch.nn.Module.state_dict(module))
    return lambda: torch.nn.Module.load_state_dict(module, snapshot, strict=True)


def backup_optimizer(opt: torch.optim.Optimizer) -> Action:
    if replaces_on_load(opt):
        # torch's load_state_dict builds a new state and new param groups and never writes into the old ones:
        # keeping the old objects is the snapshot, and putting them back is the undo (no copy of the moments)
        state, groups = opt.state, opt.param_groups
        return lambda: opt.__setstate__({"state": state, "param_groups": groups})
    snapshot = host_copy(torch.optim.Optimizer.state_dict(opt))

    # Each undo runs at most once (Applied pops it), so the optimizer may keep the snapshot's tensors.
    return lambda: torch.optim.Optimizer.load_state_dict(opt, snapshot)  # moves state to the params' devices


def replaces_on_load(opt: torch.optim.Optimizer) -> bool:
    """Whether loading `opt` only replaces its state and param groups: torch's own load_state_dict, with no
    load hooks that could write into the old ones."""
    return loads_like_torch_optimizer(opt)


def backup_tensor(tensor: torch.Tensor) -> Action:
    snapshot = tensor.detach().to("cpu", copy=True)

    def undo() -> None:
        with torch.no_grad():
            tensor.copy_(snapshot)
    return undo


def backup_stateful(obj: Any) -> Action:
    snapshot = host_copy(obj.state_dict())
    return lambda: obj.load_state_dict(snapshot)


def backup_value(state: Any, name: str) -> Action:
    old = state[name]  # a value entry is replaced, never mutated: keeping the old object is the snapshot

    def undo() -> None:
        state[name] = old
    return undo
