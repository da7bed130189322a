"""One Lightning training run (a rank, under run_ranks, or a single process) on fito's strategies.

python -m lightning_worker ROOT OUT [--kill-at-epoch E] [--epochs N]
Trains a tiny MLP with dropout (so the RNG matters) on a shuffled synthetic data set, saving every epoch
through FitoCheckpoint, resuming with ckpt_path="last". With --kill-at-epoch E the process SIGKILLs itself in
the middle of writing its unit object of the checkpoint at the end of epoch E (0-based), via a
FaultyStorage. At the end, rank 0 writes the weights and optimizer state to OUT (torch.save of tensors only)."""
from __future__ import annotations

import argparse
import os
from typing import Any

os.environ.setdefault("LOCAL_RANK", os.environ.get("RANK", "0"))  # launched externally: Lightning must not spawn

import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as L

from fito.adapters.lightning import (
    FitoCheckpoint, FitoDDPStrategy, FitoModelParallelStrategy, FitoSingleDeviceStrategy,
)
from fito.ckpt.checkpointer import Checkpointer
from fito.testing.faults import Fault, FaultPlan, open_faulty


class Tiny(L.LightningModule):
    def __init__(self, fsdp: bool = False) -> None:
        super().__init__()
        self.fsdp = fsdp
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(32, 1))

    def configure_model(self) -> None:
        if self.fsdp:  # FSDP2 over the data-parallel mesh Lightning's ModelParallelStrategy made
            from torch.distributed.fsdp import fully_shard
            mesh = self.device_mesh["data_parallel"]
            for layer in (self.net[0], self.net[3]):
                fully_shard(layer, mesh=mesh)
            fully_shard(self.net, mesh=mesh)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        opt = torch.optim.AdamW(self.parameters(), lr=1e-2)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)}


class StartStep(L.Callback):
    """Records the step training started from (0, or the resumed one)."""

    step = -1

    def on_train_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.step = trainer.global_step


class ArmAt(L.Callback):
    """Arms the kill right before FitoCheckpoint (a checkpoint callback: Lightning runs it last) saves."""

    def __init__(self, plan: FaultPlan, epoch: int) -> None:
        self.plan, self.epoch = plan, epoch

    def on_train_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        if trainer.current_epoch == self.epoch:
            self.plan.arm(Fault("unit write", "SIGKILL", after_bytes=600))


def full(t: Any) -> Any:
    from torch.distributed.tensor import DTensor
    return t.full_tensor() if isinstance(t, DTensor) else t.clone() if isinstance(t, torch.Tensor) else t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--kill-at-epoch", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--fsdp", action="store_true", help="FSDP2 through FitoModelParallelStrategy")
    a = ap.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    plan = FaultPlan(rank=rank)

    def checkpointer(root: str) -> Checkpointer:
        storage, store = open_faulty(root, plan)
        return Checkpointer(storage, store=store, keep=2)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    L.seed_everything(1234 + rank, workers=True)  # identical in both runs; resume must restore what follows
    if a.fsdp:
        strategy: Any = FitoModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1,
                                                  process_group_backend="gloo", checkpointer=checkpointer)
    elif world > 1:
        strategy = FitoDDPStrategy(process_group_backend="gloo", checkpointer=checkpointer)
    else:
        strategy = FitoSingleDeviceStrategy(device="cpu", checkpointer=checkpointer)
    start = StartStep()
    callbacks: list[L.Callback] = [start, FitoCheckpoint(a.root, every_n_epochs=1)]
    if a.kill_at_epoch is not None:
        callbacks.insert(0, ArmAt(plan, a.kill_at_epoch))
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy=strategy, max_epochs=a.epochs,
                        callbacks=callbacks, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True)
    model = Tiny(fsdp=a.fsdp)
    # shuffle=True: the order of each epoch comes from the torch RNG (single process) or the epoch (DDP).
    trainer.fit(model, DataLoader(data, batch_size=8, shuffle=True), ckpt_path="last")
    opt = trainer.optimizers[0]
    weights = {k: full(v) for k, v in model.state_dict().items()}  # collective under FSDP: every rank
    moments = {i: {k: full(v) for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    if trainer.global_rank == 0:
        torch.save({"model": weights, "optim": moments, "sched": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
                    "global_step": trainer.global_step, "started_at": start.step}, a.out)


if __name__ == "__main__":
    main()
