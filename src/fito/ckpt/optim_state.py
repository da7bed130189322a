"""Optimizer entries: what is recorded beside `state_dict()` at save, and the checks run before a restore.

An optimizer's state_dict names its parameters by position only, so a model whose parameters are passed in
another order would load each moment into the wrong parameter without any error. At save, fito records each
position's parameter: its name in the state ("model/0.weight", found by identity among the `nn.Module`s of the
same state mapping) and its shape and dtype. A restore compares them with the current optimizer's."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from fito.errors import StateMismatchError, UnsafeCheckpointError

ParamInfo = list[Any]  # [name in the state or None, shape, dtype name]


def param_names(state: Mapping[str, Any]) -> dict[int, str]:
    """{id(parameter): "entry/fqn"} for every parameter of every nn.Module in `state` (first name wins for a
    parameter shared by two modules or tied under two names)."""
    names: dict[int, str] = {}
    for entry, obj in state.items():
        if isinstance(obj, torch.nn.Module):
            for fqn, p in obj.named_parameters():
                names.setdefault(id(p), f"{entry}/{fqn}")
    return names


def describe_params(opt: torch.optim.Optimizer, names: Mapping[int, str]) -> list[ParamInfo]:
    return [[names.get(id(p)), list(p.shape), str(p.dtype).removeprefix("torch.")]
            for g in opt.param_groups for p in g["params"]]


def check_saved_params(saved: Any, current: list[ParamInfo], where: str) -> None:
    """The checkpoint's parameter list against the current optimizer's: same count, then by name where both
    sides know it (a parameter not found in any module of the state falls back to its shape and dtype)."""
    if not isinstance(saved, list) or not all(
        isinstance(p, list) and len(p) == 3 and (p[0] is None or isinstance(p[0], str)) and isinstance(p[1], list)
        and all(isinstance(s, int) and not isinstance(s, bool) for s in p[1]) and isinstance(p[2], str) for p in saved
    ):
        raise UnsafeCheckpointError(path="state tree", unit=where, expected="a list of [name, shape, dtype]",
                                    found=repr(saved)[:120])
    if len(saved) != len(current):
        raise StateMismatchError(f"{where}: the checkpoint's optimizer has {len(saved)} parameters, this one "
                                 f"{len(current)}")
    for i, ((s_name, s_shape, s_dtype), (c_name, c_shape, c_dtype)) in enumerate(zip(saved, current)):
        if s_name is not None and c_name is not None and s_name != c_name:
            raise StateMismatchError(
                f"{where}: parameter {i} of the optimizer is {s_name} in the checkpoint but {c_name} here, so its "
                f"moments would go to the wrong parameter; checkpoint order {_names(saved, i)}, this optimizer "
                f"{_names(current, i)}; build the optimizer over the parameters in the saved order"
            )
        if (s_shape, s_dtype) != (c_shape, c_dtype):
            label = c_name or s_name or "a parameter not in any module of the state"
            raise StateMismatchError(f"{where}: parameter {i} ({label}): expected {tuple(c_shape)} {c_dtype}, "
                                     f"the checkpoint has {tuple(s_shape)} {s_dtype}")


def _names(params: list[ParamInfo], i: int) -> str:
    return "[" + ", ".join(str(p[0]) for p in params[max(0, i - 1):i + 2]) + (", ...]" if i + 2 < len(params) else "]")


def check_state_dict(data: Any, dims: list[int], where: str, *, saving: bool) -> None:
    """A state_dict fito can write and load back: its param groups and per-parameter state well formed, and no
    parameter missing a state key that its peers (same group, same number of dimensions) have.

    `dims[i]` is parameter i's number of dimensions. The peers rule admits every optimizer of torch.optim:
    flags such as amsgrad are per group, and Adafactor keeps other keys for vectors than for matrices. It
    refuses a partial state (a moment missing for one parameter), which the optimizer would not zero-fill but
    crash on, or worse, at its next step. `saving` picks the error: the caller's object (StateMismatchError) or
    a checkpoint that fito would not have written (UnsafeCheckpointError)."""
    def bad(expected: str, found: Any) -> None:
        if saving:
            raise StateMismatchError(f"{where}: optimizer state_dict: expected {expected}, found {found}")
        raise UnsafeCheckpointError(path="state tree", unit=where, expected=expected, found=repr(found)[:120])

    if not isinstance(data, dict) or not isinstance(data.get("state"), dict) or not isinstance(data.get("param_groups"), list):
        bad("a mapping with 'state' and 'param_groups'", type(data).__name__)
    group_of: dict[int, int] = {}
    for g_index, g in enumerate(data["param_groups"]):
        ids = g.get("params") if isinstance(g, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            bad("param groups with a list of parameter ids", g if not isinstance(g, dict) else ids)
        for i in ids:
            if i in group_of or not 0 <= i < len(dims):
                bad(f"each parameter id once, below {len(dims)}", i)
            group_of[i] = g_index
    keysets: dict[tuple[int, int], dict[frozenset[Any], int]] = {}
    for index, s in data["state"].items():
        if index not in group_of or not isinstance(s, dict):
            bad("per-parameter state for a parameter of a group", index)
        keysets.setdefault((group_of[index], dims[index]), {}).setdefault(frozenset(s), index)
    for (g_index, ndim), sets in keysets.items():
        if len(sets) > 1:
            detail = "; ".join(f"parameter {i}: {sorted(map(str, k))}" for k, i in sets.items())
            raise StateMismatchError(
                f"{where}: parameters carry different optimizer state keys in group {g_index} ({ndim}-d "
                f"parameters): {detail}; a partial optimizer state is never zero-filled or saved"
            )


def check_against_current(saved: dict[Any, Any], current: dict[Any, Any], where: str) -> None:
    """Where the current optimizer already has state for a parameter, the checkpoint's tensors under the same
    keys must have the same shapes (a fresh optimizer has none: the parameter checks cover it)."""
    for index, s in saved.items():
        c = current.get(index)
        if not isinstance(c, dict):
            continue
        for key in s.keys() & c.keys():
            a, b = s[key], c[key]
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
                raise StateMismatchError(f"{where}.state[{index}].{key}: expected shape {tuple(b.shape)}, "
                                         f"the checkpoint has {tuple(a.shape)}")
