"""What a restore's targets should look like, read from the live objects: the module that owns an optimizer's
parameters, the layout (DTensor placements) of each tensor to restore, and fresh optimizers.

An optimizer that has never stepped has no state to take a layout from. DCP's `get_optimizer_state_dict`
makes one by a zero-gradient step (lr 0) over every parameter -- for a 1 GB model + AdamW that step costs
about as much as reading the checkpoint. fito derives the layout instead when it can: a moment of a
parameter's dtype and shape takes the parameter's layout, a 0-dim value (a step count) is a plain tensor.
Only an optimizer whose saved state does not fit that rule (factored moments of a sharded parameter) takes
the zero step, which `FreshOptimizers` undoes if the restore fails."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
from torch.distributed.tensor import DTensor

from fito.ckpt.state import kind_of
from fito.errors import StateMismatchError

Spec = tuple[torch.dtype, tuple[int, ...]]


# ---------------------------------------------------------------- optimizers and their modules
MASTERS = "fito_params"  # an optimizer entry's key for the parameters it steps that no module of the state holds


def owner_of(opt: torch.optim.Optimizer, state: Mapping[str, Any]) -> torch.nn.Module:
    """The module whose parameters `opt` steps, found by identity among the state's modules: the one module
    that holds them all, or a container of every module holding some (its FQNs are prefixed with the entry
    names). A parameter no module of the state holds (an fp32 master copy, say) is named
    `<optimizer entry>.param<position>` (see `loose_params`)."""
    modules = {n: m for n, m in state.items() if isinstance(m, torch.nn.Module)}
    owners, loose = _owners(opt, state)
    if len(owners) == 1 and not loose:
        return modules[owners[0]]
    holder = torch.nn.Module()
    for n in owners:
        holder.add_module(n, modules[n])
    if loose:
        holder.add_module(*loose)
    return holder


def loose_params(opt: torch.optim.Optimizer, state: Mapping[str, Any]) -> dict[str, torch.nn.Parameter]:
    """{FQN in `owner_of`'s module: parameter} for each parameter `opt` steps that no module of the state holds.
    A checkpoint keeps them with the optimizer (under MASTERS) and a restore loads them in place: the values
    of fp32 masters of a low-precision model are the training state, not a copy of the model's weights."""
    _, loose = _owners(opt, state)
    if not loose:
        return {}
    entry, module = loose
    return {f"{entry}.{n}": p for n, p in module.named_parameters()}


def _owners(opt: torch.optim.Optimizer, state: Mapping[str, Any]) -> tuple[list[str], tuple[str, torch.nn.Module] | None]:
    """(names of the state's modules holding some of `opt`'s parameters, (entry, module of the rest) or None)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    wanted = {id(p) for p in params}
    modules = {n: m for n, m in state.items() if isinstance(m, torch.nn.Module)}
    owners = [n for n, m in modules.items() if any(id(p) in wanted for p in m.parameters())]
    held = {id(p) for n in owners for p in modules[n].parameters()}
    orphans = [(i, p) for i, p in enumerate(params) if id(p) not in held]
    if not orphans:
        return owners, None
    entry = next((n for n, o in state.items() if o is opt), "optimizer")
    loose = torch.nn.Module()
    for i, p in orphans:
        if not isinstance(p, torch.nn.Parameter):
            raise StateMismatchError(
                f"optimizer {entry!r}: parameter {i} ({tuple(p.shape)} {p.dtype}) is a plain tensor that no module of "
                "the state holds, so fito cannot name it to save its values; wrap it as torch.nn.Parameter before "
                "building the optimizer (fito then saves and restores it with the optimizer, like fp32 master "
                "weights), or put the module that holds it in the state")
        loose.register_parameter(f"param{i}", p)
    return owners, (entry, loose)


class FreshOptimizers:
    """DCP's `get_optimizer_state_dict` creates the state of an optimizer that has none by a zero-gradient
    step (lr 0). Record the fresh optimizers of a state, let that step happen even when some gradients are
    set (they are put back right after it), and `undo()` it: no state, the same attributes and param groups.
    An optimizer whose state cannot be made so (LBFGS needs a closure, SparseAdam sparse gradients), or
    whose layout a restore derived without it (`derived_templates`), is read and loaded without the step
    (`no_zero_step`)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self._fresh = [(opt, dict(opt.__dict__), [dict(g) for g in opt.param_groups]) for opt in optimizers if not opt.state]
        self._stepless: set[int] = set()

    def derived_templates(self, owner: torch.nn.Module, opt: torch.optim.Optimizer,
                          saved: Mapping[str, Spec]) -> dict[str, torch.Tensor] | None:
        """The templates of a fresh optimizer's saved state without its zero step, or None if some saved
        tensor's layout cannot be told from its parameter (then the step is taken, see the module doc)."""
        if not self.is_fresh(opt) or opt.state:
            return None
        params = get_model_state_dict(owner)  # FQN -> parameter, named as in get_optimizer_state_dict
        out: dict[str, torch.Tensor] = {}
        for path, (dtype, shape) in saved.items():
            top, _, rest = path.partition("/")
            if top == MASTERS:
                continue  # the parameters themselves: `templates` adds them
            fqn, _, key = rest.rpartition("/")
            param = params.get(fqn)
            if top != "state" or param is None or "/" in key:
                return None
            if (param.dtype, tuple(param.shape)) == (dtype, shape):
                if isinstance(param, DTensor):
                    out[path] = param  # exp_avg and friends are made like the parameter: same placements
            elif len(shape) != 0:
                return None  # a factored moment, or a checkpoint of another model: the step tells and checks
        self._stepless.add(id(opt))  # this restore never runs the zero step for it
        return out

    def is_fresh(self, opt: torch.optim.Optimizer) -> bool:
        return any(o is opt for o, _, _ in self._fresh)

    def state_dict(self, owner: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
        if not self.is_fresh(opt) or opt.state or id(opt) in self._stepless:
            with self.no_zero_step(opt):
                return get_optimizer_state_dict(owner, opt)
        grads = [(p, p.grad) for g in opt.param_groups for p in g["params"]]
        for p, _ in grads:  # torch skips the creation if any gradient is set
            p.grad = None
        try:
            return get_optimizer_state_dict(owner, opt)
        except Exception:  # noqa: BLE001 - this optimizer's step needs more than zero gradients
            self.undo(opt)
            self._stepless.add(id(opt))
            with self.no_zero_step(opt):
                return get_optimizer_state_dict(owner, opt)
        finally:
            for p, g in grads:
                p.grad = g

    @contextmanager
    def no_zero_step(self, opt: torch.optim.Optimizer) -> Iterator[None]:
        """DCP skips its zero-gradient step when a gradient is set: a placeholder one for the call."""
        params = [p for g in opt.param_groups for p in g["params"]]
        if id(opt) not in self._stepless or opt.state or not params or any(p.grad is not None for p in params):
            yield
            return
        smallest = min(params, key=lambda p: p.numel())  # the cheapest placeholder: one gradient is enough
        smallest.grad = torch.zeros_like(smallest)
        try:
            yield
        finally:
            smallest.grad = None

    def undo(self, only: torch.optim.Optimizer | None = None) -> None:
        for opt, attrs, groups in self._fresh:
            if only is not None and opt is not only:
                continue
            opt.state.clear()
            for key in [k for k in opt.__dict__ if k not in attrs]:
                del opt.__dict__[key]
            opt.__dict__.update(attrs)
            for g, saved in zip(opt.param_groups, groups):  # a step that raised leaves lr at 0
                g.clear()
                g.update(saved)


def optimizers_of(state: Mapping[str, Any]) -> list[torch.optim.Optimizer]:
    return [o for o in state.values() if isinstance(o, torch.optim.Optimizer)]


# ---------------------------------------------------------------- restore: what the live objects offer
def templates(name: str, obj: Any, state: Mapping[str, Any], fresh: FreshOptimizers,
              saved: Mapping[str, Spec] | None = None) -> dict[str, torch.Tensor]:
    """{path: live tensor} that a restored tensor of entry `name` should take the layout of (placements of a
    DTensor; plain tensors otherwise): a module's and an optimizer's state dict, a tensor entry itself.
    `saved`: {path: (dtype, shape)} of the entry's saved tensors, which lets a fresh optimizer skip its step."""
    kind = kind_of(obj)
    if kind == "module":
        return dict(get_model_state_dict(obj))
    if kind == "optimizer":
        owner = owner_of(obj, state)
        masters = {f"{MASTERS}/{fqn}": p for fqn, p in loose_params(obj, state).items()}
        derived = fresh.derived_templates(owner, obj, saved) if saved is not None else None
        if derived is not None:
            return derived | masters
        return dict(_leaves(fresh.state_dict(owner, obj), ())) | masters
    if kind == "tensor":
        return {"": obj}
    return {}


def _leaves(value: Any, parts: tuple[str, ...]) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield "/".join(parts), value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*parts, str(k)))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, (*parts, str(i)))
