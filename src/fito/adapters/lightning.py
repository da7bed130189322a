"""Lightning (`lightning.pytorch`) on fito: every checkpoint `Trainer` takes commits through fito's protocol on
every rank, and `trainer.fit(ckpt_path="last")` resumes from the newest committed step, restored strictly
(every byte verified on every rank before the module, optimizers or RNG are touched).

    from fito.adapters.lightning import FitoCheckpoint, FitoDDPStrategy
    trainer = L.Trainer(strategy=FitoDDPStrategy(), callbacks=[FitoCheckpoint("/ckpt/run1", every_n_epochs=1)])
    trainer.fit(model, data, ckpt_path="last")   # the newest committed step, or a fresh start

Where it hooks: `Strategy.save_checkpoint` / `load_checkpoint`, which `Trainer` calls on every rank (a
`CheckpointIO` runs on rank 0 only, and the FSDP strategies call `dcp.save` themselves, past it). The mixin
saves the live objects, not Lightning's copied dict: the LightningModule and each optimizer as fito entries
(sharded ones, FSDP2/TP DTensors, as shards; DDP replicas checked equal and written once), this rank's RNG
(Lightning itself keeps none) and the rest of Lightning's checkpoint (loops' progress, epoch, global step,
schedulers, callbacks, hyper-parameters) as one JSON-like entry. It restores after the strategy's setup, so
optimizers exist and one all-or-nothing restore covers module, optimizers, RNG and trainer state.

Importing this module imports Lightning; `import fito` never does."""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy
from lightning.pytorch.trainer.states import TrainerFn

import fito
from fito.ckpt.checkpointer import Checkpointer

__all__ = ["FitoCheckpoint", "FitoDDPStrategy", "FitoModelParallelStrategy", "FitoSingleDeviceStrategy",
           "FitoStrategyMixin"]

MODEL, RNG, TRAINER = "model", "rng", "trainer"
LIVE_KEYS = ("state_dict", "optimizer_states")  # what fito takes from the live objects instead of the dict


class FitoStrategyMixin:
    """Put in front of a Lightning Strategy class: its checkpoints go through fito.

    `checkpointer`: makes the `fito.Checkpointer` of a root (called once per root, on every rank; default
    `fito.Checkpointer(root)`; pass one to set `keep`, `store`, `hash` or a Storage). The root is the path
    Lightning saves to (FitoCheckpoint's `root`); the step is Lightning's `global_step`."""

    def __init__(self, *args: Any, checkpointer: Optional[Callable[[str], Checkpointer]] = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fito_make = checkpointer or (lambda root: fito.Checkpointer(root))
        self._fito_open: dict[str, Checkpointer] = {}
        self._fito_loaded = False

    # Restore once optimizers exist, so module and optimizers come back in one verified, all-or-nothing restore.
    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True

    @property
    def lightning_restore_optimizer(self) -> bool:
        return False  # fito restored them in load_checkpoint

    def fito_checkpointer(self, root: Any) -> Checkpointer:
        key = os.fspath(root)
        if key not in self._fito_open:
            self._fito_open[key] = self._fito_make(key)
        return self._fito_open[key]

    def _fito_state(self, trainer_state: Any) -> dict[str, Any]:
        module = self.lightning_module  # type: ignore[attr-defined]
        if module is None:
            raise RuntimeError("fito: the strategy has no LightningModule yet; save or restore after Trainer setup")
        state: dict[str, Any] = {MODEL: module}
        for i, opt in enumerate(self.optimizers):  # type: ignore[attr-defined]
            state[f"optimizer_{i}"] = opt._optimizer if isinstance(opt, LightningOptimizer) else opt
        state[RNG] = fito.RNGState()
        state[TRAINER] = trainer_state
        return state

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any,
                        storage_options: Optional[Any] = None) -> None:
        """Every rank: commit `checkpoint` as step `global_step` of the fito root `filepath`; returns once the
        decision is durable (raises fito.SaveAbortedError on every rank if it aborted)."""
        if storage_options is not None:
            raise TypeError("fito strategies take no storage_options: pass a Storage through `checkpointer=`")
        step = checkpoint.get("global_step")
        if not isinstance(step, int):
            raise ValueError(f"fito: Lightning's checkpoint for {filepath} has no integer global_step ({step!r})")
        rest = {k: v for k, v in checkpoint.items() if k not in LIVE_KEYS}
        self.fito_checkpointer(filepath).save(step, self._fito_state(rest))

    def load_checkpoint(self, checkpoint_path: Any, weights_only: Optional[bool] = None) -> dict[str, Any]:
        """Every rank: restore the newest committed step of the fito root into the live module, optimizers and
        RNG (verified first, all or nothing); return Lightning's trainer state for its loops and callbacks."""
        trainer = self.lightning_module.trainer  # type: ignore[attr-defined]
        if trainer.state.fn != TrainerFn.FITTING or not self.optimizers:  # type: ignore[attr-defined]
            raise ValueError(
                f"fito: {checkpoint_path} is a fito checkpoint root; it restores a whole training state (module, "
                "optimizers, RNG) for trainer.fit(ckpt_path=...). For weights only, restore the module with "
                "fito.Checkpointer outside the Trainer, or export the weights")
        state = self._fito_state(None)
        self.fito_checkpointer(checkpoint_path).restore(state)
        self._fito_loaded = True
        restored = state[TRAINER]
        if not isinstance(restored, dict):
            raise fito.StateMismatchError(f"{checkpoint_path}: entry {TRAINER!r} holds {type(restored).__name__}, "
                                          "not Lightning's trainer state (a dict); was it saved by this adapter?")
        return restored

    def load_model_state_dict(self, checkpoint: Any, strict: bool = True) -> None:
        if not self._fito_loaded:
            super().load_model_state_dict(checkpoint, strict=strict)  # type: ignore[misc]

    def load_optimizer_state_dict(self, checkpoint: Any) -> None:
        if not self._fito_loaded:
            super().load_optimizer_state_dict(checkpoint)  # type: ignore[misc]

    def teardown(self) -> None:
        for ck in self._fito_open.values():
            ck.close()  # waits for nothing in flight (saves are blocking); releases the decision log
        self._fito_open.clear()
        super().teardown()  # type: ignore[misc]


class FitoSingleDeviceStrategy(FitoStrategyMixin, SingleDeviceStrategy):
    """One process, one device. `FitoSingleDeviceStrategy(device="cpu")`."""


class FitoDDPStrategy(FitoStrategyMixin, DDPStrategy):
    """DDP (replicas checked equal, written once). On CPU: `FitoDDPStrategy(process_group_backend="gloo")`."""


class FitoModelParallelStrategy(FitoStrategyMixin, ModelParallelStrategy):
    """FSDP2 / tensor parallel (DTensor shards saved and restored as shards, on any world size). Lightning's
    FSDPStrategy (FSDP1, flat parameters) is not covered: use this strategy with `fully_shard`."""


class FitoCheckpoint(ModelCheckpoint):
    """When to save, and where: every `every_n_train_steps` optimizer steps and/or every `every_n_epochs`
    epochs, to the fito root `root` (a directory; several steps live in it, `keep` is the Checkpointer's).

    A ModelCheckpoint, so that `trainer.fit(ckpt_path="last")` finds the root once a step is committed (a fresh
    start when none is). It keeps no "best" and writes no `.ckpt` files; the Trainer's strategy must be a fito
    strategy (it is what commits through fito)."""

    def __init__(self, root: str | os.PathLike[str], *, every_n_train_steps: Optional[int] = None,
                 every_n_epochs: Optional[int] = None) -> None:
        if not every_n_train_steps and not every_n_epochs:
            raise ValueError("FitoCheckpoint needs every_n_train_steps or every_n_epochs (a positive int)")
        super().__init__(dirpath=os.fspath(root), save_top_k=0)
        self.root = os.fspath(root)
        self.fito_every_steps = every_n_train_steps
        self.fito_every_epochs = every_n_epochs

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if not isinstance(trainer.strategy, FitoStrategyMixin):
            raise TypeError(f"FitoCheckpoint({self.root!r}) needs a fito strategy (fito.adapters.lightning."
                            f"FitoDDPStrategy, ...), the Trainer has {type(trainer.strategy).__name__}")

    def _fito_save(self, trainer: Any) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.global_step == self._last_global_step_saved:
            return  # (the step and the epoch schedules can land on one step: save it once)
        trainer.save_checkpoint(self.root)
        self._last_global_step_saved = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        n = self.fito_every_steps
        if n and trainer.global_step % n == 0:
            self._fito_save(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        n = self.fito_every_epochs
        if n and (trainer.current_epoch + 1) % n == 0:
            self._fito_save(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        pass  # no monitored metric: saves happen on the schedule above only

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        pass  # a failing run saves nothing: the newest committed step is the one to resume from

    def state_dict(self) -> dict[str, Any]:
        return {"root": self.root}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

    def _find_last_checkpoints(self, trainer: Any) -> set[str]:
        """What ckpt_path="last" resolves to: the root, once it has a committed step. Lightning asks before it
        starts the process group, so a Checkpointer made now (one rank's view) is closed, not kept."""
        if not os.path.isdir(self.root):
            return set()
        with trainer.strategy._fito_make(self.root) as ck:
            return {self.root} if ck.committed() else set()
