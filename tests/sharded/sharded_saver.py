"""One rank of a 2-rank job that restores (checking the state is whole), then saves sharded state forever
until killed: every value of step s equals s, so a mix of two steps is visible.

    python -m sharded_saver ROOT      (MASTER_ADDR/PORT, RANK, WORLD_SIZE set)

Prints 'started S whole|MIXED' after its restore and, on rank 0, 'committed S' after each save returns."""
from __future__ import annotations

import sys
import warnings
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

import fito

warnings.filterwarnings("ignore")
SHARDED, REPLICATED = 1 << 18, 1 << 17  # 1 MiB sharded over the ranks, 512 KiB replicated


def state_of(step: int, rank: int, world: int, mesh: Any) -> dict[str, Any]:
    local = torch.full((SHARDED // world,), float(step))
    return {"sharded": DTensor.from_local(local, mesh, [Shard(0)], run_check=False),
            "replicated": torch.full((REPLICATED,), float(step)),
            "mine": {"step": step, "rank": rank}}  # differs between ranks: saved per rank


def whole(state: dict[str, Any], step: int, rank: int) -> bool:
    values = set(state["sharded"].to_local().unique().tolist()) | set(state["replicated"].unique().tolist())
    return values == {float(step)} and state["mine"] == {"step": step, "rank": rank}


def main() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    ck = fito.Checkpointer(sys.argv[1], keep=2)
    state = state_of(-1, -1, world, mesh)
    try:
        step = ck.restore(state)
        ok = whole(state, step, rank)
    except fito.NoCommittedEpochError:
        step, ok = 0, True
    print(f"started {step} {'whole' if ok else 'MIXED'}", flush=True)
    while True:
        step += 1
        ck.save(step, state_of(step, rank, world, mesh))
        if rank == 0:
            print(f"committed {step}", flush=True)


if __name__ == "__main__":
    main()
