"""Ranks that save a sharded checkpoint for the export tests (started by fito.testing.dist.run_ranks).

    python -m export_ranks save TMPDIR

FSDP2 (uneven shards: 5 rows over 2 ranks) + AdamW after 2 steps, a TP DTensor sharded on dim 1 (column
blocks, not contiguous in the full tensor), a replicated DTensor, a plain tensor and a rank-local RNG entry, saved at step 2 by 2
ranks. The oracle -- every full tensor by its exported name -- is written with torch.save by rank 0 for the
test only (fito never pickles)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import fito
from fito.testing.scenarios import emit, rank_main

warnings.filterwarnings("ignore")
RANK = WORLD = 0


def cols() -> torch.Tensor:
    return torch.arange(7 * 5, dtype=torch.float32).reshape(7, 5) / 3


def save(tmp: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 18), torch.nn.ReLU(), torch.nn.Linear(18, 5))
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for i in range(2):
        g = torch.Generator().manual_seed(10 * i + RANK)
        model(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    state: dict[str, Any] = {"model": model, "optim": opt, "tp": distribute_tensor(cols(), mesh, [Shard(1)]),
                             "rep": distribute_tensor(cols() * 2, mesh, [Replicate()]),  # written once
                             "plain": torch.linspace(0, 1, 9, dtype=torch.float64), "rng": fito.RNGState()}
    fito.Checkpointer(tmp / "ck").save(2, state)
    msd, osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    oracle = {f"model.{k}": v.detach().clone() for k, v in msd.items()}
    oracle |= {f"optim.state.{p}.{k}": v.detach().clone() for p, s in osd["state"].items() for k, v in s.items()}
    oracle |= {"tp": cols(), "rep": cols() * 2, "plain": state["plain"].clone()}
    if RANK == 0:
        torch.save(oracle, tmp / "oracle.pt")
    emit("save", local=[list(p.to_local().shape) for p in model.parameters()])


GROUPS = {"save": [save]}


if __name__ == "__main__":
    rank_main(GROUPS, globals())
