"""A training loop on torchtitan 0.3.0's own parts (OptimizersContainer, LRSchedulersContainer, ModelWrapper via
the manager) with fito.adapters.torchtitan.FitoCheckpointManager, in its own process.

python -m torchtitan_worker DUMP RESULT [--kill-at-step S]
12 steps, a checkpoint every 4 (interval) and at the last step; resumes with manager.load(). With --kill-at-step
S the process SIGKILLs itself in the middle of writing the checkpoint of step S."""
from __future__ import annotations

import argparse

import torch

from torchtitan.components.optimizer.lr_scheduler import LRSchedulersContainer
from torchtitan.components.optimizer.optimizer import OptimizersContainer, ParamGroupConfig

from fito.adapters.torchtitan import FitoCheckpointManager
from fito.ckpt.checkpointer import Checkpointer
from fito.ckpt.state import RNGState
from fito.testing.faults import Fault, FaultPlan, open_faulty


class TrainState:
    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, sd: dict[str, int]) -> None:
        self.step = sd["step"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("result")
    ap.add_argument("--kill-at-step", type=int, default=None)
    a = ap.parse_args()
    plan = FaultPlan(rank=0)

    def checkpointer(root: str) -> Checkpointer:
        storage, store = open_faulty(root, plan)
        return Checkpointer(storage, store=store, keep=2)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1))
    optimizers = OptimizersContainer(OptimizersContainer.Config(
        param_groups=[ParamGroupConfig(pattern=".*", optimizer_name="AdamW", optimizer_kwargs={"lr": 1e-2})],
        implementation="for-loop"), model_parts=[model])
    schedulers = LRSchedulersContainer(optimizers, lambda s: 1.0 / (1 + s))
    train = TrainState()
    ckpt = FitoCheckpointManager(FitoCheckpointManager.Config(enable=True, folder="checkpoint", interval=4),
                                 dataloader=None, model_parts=[model], optimizers=optimizers,
                                 lr_schedulers=schedulers, states={"train_state": train, "rng": RNGState()},
                                 base_folder=a.dump, checkpointer=checkpointer)
    ckpt.load()
    started = train.step
    g = torch.Generator().manual_seed(1)
    data = torch.randn(12, 16, 8, generator=g)
    total = 12
    while train.step < total:
        x = data[train.step]  # the data position is the train state's step
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizers.step()
        optimizers.zero_grad()
        schedulers.step()
        train.step += 1
        if train.step == a.kill_at_step:
            plan.arm(Fault("unit write", "SIGKILL", after_bytes=1000))
        ckpt.save(train.step, last_step=train.step == total)
    ckpt.close()
    torch.save({"model": {k: v.clone() for k, v in model.state_dict().items()},
                "optim": optimizers.optimizers[0].state_dict()["state"], "sched": schedulers.state_dict(),
                "lr": optimizers.optimizers[0].param_groups[0]["lr"], "started_at": started,
                "rng": torch.rand(4)}, a.result)


if __name__ == "__main__":
    main()
