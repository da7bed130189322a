"""One rank of the multi-rank "DCP in one argument" scenarios (issue 21), started N times by run_ranks:

    python -m beside_ranks GROUP TMPDIR

Every save and load here passes only fito's storage writer or reader to DCP: DCP's own planners."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard import sharded_tensor
from torch.distributed._shard.sharding_spec import ChunkShardingSpec
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

import fito.dcp
from dcp_ranks import failure, flip_one_bit_of_rank, fsdp_model, full_state, train
import dcp_ranks
from fito.testing.compare import diff
from fito.testing.scenarios import emit, rank_main

warnings.filterwarnings("ignore")
RANK = WORLD = 0


def fsdp_one_argument(tmp: Path) -> None:
    root = tmp / "fsdp"
    model, opt = fsdp_model()
    train(model, opt, 2, seed=1)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, storage_writer=fito.dcp.Writer(root, 1))
    want = full_state(model, opt)
    if RANK == 0:
        torch.save(want, tmp / "fsdp_oracle.pt")  # the test's oracle for the 1-rank load, never a checkpoint
    model2, opt2 = fsdp_model()
    msd2, osd2 = get_state_dict(model2, opt2)
    with fito.dcp.Reader(root) as reader:
        dcp.load({"model": msd2, "optim": osd2}, storage_reader=reader)
    set_state_dict(model2, opt2, model_state_dict=msd2, optim_state_dict=osd2)
    emit("fsdp_one_argument", mismatches=diff(full_state(model2, opt2), want), loaded_step=reader.loaded_step,
         compared=len(want["model"]) + sum(len(s) for s in want["optim"]["state"].values()))


def plain_one_argument(tmp: Path) -> None:
    root = tmp / "plain"
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4)  # the same module on every rank: DCP keeps one copy of each replica
    dcp.save({"model": model.state_dict(), "epoch": 7}, storage_writer=fito.dcp.Writer(root, 1))
    target = {"model": {k: torch.zeros_like(v) for k, v in model.state_dict().items()}, "epoch": 0}
    dcp.load(target, storage_reader=fito.dcp.Reader(root))
    same = all(torch.equal(target["model"][k], v) for k, v in model.state_dict().items())
    emit("plain_one_argument", same=same, epoch=target["epoch"])


def replicas_differ(tmp: Path) -> None:
    root = tmp / "differ"
    try:
        dcp.save({"w": torch.ones(4), "per_rank": torch.full((3,), float(RANK))}, storage_writer=fito.dcp.Writer(root, 1))
        out: dict[str, Any] = {"raised": None}
    except BaseException as exc:  # noqa: BLE001 - CheckpointException is a BaseException
        out = failure(exc)
    dist.barrier()
    emit("replicas_differ", committed=dcp_ranks.committed(root), files=sorted(str(p.relative_to(root)) for p in root.rglob("*.fito")), **out)


def flipped_byte(tmp: Path) -> None:
    root = tmp / "flip"
    state = {"rows": torch.arange(40.0).reshape(10, 4) + RANK, "rep": torch.arange(6.0)}  # rows: a per-rank name below
    state = {f"rows{RANK}": state["rows"], "rep": state["rep"]}
    dcp.save(state, storage_writer=fito.dcp.Writer(root, 1))
    dist.barrier()
    if RANK == 0:
        flip_one_bit_of_rank(root, 1)
    dist.barrier()
    target = {k: torch.full_like(v, -7.0) for k, v in state.items()}
    try:
        dcp.load(target, storage_reader=fito.dcp.Reader(root))
        out: dict[str, Any] = {"raised": None}
    except BaseException as exc:  # noqa: BLE001
        out = failure(exc)
    emit("flipped_byte", untouched=all(bool((v == -7.0).all()) for v in target.values()), **out)


def sharded_tensor_target(tmp: Path) -> None:
    root = tmp / "sharded"
    full = torch.arange(24.0).reshape(6, 4)
    if RANK == 0:  # saved by one rank alone
        dcp.save({"w": full}, storage_writer=fito.dcp.Writer(root, 1), planner=fito.dcp.SavePlanner(), no_dist=True)
    dist.barrier()
    spec = ChunkShardingSpec(dim=0, placements=[f"rank:{r}/cpu" for r in range(WORLD)])
    out = {}
    for name, planner in (("fito", fito.dcp.LoadPlanner()), ("dcp", None)):
        st = sharded_tensor.full(spec, (6, 4), -7.0)
        dcp.load({"w": st}, storage_reader=fito.dcp.Reader(root), planner=planner)
        shard = st.local_shards()[0]
        rows = slice(shard.metadata.shard_offsets[0], shard.metadata.shard_offsets[0] + shard.metadata.shard_sizes[0])
        out[name] = bool(torch.equal(shard.tensor, full[rows]))
    emit("sharded_tensor_target", equal=out)


def subgroups(tmp: Path) -> None:
    """Ranks {0, 1} and {2, 3} each save and load on their own subgroup, with a Writer and a Reader built
    without it: the Reader's collectives must run on DCP's ranks, not the world's."""
    halves = [dist.new_group([0, 1], backend="gloo"), dist.new_group([2, 3], backend="gloo")]
    mine = halves[RANK // 2]
    root = tmp / f"sub{RANK // 2}"
    state = {"w": torch.arange(6.0) * (1 + RANK // 2), "step": RANK // 2}
    dcp.save(state, storage_writer=fito.dcp.Writer(root, 1), process_group=mine)
    target = {"w": torch.zeros(6), "step": -1}
    with fito.dcp.Reader(root) as reader:
        dcp.load(target, storage_reader=reader, process_group=mine)
    emit("subgroups", same=bool(torch.equal(target["w"], state["w"])), step=target["step"], loaded_step=reader.loaded_step)


GROUPS = {
    "two": [fsdp_one_argument, plain_one_argument, replicas_differ, flipped_byte, sharded_tensor_target],
    "four": [subgroups],
}


if __name__ == "__main__":
    rank_main(GROUPS, globals(), vars(dcp_ranks))  # dcp_ranks' helpers read its RANK and WORLD
