"""Parameters that only an optimizer holds -- fp32 master weights of a bf16 model, kept as nn.Parameters outside
the state's modules -- are saved with their optimizer (entry data key MASTERS, fito.ckpt.live_layout) and loaded
back in place here, after the optimizer's own state. Without them a resume would restore the model and the
moments, and the first step would then overwrite the weights with the masters' stale values."""
from __future__ import annotations

from typing import Any, Callable, MutableMapping

import torch

from fito.ckpt.apply import EntryPlan, backup_tensor
from fito.ckpt.live_layout import MASTERS, loose_params
from fito.errors import StateMismatchError


def masters_plan(name: str, opt: torch.optim.Optimizer, data: Any, state: MutableMapping[str, Any],
                  where: str) -> EntryPlan:
    """Loading the parameters that only this optimizer holds (fp32 masters, fito.ckpt.live_layout.loose_params)
    in place, from the optimizer's saved MASTERS; checked here, before anything changes."""
    live = loose_params(opt, state)
    saved = data.get(MASTERS) if isinstance(data, dict) else None
    if saved is None and live:  # saved as a module's (an entry this restore leaves out), or by an older fito
        raise StateMismatchError(
            f"{where}: {name}: the optimizer steps parameters no module of the state holds ({sorted(live)[:4]}), but "
            "the checkpoint has no values for them with the optimizer (a module of the saved state held them, or "
            "a fito that did not save them wrote it); restoring would leave them as they are and the next step "
            "would overwrite the restored weights. Restore with the module that holds them in the state")
    saved = saved if isinstance(saved, dict) else {}
    if set(saved) != set(live):
        raise StateMismatchError(f"{where}: {name}: parameters held by the optimizer only: the checkpoint has "
                                 f"{sorted(saved)[:6]}, this optimizer {sorted(live)[:6]}")
    pairs = [(live[k], saved[k]) for k in sorted(live)]
    for k, (p, t) in zip(sorted(live), pairs):
        if not isinstance(t, torch.Tensor) or t.dtype != p.dtype or tuple(t.shape) != tuple(p.shape):
            raise StateMismatchError(f"{where}: {name}/{MASTERS}/{k}: expected {tuple(p.shape)} {p.dtype}, the "
                                     f"checkpoint has {getattr(t, 'shape', type(t).__name__)} {getattr(t, 'dtype', '')}")

    def apply() -> None:
        with torch.no_grad():
            for p, t in pairs:
                p.copy_(t)

    def backup() -> Callable[[], None]:
        undos = [backup_tensor(p) for p, _ in pairs]

        def undo() -> None:
            for u in undos:
                u()
        return undo
    return EntryPlan(f"{name}/{MASTERS}", apply, backup)
