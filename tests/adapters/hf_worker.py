"""One Hugging Face Trainer run on fito (FitoTrainer), in its own process.

python -m hf_worker OUTDIR RESULT [--kill-at-step S]
Trains a tiny GPT-2 made from a config (no download; dropout on, so the RNG matters) on a shuffled synthetic
data set for 3 epochs, saving every 5 optimizer steps (mid-epoch: the data position matters), resuming with
resume_from_checkpoint=True. With --kill-at-step S the process SIGKILLs itself in the middle of writing the
checkpoint of step S (a FaultyStorage). At the end it writes weights, optimizer state, scheduler and RNG
draws to RESULT (torch.save of tensors and plain values)."""
from __future__ import annotations

import argparse
import os

if "WORLD_SIZE" in os.environ:  # under run_ranks: accelerate's DDP on gloo
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])

import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

from fito.adapters.hf import FitoTrainer
from fito.ckpt.checkpointer import Checkpointer
from fito.testing.faults import Fault, FaultPlan, open_faulty


class Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (48, 12), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class KillAt(FitoTrainer):
    kill_at: int | None = None
    plan: FaultPlan

    def _save_checkpoint(self, model, trial):  # type: ignore[no-untyped-def]
        if self.state.global_step == self.kill_at:
            self.plan.arm(Fault("unit write", "SIGKILL", after_bytes=4096))
        super()._save_checkpoint(model, trial)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("result")
    ap.add_argument("--kill-at-step", type=int, default=None)
    a = ap.parse_args()
    plan = FaultPlan(rank=int(os.environ.get("RANK", "0")))

    def checkpointer(root: str) -> Checkpointer:
        os.makedirs(root, exist_ok=True)
        storage, store = open_faulty(root, plan)
        return Checkpointer(storage, store=store, keep=2)

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2))
    args = TrainingArguments(a.outdir, per_device_train_batch_size=8, num_train_epochs=3, learning_rate=1e-3,
                             lr_scheduler_type="linear", warmup_steps=2, save_strategy="steps", save_steps=5,
                             logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=7,
                             dataloader_num_workers=0)
    trainer = KillAt(model=model, args=args, train_dataset=Data(), checkpointer=checkpointer)
    trainer.kill_at, trainer.plan = a.kill_at_step, plan
    trainer.train(resume_from_checkpoint=True)
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    if trainer.is_world_process_zero():
        torch.save({"model": {k: v.clone() for k, v in model.state_dict().items()}, "optim": opt.state_dict()["state"],
                    "sched": trainer.lr_scheduler.state_dict(), "global_step": trainer.state.global_step,
                    "rng": torch.rand(4), "started_at": trainer._initial_global_step}, a.result)
    if torch.distributed.is_initialized():  # as a training script should: no group left to interpreter exit
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
