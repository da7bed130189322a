"""torchtitan (0.3.0) on fito: `FitoCheckpointManager`, a `BaseCheckpointManager` whose saves commit through
fito's protocol and whose loads restore the newest committed (or a given) step strictly.

    from fito.adapters.torchtitan import FitoCheckpointManager
    ckpt = FitoCheckpointManager(FitoCheckpointManager.Config(enable=True, folder="checkpoint", interval=500),
                                 dataloader=dl, model_parts=model_parts, optimizers=optimizers,
                                 lr_schedulers=lr_schedulers, states={"train_state": trainer}, sd_adapter=None,
                                 base_folder=dump_folder)
    ckpt.load()                          # False when nothing is committed yet
    for step in ...: ...; ckpt.save(step, last_step=step == total)

The hooks, as torchtitan 0.3.0 names them (components/checkpointer/base.py): `_save(curr_step, last_step)`
(saves when the step is due: every `interval`, step 1 with `enable_first_step_checkpoint`, and the last),
`_load(step)` (-1: newest committed), `_maybe_wait_for_staging`, `_wait_for_saving`, `_close`. The states are
torchtitan's own Stateful objects (ModelWrapper over the model parts, OptimizersContainer, LRSchedulersContainer,
the data loader, and `states`: the train state); fito saves each as one entry and restores all of them or
none. `keep_latest_k` is fito's `keep` (0: keep all).

Not covered (refused at construction, never silently ignored): `initial_load_path` / HF loads and
`last_save_in_hf` (DCP and safetensors folders are not fito roots), `exclude_from_loading` (fito restores
strictly), async modes (`async_mode` other than "disabled").

Status: written and tested against torchtitan 0.3.0's BaseCheckpointManager and its ModelWrapper in a plain
loop. torchtitan's Trainer itself was not run here: 0.3.0 from PyPI imports its default `torch_checkpointing`
backend from a torch_checkpointing newer than PyPI's newest (0.1.1 lacks `dtensor_resharder`), and its
trainer needs tensorboard, wandb and datasets. Importing this module imports torchtitan; `import fito` never
does."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torchtitan.components.checkpointer.base import (
    DATALOADER, LR_SCHEDULER, MODEL, OPTIMIZER, BaseCheckpointManager, ModelWrapper,
)

import fito
from fito.ckpt.checkpointer import Checkpointer

__all__ = ["FitoCheckpointManager", "FlatOptimizerState"]


class FlatOptimizerState:
    """torchtitan's OptimizersContainer is a torch Optimizer whose state_dict is flat (FQN-keyed, as DCP wants);
    fito saves it as that flat state (a stateful entry), not as a torch optimizer's {state, param_groups}."""

    def __init__(self, optimizers: Any) -> None:
        self.optimizers = optimizers

    def state_dict(self) -> dict[str, Any]:
        return self.optimizers.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.optimizers.load_state_dict(sd)


class FitoCheckpointManager(BaseCheckpointManager):
    """torchtitan's checkpoint manager contract on fito (see the module docstring).
    `checkpointer`: makes the `fito.Checkpointer` of the folder (default: keep = keep_latest_k or all)."""

    @dataclass(kw_only=True, slots=True)
    class Config(BaseCheckpointManager.Config):
        async_mode: str = "disabled"
        """Only "disabled": fito's async save is not wired to torchtitan's staging hooks here."""

    def __init__(self, config: "FitoCheckpointManager.Config", *, dataloader: Any, model_parts: list[Any],
                 optimizers: Any, lr_schedulers: Any, states: dict[str, Any], sd_adapter: Any = None,
                 base_folder: str = "", checkpointer: Optional[Callable[[str], Checkpointer]] = None) -> None:
        self.enable = config.enable
        self.save_future = None
        if not self.enable:
            return
        refused = [name for name, on in (
            ("initial_load_path", bool(config.initial_load_path)), ("last_save_in_hf", config.last_save_in_hf),
            ("exclude_from_loading", bool(config.exclude_from_loading)),
            ("async_mode", config.async_mode != "disabled"), ("create_seed_checkpoint", config.create_seed_checkpoint),
        ) if on]
        if refused:
            raise ValueError(f"FitoCheckpointManager does not support {', '.join(refused)}; see "
                             "fito.adapters.torchtitan (fito restores strictly from its own roots)")
        self.folder = os.path.join(base_folder, config.folder)
        self.config = config
        self.states = dict(states)
        self.states.update({MODEL: ModelWrapper(model_parts), OPTIMIZER: FlatOptimizerState(optimizers),
                            LR_SCHEDULER: lr_schedulers})
        if dataloader is not None:
            self.states[DATALOADER] = dataloader
        keep = config.keep_latest_k or None
        self._make = checkpointer or (lambda root: fito.Checkpointer(root, keep=keep))
        self._ck: Optional[Checkpointer] = None

    @property
    def checkpointer(self) -> Checkpointer:
        if self._ck is None:
            os.makedirs(self.folder, exist_ok=True)
            self._ck = self._make(self.folder)
        return self._ck

    def _due(self, step: int, last_step: bool) -> bool:
        c = self.config
        if c.load_only:
            return False
        return last_step or (step == 1 and c.enable_first_step_checkpoint) or step % c.interval == 0

    def _save(self, curr_step: int, last_step: bool = False) -> bool:
        if not self._due(curr_step, last_step):
            return False
        self.checkpointer.save(curr_step, self.states)  # every rank; returns once the decision is durable
        return True

    def _load(self, step: int = -1) -> bool:
        if not self.checkpointer.committed():
            if step != -1:
                raise fito.NoCommittedEpochError(f"{self.folder}: step {step} asked for, nothing is committed")
            return False
        self.checkpointer.restore(self.states, None if step == -1 else step)
        return True

    def _maybe_wait_for_staging(self) -> None:
        pass  # saves are blocking: nothing is staged in the background

    def _wait_for_saving(self) -> None:
        self.save_future = None

    def _close(self) -> None:
        if self._ck is not None:
            self._ck.close()
            self._ck = None
