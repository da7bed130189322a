"""What a training state is made of, and how each part is captured and put back.

A state is a mapping of names to: `nn.Module`, `Optimizer`, anything with `state_dict()`/`load_state_dict()`
(LR schedulers, GradScaler, `RNGState`, `DataPosition`), tensors (restored in place), or JSON-like values
(restored by replacing the mapping's entry). Restoring is two-phase: `plan_restore` checks that everything
fits (keys, shapes, dtypes, classes, parameter order) and returns a plan; nothing touches the caller's objects
until every check has passed, and the plan applies all entries or none (fito.ckpt.apply)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Collection, Mapping, MutableMapping

import numpy as np
import torch

from fito.ckpt.apply import (
    EntryPlan, RestorePlan, backup_module, backup_optimizer, backup_stateful, backup_tensor, backup_value,
)
from fito.ckpt.optim_state import check_against_current, check_saved_params, check_state_dict, describe_params, param_names
from fito.plan.tree import MAX_DEPTH
from fito.errors import StateMismatchError, UnsafeCheckpointError

ENTRY_KINDS = ("module", "optimizer", "stateful", "tensor", "value")


def kind_of(obj: Any) -> str:
    if isinstance(obj, torch.nn.Module):
        return "module"
    if isinstance(obj, torch.optim.Optimizer):
        return "optimizer"
    if isinstance(obj, torch.Tensor):
        return "tensor"
    if callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)):
        return "stateful"
    return "value"


def class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def capture(state: Mapping[str, Any]) -> dict[str, Any]:
    """{name: {"kind": ..., "data": plain state, ...}} — tensors still alias the live objects. Optimizers and
    stateful objects also record their class; optimizers their parameters' names, shapes and dtypes."""
    out = {}
    names: dict[int, str] | None = None
    for name, obj in state.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise StateMismatchError(f"state key {name!r}: use non-empty strings without '/'")
        kind = kind_of(obj)
        entry: dict[str, Any] = {"kind": kind, "data": obj.state_dict() if kind in ("module", "optimizer", "stateful") else obj}
        if kind in ("optimizer", "stateful"):
            entry["class"] = class_name(obj)
        if kind == "optimizer":
            names = param_names(state) if names is None else names
            entry["params"] = describe_params(obj, names)
            check_state_dict(entry["data"], [len(p[1]) for p in entry["params"]], name, saving=True)
        out[name] = entry
    return out


def plan_restore(state: MutableMapping[str, Any], saved: Mapping[str, Any], *, where: str,
                 only: Collection[str] | None = None) -> RestorePlan:
    """Check every entry of `state` (or those named in `only`) against `saved`; return the plan that applies
    them (nothing run yet)."""
    if not isinstance(saved, dict):
        raise UnsafeCheckpointError(path=where, unit=None, expected="a mapping of entries", found=type(saved).__name__)
    entries: list[EntryPlan] = []
    names: dict[int, str] | None = None
    for name, obj in state.items():
        if only is not None and name not in only:
            continue
        if name not in saved:
            raise StateMismatchError(f"{where}: no entry {name!r} in the checkpoint (it has {sorted(map(str, saved))})")
        entry = saved[name]
        if not isinstance(entry, dict) or entry.get("kind") not in ENTRY_KINDS or "data" not in entry:
            raise UnsafeCheckpointError(path=where, unit=name, expected="an entry with a known kind and data",
                                        found=repr(entry)[:120])
        kind, data, here = entry["kind"], entry["data"], f"{where}: {name}"
        if kind != kind_of(obj):
            raise StateMismatchError(f"{where}: entry {name!r} was saved as {kind}, restoring into a {kind_of(obj)}")
        saved_class = entry.get("class")
        if saved_class is not None and kind in ("optimizer", "stateful") and saved_class != class_name(obj):
            raise StateMismatchError(f"{here}: saved from a {saved_class}, restoring into a {class_name(obj)}; "
                                     "restore into an object of the saved class")
        if kind == "optimizer":
            names = param_names(state) if names is None else names
            entries.append(_plan_optimizer(name, obj, data, entry.get("params"), names, here))
        else:
            entries.append(_PLANNERS[kind](state, name, obj, data, here))
    return RestorePlan(where, entries)


def _plan_module(state: MutableMapping[str, Any], name: str, module: torch.nn.Module, data: Any, where: str) -> EntryPlan:
    current = module.state_dict()
    if not isinstance(data, dict) or set(data) != set(current):
        missing = sorted(set(current) - set(data if isinstance(data, dict) else ()))
        extra = sorted(map(str, set(data if isinstance(data, dict) else ()) - set(current)))
        raise StateMismatchError(f"{where}: module keys differ; missing in checkpoint {missing}, unexpected {extra}")
    for key, value in current.items():
        if isinstance(value, torch.Tensor):
            _check_tensor(f"{where}.{key}", value, data[key])
        else:  # extra state (get_extra_state): whatever tensors it holds must fit
            check_like(value, data[key], f"{where}.{key}")
    return EntryPlan(name, lambda: module.load_state_dict(data, strict=True), lambda: backup_module(module))


def _plan_optimizer(name: str, opt: torch.optim.Optimizer, data: Any, saved_params: Any,
                    names: dict[int, str], where: str) -> EntryPlan:
    current = opt.state_dict()
    params = describe_params(opt, names)
    if saved_params is not None:  # absent in checkpoints written before it was recorded
        check_saved_params(saved_params, params, where)
    groups = current["param_groups"]
    saved_groups = data.get("param_groups") if isinstance(data, dict) else None
    sizes = [len(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list) else None
             for g in saved_groups] if isinstance(saved_groups, list) else None
    if sizes != [len(g["params"]) for g in groups]:
        raise StateMismatchError(f"{where}: parameter groups differ: the optimizer has {len(groups)} groups of "
                                 f"{[len(g['params']) for g in groups]} parameters, the checkpoint {sizes}")
    check_state_dict(data, [len(p[1]) for p in params], where, saving=False)
    check_against_current(data["state"], current["state"], where)
    return EntryPlan(name, lambda: opt.load_state_dict(data), lambda: backup_optimizer(opt))


def _plan_stateful(state: MutableMapping[str, Any], name: str, obj: Any, data: Any, where: str) -> EntryPlan:
    check_like(obj.state_dict(), data, where)
    if isinstance(obj, (RNGState, DataPosition)):  # fito's own: fully checkable before anything is applied
        obj.check_state_dict(data, where)
    return EntryPlan(name, lambda: obj.load_state_dict(data), lambda: backup_stateful(obj))


def _plan_tensor(state: MutableMapping[str, Any], name: str, tensor: torch.Tensor, data: Any, where: str) -> EntryPlan:
    _check_tensor(where, tensor, data)

    def apply() -> None:
        with torch.no_grad():
            tensor.copy_(data)
    return EntryPlan(name, apply, lambda: backup_tensor(tensor))


def _plan_value(state: MutableMapping[str, Any], name: str, obj: Any, data: Any, where: str) -> EntryPlan:
    check_like(obj, data, where)

    def apply() -> None:
        state[name] = data
    return EntryPlan(name, apply, lambda: backup_value(state, name))


_PLANNERS = {"module": _plan_module, "stateful": _plan_stateful, "tensor": _plan_tensor, "value": _plan_value}


def _check_tensor(where: str, current: torch.Tensor, saved: Any) -> None:
    if not isinstance(saved, torch.Tensor):
        raise StateMismatchError(f"{where}: expected a tensor, the checkpoint holds {type(saved).__name__}")
    if saved.shape != current.shape or saved.dtype != current.dtype:
        raise StateMismatchError(
            f"{where}: expected {tuple(current.shape)} {current.dtype}, checkpoint has {tuple(saved.shape)} {saved.dtype}"
        )


def check_like(current: Any, saved: Any, where: str, depth: int = 0) -> None:
    """Saved data against the structure of the current value: every tensor or numpy array the current value
    holds must be matched, at the same nested key or index, by one of the same shape and dtype. Keys only one
    side has, and lists of another length, are left to the object's own load_state_dict (a failure there is
    rolled back)."""
    if depth > MAX_DEPTH:
        return
    if isinstance(current, torch.Tensor):
        _check_tensor(where, current, saved)
    elif isinstance(current, np.ndarray):
        if not isinstance(saved, np.ndarray):
            raise StateMismatchError(f"{where}: expected a numpy array, the checkpoint holds {type(saved).__name__}")
        if saved.shape != current.shape or saved.dtype != current.dtype:
            raise StateMismatchError(f"{where}: expected numpy {current.shape} {current.dtype}, checkpoint has "
                                     f"{saved.shape} {saved.dtype}")
    elif isinstance(current, dict) and isinstance(saved, dict):
        for key in current:
            if key in saved:
                check_like(current[key], saved[key], f"{where}/{key}", depth + 1)
    elif isinstance(current, (list, tuple)) and isinstance(saved, (list, tuple)) and len(current) == len(saved):
        for i, (c, s) in enumerate(zip(current, saved)):
            check_like(c, s, f"{where}/{i}", depth + 1)


class RNGState:
    """The process's random generators (torch CPU, numpy global, Python `random`) as one stateful entry.
    Put one in the state of every rank: each rank's generators are saved and restored as its own."""

    fito_rank_local = True  # saved per rank; a restore on another world size asks what to do (rank_local=)

    def state_dict(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}

    def check_state_dict(self, sd: Any, where: str = "RNGState") -> None:
        """Raise StateMismatchError unless `sd` loads: each part is tried on a scratch generator, so a restore
        refuses an invalid state before any of the caller's objects (or this process's generators) change."""
        try:
            if not isinstance(sd, Mapping) or set(sd) != {"torch", "numpy", "python"}:
                raise ValueError(f"expected the keys numpy, python, torch, found {sorted(map(str, sd)) if isinstance(sd, Mapping) else type(sd).__name__}")
            torch.Generator().set_state(sd["torch"].clone())
            np.random.RandomState().set_state(sd["numpy"])
            version, internal, gauss = sd["python"]
            random.Random().setstate((version, tuple(internal), gauss))
        except Exception as exc:
            raise StateMismatchError(f"{where}: not a valid RNGState state ({type(exc).__name__}: {exc})") from None

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        # clone: set_rng_state reads the raw storage; a state dict handed in by user code may hold a view
        torch.set_rng_state(sd["torch"].clone())
        np.random.set_state(sd["numpy"])
        version, internal, gauss = sd["python"]
        random.setstate((version, tuple(internal), gauss))


@dataclass
class DataPosition:
    """Where a rank is in its data: pass over the data (`epoch`), next sample index, and the shuffle seed.
    Use `order()` to get the permutation for the current pass, so a resumed run sees the same samples."""

    fito_rank_local = True

    epoch: int = 0
    index: int = 0
    seed: int = 0

    def order(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(n, generator=g)

    def advance(self, count: int, n: int) -> None:
        self.index += count
        if self.index >= n:
            self.epoch, self.index = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def check_state_dict(self, sd: Any, where: str = "DataPosition") -> None:
        fields = ("epoch", "index", "seed")
        if not isinstance(sd, Mapping) or set(sd) != set(fields) or not all(
                isinstance(sd[f], int) and not isinstance(sd[f], bool) for f in fields):
            raise StateMismatchError(f"{where}: expected {{'epoch', 'index', 'seed'}} as ints, found {repr(sd)[:120]}")

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.epoch, self.index, self.seed = int(sd["epoch"]), int(sd["index"]), int(sd["seed"])
