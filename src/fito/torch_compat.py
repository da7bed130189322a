"""Every private torch API fito uses, each behind a feature check with a safe fallback (one module, so a new
torch release is checked in one place; tests/test_torch_compat.py pins the behaviour fito relies on).

fito installs beside any torch >= 2.11 (pyproject.toml). Public APIs are used as they are; the few private
ones below are probed once, at import, for the behaviour fito needs, not for a version number, and where a
probe fails fito takes the slower path that needs nothing private:

- `storage_use_count(t)`: how many tensors hold `t`'s storage (`torch._C._storage_Use_Count`). A restore
  adopts a verified buffer as a parameter's storage only where nobody else holds either (fito.ckpt.exchange);
  without it (None) it never adopts and trades bytes instead, which is always correct.
- `loads_like_nn_module(m)`: whether a module loads its state exactly as nn.Module does (no override of the
  protected `_load_from_state_dict`, no extra state, no load hooks in the private hook dicts). Unknown (an
  attribute gone) counts as "no": the restore then goes through `set_model_state_dict`.
- `loads_like_torch_optimizer(opt)`: whether loading an optimizer only replaces its state (torch's own
  `load_state_dict`, no load hooks in the private hook dicts). Unknown counts as "no": the restore then keeps
  a host copy of the optimizer's state to put back on failure.

Replica deduplication, once imported from `torch.distributed.checkpoint._dedup_save_plans`, now runs inside
DCP's own public `DefaultSavePlanner.create_global_plan` (fito.plan.save adds its check before it)."""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["loads_like_nn_module", "loads_like_torch_optimizer", "storage_use_count"]


def _probe_use_count() -> Callable[[torch.Tensor], int] | None:
    raw = getattr(torch._C, "_storage_Use_Count", None)
    if raw is None:
        return None

    def count(t: torch.Tensor) -> int:
        return int(raw(t.untyped_storage()._cdata))

    try:  # the behaviour relied on: a view held elsewhere raises the count, and dropping it lowers it again
        t = torch.empty(4)
        alone = count(t)
        view = t[1:]
        held = count(t)
        del view
        if not (held > alone and count(t) == alone):
            return None
    except (AttributeError, TypeError, RuntimeError):
        return None
    return count


_USE_COUNT = _probe_use_count()
_ALONE = _USE_COUNT(torch.empty(1)) if _USE_COUNT is not None else None  # what a storage nobody else holds reports


def storage_use_count(t: torch.Tensor) -> int | None:
    """How many holders `t`'s storage has beyond a tensor nobody else shares (0: `t` alone holds it); None
    where this torch cannot tell."""
    if _USE_COUNT is None or _ALONE is None:
        return None
    return _USE_COUNT(t) - _ALONE


def loads_like_nn_module(m: torch.nn.Module) -> bool:
    """Whether `m` itself (not its children) loads a state dict exactly as nn.Module does."""
    cls: Any = type(m)
    base = torch.nn.Module
    try:
        if (cls._load_from_state_dict is not base._load_from_state_dict
                or cls.set_extra_state is not base.set_extra_state
                or cls.get_extra_state is not base.get_extra_state):
            return False
        hooks = (getattr(m, "_load_state_dict_pre_hooks"), getattr(m, "_load_state_dict_post_hooks"))
    except AttributeError:  # a torch that moved these: assume the module is special
        return False
    return not any(hooks)


def loads_like_torch_optimizer(opt: torch.optim.Optimizer) -> bool:
    """Whether loading `opt` only replaces its state and param groups: torch's own load_state_dict and no load
    hooks that could write into the old ones."""
    if type(opt).load_state_dict is not torch.optim.Optimizer.load_state_dict:
        return False
    try:
        hooks = (getattr(opt, "_optimizer_load_state_dict_pre_hooks"), getattr(opt, "_optimizer_load_state_dict_post_hooks"))
    except AttributeError:  # a torch that moved these, or an optimizer that skipped Optimizer.__init__
        return False
    return not any(hooks)
