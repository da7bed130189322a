"""One rank of a 2-rank DDP save for tests/test_inspect_index.py: `python -m inspect_ranks ROOT`.

A DDP Linear(16, 8) + AdamW (replicated: written once, by one rank per tensor) and an RNGState (rank-local:
one copy per rank), saved at step 5."""
from __future__ import annotations

import sys
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fito

warnings.filterwarnings("ignore")


def main() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(16, 8))
    optim = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 16)).sum().backward()
    optim.step()
    with fito.Checkpointer(sys.argv[1]) as ck:
        ck.save(5, {"model": model, "optim": optim, "rng": fito.RNGState()})
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
