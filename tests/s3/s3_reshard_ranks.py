"""One rank of an FSDP2 + AdamW job checkpointing to S3 with nothing local (started N times by
fito.testing.scenarios.run_scenarios from tests/s3/test_s3_reshard.py).

    python -m s3_reshard_ranks save|restore ORACLE_DIR     (S3_URL and the AWS_* variables in the environment)

"save" runs on 2 ranks: trains, saves steps 3 and 4 to an S3Storage with the storage-native decision store, and
leaves the full tensors of step 4, each rank's RNG state and data position in ORACLE_DIR (torch.save, by the
test only). "restore" runs on 1 or 4 ranks: a fresh job restores the newest step into a fresh FSDP2 model,
rank r taking the rank-local entries of saved rank r % 2, then trains on."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import fito
from fito.coord.object_store import ObjectDecisionStore
from fito.storage.s3 import S3Storage
from fito.testing.compare import clone, diff
from fito.testing.scenarios import emit, rank_main

warnings.filterwarnings("ignore")
RANK = WORLD = 0


def checkpointer() -> fito.Checkpointer:
    storage = S3Storage(os.environ["S3_URL"])  # configured by AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
    return fito.Checkpointer(storage, store=ObjectDecisionStore.for_storage(storage), keep=2)


def fsdp_state(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)  # 5 output rows: uneven shards on 2 ranks, an empty one on rank 3 of 4
    model = torch.nn.Sequential(torch.nn.Linear(8, 18), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(18, 5))
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in (model[0], model[3]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    torch.manual_seed(1000 * seed + RANK)  # dropout differs per rank: the RNG is rank-local state
    return {"model": model, "optim": opt, "rng": fito.RNGState(), "data": fito.DataPosition(seed=7)}


def train(state: dict[str, Any], steps: int) -> None:
    model, opt, pos = state["model"], state["optim"], state["data"]
    for _ in range(steps):
        g = torch.Generator().manual_seed(pos.epoch * 1000 + pos.index * 10 + RANK)
        model(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        pos.advance(4, 64)


def full(state: dict[str, Any]) -> dict[str, Any]:
    """Weights, moments and step counters as full tensors (a collective), copied."""
    msd, osd = get_state_dict(state["model"], state["optim"], options=StateDictOptions(full_state_dict=True))
    return clone({"model": msd, "optim": osd["state"]})


def save(oracle: Path) -> None:
    state = fsdp_state(0)
    train(state, 3)
    ck = checkpointer()
    ck.save(3, state)
    train(state, 1)
    rng = torch.get_rng_state().clone()
    ck.save(4, state)
    at4 = full(state)
    if RANK == 0:
        torch.save(at4, oracle / "full4.pt")
    torch.save({"rng": rng, "data": state["data"].state_dict()}, oracle / f"local4_rank{RANK}.pt")
    emit("save", committed=ck.committed(), cwd=os.getcwd())
    ck.close()


def restore(oracle: Path) -> None:
    want = torch.load(oracle / "full4.pt", weights_only=True)
    mine = torch.load(oracle / f"local4_rank{RANK % 2}.pt", weights_only=True)
    state = fsdp_state(5)
    ck = checkpointer()
    step = ck.restore(state, rank_local={r: r % 2 for r in range(WORLD)})
    got = full(state)
    rng_ok = bool(torch.equal(torch.get_rng_state(), mine["rng"]))
    data_ok = state["data"].state_dict() == mine["data"]
    train(state, 1)  # and it trains on
    emit(f"restore_{WORLD}", step=step, mismatches=diff(got, want), rng_ok=rng_ok, data_ok=data_ok,
         compared=len(want["model"]) + sum(len(s) for s in want["optim"].values()), committed=ck.committed())
    ck.close()


if __name__ == "__main__":
    rank_main({"save": [save], "restore": [restore]}, globals())
