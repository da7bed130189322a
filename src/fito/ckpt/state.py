"""What a training state is made of, and how each part is captured and put back.

A state is a mapping of names to: `nn.Module`, `Optimizer`, anything with `state_dict()`/`load_state_dict()`
(LR schedulers, GradScaler, `RNGState`, `DataPosition`), tensors (restored in place), or JSON-like values
(restored by replacing the mapping's entry). Restoring is two-phase: `plan_restore` checks that everything
fits and returns the actions; nothing touches the caller's objects until every check has passed."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, MutableMapping

import numpy as np
import torch

from fito.errors import StateMismatchError

Action = Callable[[], None]


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


def capture(state: Mapping[str, Any]) -> dict[str, Any]:
    """{name: {"kind": ..., "data": plain state}} — tensors still alias the live objects."""
    out = {}
    for name, obj in state.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise StateMismatchError(f"state key {name!r}: use non-empty strings without '/'")
        kind = kind_of(obj)
        out[name] = {"kind": kind, "data": obj.state_dict() if kind in ("module", "optimizer", "stateful") else obj}
    return out


def plan_restore(state: MutableMapping[str, Any], saved: Mapping[str, Any], *, where: str) -> list[Action]:
    """Check every entry of `state` against `saved`; return the actions that apply it (not yet run)."""
    actions: list[Action] = []
    for name, obj in state.items():
        if name not in saved:
            raise StateMismatchError(f"{where}: no entry {name!r} in the checkpoint (it has {sorted(saved)})")
        entry = saved[name]
        kind, data = entry["kind"], entry["data"]
        if kind != kind_of(obj):
            raise StateMismatchError(f"{where}: entry {name!r} was saved as {kind}, restoring into a {kind_of(obj)}")
        actions.append(_PLANNERS[kind](state, name, obj, data, f"{where}: {name}"))
    return actions


def _plan_module(state: MutableMapping[str, Any], name: str, module: torch.nn.Module, data: Any, where: str) -> Action:
    current = module.state_dict()
    if not isinstance(data, dict) or set(data) != set(current):
        missing = sorted(set(current) - set(data or {}))
        extra = sorted(set(data or {}) - set(current))
        raise StateMismatchError(f"{where}: module keys differ; missing in checkpoint {missing}, unexpected {extra}")
    for key, tensor in current.items():
        _check_tensor(f"{where}.{key}", tensor, data[key])
    return lambda: module.load_state_dict(data, strict=True)


def _plan_optimizer(state: MutableMapping[str, Any], name: str, opt: torch.optim.Optimizer, data: Any, where: str) -> Action:
    current = opt.state_dict()
    groups, saved_groups = current["param_groups"], data.get("param_groups") if isinstance(data, dict) else None
    if not isinstance(saved_groups, list) or [len(g["params"]) for g in groups] != [len(g.get("params", [])) for g in saved_groups]:
        raise StateMismatchError(f"{where}: parameter groups differ from the optimizer's ({len(groups)} groups)")
    saved_state = data.get("state")
    if not isinstance(saved_state, dict):
        raise StateMismatchError(f"{where}: no per-parameter state in the checkpoint")
    params = [p for g in opt.param_groups for p in g["params"]]
    keysets = {frozenset(s) for s in saved_state.values() if isinstance(s, dict)}
    if len(keysets) > 1:
        # Some parameters have moments and others lack them: a partial state is never zero-filled silently.
        raise StateMismatchError(f"{where}: parameters carry different optimizer state keys {sorted(map(sorted, keysets))}")
    for index, s in saved_state.items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(s, dict):
            raise StateMismatchError(f"{where}: state for unknown parameter {index!r}")
        for key, value in s.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                _check_tensor(f"{where}.state[{index}].{key}", params[index].detach(), value)
    return lambda: opt.load_state_dict(data)


def _plan_stateful(state: MutableMapping[str, Any], name: str, obj: Any, data: Any, where: str) -> Action:
    return lambda: obj.load_state_dict(data)


def _plan_tensor(state: MutableMapping[str, Any], name: str, tensor: torch.Tensor, data: Any, where: str) -> Action:
    _check_tensor(where, tensor, data)

    def apply() -> None:
        with torch.no_grad():
            tensor.copy_(data)
    return apply


def _plan_value(state: MutableMapping[str, Any], name: str, obj: Any, data: Any, where: str) -> Action:
    def apply() -> None:
        state[name] = data
    return apply


_PLANNERS = {"module": _plan_module, "optimizer": _plan_optimizer, "stateful": _plan_stateful,
             "tensor": _plan_tensor, "value": _plan_value}


def _check_tensor(where: str, current: torch.Tensor, saved: Any) -> None:
    if not isinstance(saved, torch.Tensor):
        raise StateMismatchError(f"{where}: expected a tensor, the checkpoint holds {type(saved).__name__}")
    if saved.shape != current.shape or saved.dtype != current.dtype:
        raise StateMismatchError(
            f"{where}: expected {tuple(current.shape)} {current.dtype}, checkpoint has {tuple(saved.shape)} {saved.dtype}"
        )


class RNGState:
    """The process's random generators (torch CPU, numpy global, Python `random`) as one stateful entry.
    Put one in the state of every rank: each rank's generators are saved and restored as its own."""

    def state_dict(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        # clone: set_rng_state reads the raw storage, and restored tensors are views into one shared buffer
        torch.set_rng_state(sd["torch"].clone())
        np.random.set_state(sd["numpy"])
        version, internal, gauss = sd["python"]
        random.setstate((version, tuple(internal), gauss))


@dataclass
class DataPosition:
    """Where a rank is in its data: pass over the data (`epoch`), next sample index, and the shuffle seed.
    Use `order()` to get the permutation for the current pass, so a resumed run sees the same samples."""

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

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.epoch, self.index, self.seed = int(sd["epoch"]), int(sd["index"]), int(sd["seed"])
