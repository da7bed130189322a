"""Hugging Face `transformers.Trainer` on fito: every checkpoint the Trainer takes (its `save_strategy`)
commits through fito, and `train(resume_from_checkpoint=True)` resumes from the newest committed step with
model, optimizer, LR scheduler, RNG and data position restored (every byte verified first, all or nothing).

    from fito.adapters.hf import FitoTrainer
    trainer = FitoTrainer(model=model, args=TrainingArguments("out", save_steps=500), train_dataset=data)
    trainer.train(resume_from_checkpoint=True)   # the newest committed step under out/fito, or a fresh start

Where it hooks (callbacks only observe, so the save itself is overridden): `_save_checkpoint` saves the live
model, optimizer and scheduler, this rank's RNG and the `TrainerState` (global step: the data position HF
skips to) as one fito step in `<output_dir>/fito` (no `checkpoint-N` folders; `save_total_limit` is fito's
`keep`). Resuming: HF reads `trainer_state.json` from a folder before the optimizer exists, so the restore
happens where HF sets up the training state (`_init_training_state`, which knows the step count): the
optimizer is created there (HF keeps an existing one) and the scheduler's verified state and the RNG are
held until HF itself would load them (after it creates the scheduler; at the resumed epoch's start, after
skipping the trained batches). Written against transformers 5 (`_init_training_state`, `_run_epoch`).

Importing this module imports transformers; `import fito` never does."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Optional

import transformers
from transformers import Trainer, TrainerState
from transformers.trainer_callback import ExportableState

import fito
from fito.ckpt.checkpointer import Checkpointer
from fito.ckpt.state import RNGState

__all__ = ["FitoTrainer", "FitoTrainerMixin"]

HOOKS = ("_save_checkpoint", "_init_training_state", "_prepare_for_training", "_run_epoch", "_load_rng_state")


class FitoTrainerMixin:
    """Put in front of `transformers.Trainer` (or a subclass of it): its checkpoints go through fito.

    `fito_root`: where the steps live (default `<output_dir>/fito`). `checkpointer`: makes the
    `fito.Checkpointer` of that root (default `fito.Checkpointer(root, keep=args.save_total_limit)`), on every
    rank, at the first save or resume (once torch.distributed is up)."""

    def __init__(self, *args: Any, fito_root: Optional[str | os.PathLike[str]] = None,
                 checkpointer: Optional[Callable[[str], Checkpointer]] = None, **kwargs: Any) -> None:
        missing = [h for h in HOOKS if not hasattr(Trainer, h)]
        if missing:
            raise RuntimeError(f"fito.adapters.hf needs transformers 5 (Trainer.{', Trainer.'.join(missing)}); "
                               f"this is transformers {transformers.__version__}")
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if getattr(training_args, "load_best_model_at_end", False):  # refused before the Trainer sets up anything
            raise ValueError("FitoTrainer keeps no per-step checkpoint folders, so load_best_model_at_end=True has "
                             "nothing to load; restore a step with fito.Checkpointer after training instead")
        super().__init__(*args, **kwargs)
        self.fito_root = os.fspath(fito_root) if fito_root is not None else os.path.join(self.args.output_dir, "fito")
        self._fito_make = checkpointer or (lambda root: fito.Checkpointer(root, keep=self.args.save_total_limit))
        self._fito_ck: Optional[Checkpointer] = None
        self._fito_resume: Optional[tuple[Any, Any, Any]] = None  # (scheduler, param groups, rng) held for HF

    @property
    def fito_checkpointer(self) -> Checkpointer:
        if self._fito_ck is None:
            self._fito_ck = self._fito_make(self.fito_root)
        return self._fito_ck

    def committed_steps(self) -> list[int]:
        return self.fito_checkpointer.committed() if os.path.isdir(self.fito_root) else []

    # ------------------------------------------------------------------ save
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Every rank: commit model, optimizer, scheduler, RNG and TrainerState as step `global_step`; returns
        once the decision is durable (fito.SaveAbortedError on every rank if it aborted)."""
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        for cb in [cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)]:
            name, cb_state = cb.__class__.__name__, cb.state()  # as HF records them in its own checkpoints
            if isinstance(self.state.stateful_callbacks.get(name), list):
                self.state.stateful_callbacks[name].append(cb_state)
            else:
                self.state.stateful_callbacks[name] = cb_state
        state: dict[str, Any] = {"model": self.model, "trainer_state": _state_json(self.state), "rng": RNGState()}
        if not self.args.save_only_model:  # accelerate's wrappers hold the torch objects as .optimizer/.scheduler
            state["optimizer"] = getattr(self.optimizer, "optimizer", self.optimizer)
            state["scheduler"] = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)
        self.fito_checkpointer.save(self.state.global_step, state)

    # ------------------------------------------------------------------ resume
    def train(self, resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`resume_from_checkpoint=True` (or the fito root): resume from the newest committed step (a fresh start
        if none is committed yet). HF's own folder-based resume is not used."""
        if resume_from_checkpoint is True or (
                resume_from_checkpoint and os.path.abspath(os.fspath(resume_from_checkpoint)) == os.path.abspath(self.fito_root)):
            self._fito_resume = (None, None, None) if self.committed_steps() else None
            resume_from_checkpoint = None
        elif resume_from_checkpoint:
            raise ValueError(f"FitoTrainer resumes from its fito root {self.fito_root} (resume_from_checkpoint=True), "
                             f"not from {resume_from_checkpoint!r}")
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)  # type: ignore[misc]
        finally:
            self._fito_resume = None
            self.close_fito()

    def close_fito(self) -> None:
        """Release the Checkpointer (its decision log and the gloo group it created), as train() does when it
        returns: a group left to interpreter exit can abort a rank there. The next save or resume opens a new
        one."""
        if self._fito_ck is not None:
            ck, self._fito_ck = self._fito_ck, None
            ck.close()

    def _init_training_state(self, max_steps: int, num_update_steps_per_epoch: int, num_train_epochs: int,
                             resume_from_checkpoint: Any, trial: Any) -> tuple[int, int]:
        epochs, steps = super()._init_training_state(  # type: ignore[misc]
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        if self._fito_resume is None:
            return epochs, steps
        if self.optimizer is None:
            self.create_optimizer()  # HF keeps it (create_optimizer makes one only when there is none)
        rng = RNGState()
        before = rng.state_dict()
        state: dict[str, Any] = {"model": self.model, "trainer_state": None, "rng": rng}
        if not self.args.save_only_model:
            # A stand-in of the real scheduler's class (HF replaces it with a new one in _prepare_for_training).
            state["scheduler"] = self.create_scheduler(num_training_steps=max_steps, optimizer=self.optimizer)
            state["optimizer"] = self.optimizer
        self.fito_checkpointer.restore(state)
        # Held until HF loads its own: the scheduler's state and the optimizer's hyper-parameters (which the new
        # scheduler overwrites), and this rank's RNG (HF loads it at the resumed epoch's start).
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        sched = state["scheduler"].state_dict() if "scheduler" in state else None
        self._fito_resume = (sched, groups, rng.state_dict())
        rng.load_state_dict(before)
        restored = TrainerState(**json.loads(state["trainer_state"]))
        self.state = restored
        self.state.best_model_checkpoint = None  # fito keeps no per-step folders to point at
        self._load_callback_state()
        self.state.init_training_references(self, max_steps, num_train_epochs, trial)
        epochs = int(self.state.global_step // num_update_steps_per_epoch)
        steps = 0
        if not self.args.ignore_data_skip:
            steps = (self.state.global_step % num_update_steps_per_epoch) * self.args.gradient_accumulation_steps
        return epochs, steps

    def _prepare_for_training(self, *args: Any, **kwargs: Any) -> Any:
        out = super()._prepare_for_training(*args, **kwargs)  # type: ignore[misc]
        if self._fito_resume is not None and self._fito_resume[0] is not None:
            sched, groups, _ = self._fito_resume  # verified by the restore above; applied in HF's own order
            self.lr_scheduler.load_state_dict(sched)
            for group, saved in zip(self.optimizer.param_groups, groups):
                group.update(saved)
        return out

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        # HF skips the trained batches and loads the RNG only for a resumed run: say where it resumes from.
        if self._fito_resume is not None and kwargs.get("resume_from_checkpoint") is None:
            kwargs["resume_from_checkpoint"] = self.fito_root
        return super()._run_epoch(*args, **kwargs)  # type: ignore[misc]

    def _load_rng_state(self, checkpoint: Any) -> None:
        if self._fito_resume is not None and checkpoint == self.fito_root:
            if self._fito_resume[2] is not None:
                RNGState().load_state_dict(self._fito_resume[2])
            return
        super()._load_rng_state(checkpoint)  # type: ignore[misc]


def _state_json(state: TrainerState) -> str:
    """HF's own encoding of its TrainerState (TrainerState.save_to_json's), kept as one string entry."""
    return json.dumps(dataclasses.asdict(state), sort_keys=True)


class FitoTrainer(FitoTrainerMixin, Trainer):
    """`transformers.Trainer` whose checkpoints commit through fito; see the module docstring."""
