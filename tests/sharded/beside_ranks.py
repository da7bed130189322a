"""One rank of the issue-21 scenarios (started N times by fito.testing.dist.run_ranks):

    python -m beside_ranks GROUP TMPDIR

- a tensor-parallel model without FSDP (parallelize_module, ColwiseParallel/RowwiseParallel) + AdamW, saved
  and restored on the same world size (1, 2, 4 ranks), and saved on 2 restored on 1; bit for bit, and two
  more steps equal the uninterrupted run's;
- fp32 master DTensor Parameters of a bf16 TP model, outside the state's modules: saved with the optimizer,
  restored in place on 2 ranks and from 2 onto 1;
- `CheckpointManager.resume(rank_local=...)` after a world-size change (2 ranks -> 1);
- docs/dcp.md's `dcp.async_save` example (a process group of its own) beside training's collectives.
Oracles (full tensors) are written with torch.save by the test only, never by fito."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import fito
from fito.testing.compare import clone, diff
from fito.testing.scenarios import emit, rank_main

warnings.filterwarnings("ignore")
RANK = WORLD = 0


def tp_state(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    parallelize_module(model, init_device_mesh("cpu", (WORLD,)), {"0": ColwiseParallel(), "2": RowwiseParallel()})
    return {"model": model, "optim": torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)}


def train(state: dict[str, Any], steps: range) -> None:
    for i in steps:  # the same input on every rank: tensor parallelism splits the layers, not the batch
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(i))
        state["model"](x).pow(2).mean().backward()
        state["optim"].step()
        state["optim"].zero_grad()


def full(state: dict[str, Any]) -> dict[str, Any]:
    msd, osd = get_state_dict(state["model"], state["optim"], options=StateDictOptions(full_state_dict=True))
    return clone({"model": msd, "optim": osd["state"]})


def tp_same_world(tmp: Path) -> None:
    root = tmp / f"tp{WORLD}"
    state = tp_state(0)
    train(state, range(2))
    fito.Checkpointer(root).save(2, state)
    at2 = full(state)
    train(state, range(2, 4))
    at4 = full(state)
    if RANK == 0:
        torch.save(at2, tmp / f"tp{WORLD}_oracle.pt")
    fresh = tp_state(1)
    step = fito.Checkpointer(root).restore(fresh)
    got = full(fresh)
    train(fresh, range(2, 4))
    emit(f"tp_{WORLD}", step=step, mismatches=diff(got, at2), continued=diff(full(fresh), at4),
         compared=len(at2["model"]) + sum(len(s) for s in at2["optim"].values()),
         dtensors=sorted({type(p).__name__ for p in fresh["model"].parameters()}))


def tp_from_2(tmp: Path) -> None:
    state = tp_state(3)
    step = fito.Checkpointer(tmp / "tp2").restore(state)
    emit(f"tp_2_to_{WORLD}", step=step, mismatches=diff(full(state), torch.load(tmp / "tp2_oracle.pt", weights_only=True)))


def tp_masters_state(seed: int) -> tuple[dict[str, Any], list[torch.nn.Parameter]]:
    """A bf16 TP model whose AdamW steps fp32 master DTensor Parameters outside the state's modules."""
    state = tp_state(seed)
    model = state["model"].to(torch.bfloat16)
    masters = [torch.nn.Parameter(p.detach().float()) for p in model.parameters()]
    return {"model": model, "optim": torch.optim.AdamW(masters, lr=1e-2)}, masters


def train_masters(state: dict[str, Any], masters: list[torch.nn.Parameter], steps: range) -> None:
    model = state["model"]
    for i in steps:
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(i)).bfloat16()
        model(x).float().pow(2).mean().backward()
        for p, m in zip(model.parameters(), masters):
            m.grad, p.grad = p.grad.float(), None
        state["optim"].step()
        state["optim"].zero_grad()
        with torch.no_grad():
            for p, m in zip(model.parameters(), masters):
                p.copy_(m)


def full_masters(masters: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [m.full_tensor().clone() for m in masters]


def tp_masters(tmp: Path) -> None:
    state, masters = tp_masters_state(0)
    train_masters(state, masters, range(2))
    fito.Checkpointer(tmp / "tp_masters").save(2, state)
    at2 = full_masters(masters)
    train_masters(state, masters, range(2, 4))
    if RANK == 0:
        torch.save(at2, tmp / "tp_masters_oracle.pt")
    fresh, fresh_masters = tp_masters_state(1)
    fito.Checkpointer(tmp / "tp_masters").restore(fresh)
    got = full_masters(fresh_masters)
    train_masters(fresh, fresh_masters, range(2, 4))
    emit(f"tp_masters_{WORLD}", types=sorted({type(m).__name__ for m in fresh_masters}), mismatches=diff(got, at2),
         continued=diff(full_masters(fresh_masters), full_masters(masters)))


def tp_masters_from_2(tmp: Path) -> None:
    state, masters = tp_masters_state(3)
    fito.Checkpointer(tmp / "tp_masters").restore(state)
    emit(f"tp_masters_2_to_{WORLD}", mismatches=diff(full_masters(masters),
                                                      torch.load(tmp / "tp_masters_oracle.pt", weights_only=True)))


def manager_state(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    return {"model": model, "optim": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            "rng": fito.RNGState(), "data": fito.DataPosition(index=10 * RANK + 1, seed=3)}


def manager_save(tmp: Path) -> None:
    state = manager_state(0)
    torch.manual_seed(100 + RANK)
    with fito.CheckpointManager(tmp / "mgr", state, every_steps=2, blocking=True) as mgr:
        mgr.step(2)
    if RANK == 0:
        torch.save(clone(state["model"].state_dict()), tmp / "mgr_oracle.pt")
    emit("manager_save", committed=mgr.checkpointer.committed() if RANK == 0 else None)


def manager_resume(tmp: Path) -> None:
    want = torch.load(tmp / "mgr_oracle.pt", weights_only=True)
    state = manager_state(1)
    with fito.CheckpointManager(tmp / "mgr", state, every_steps=2) as mgr:
        try:
            mgr.resume()
            refused: dict[str, Any] = {"raised": None}
        except fito.FitoError as exc:
            refused = {"raised": type(exc).__name__, "message": str(exc)[-800:]}
        kept = state["data"].state_dict()
        reset = mgr.resume(rank_local="reset")
        reset_data = state["data"].state_dict()
        mapped = mgr.resume(rank_local={0: 1}, step=2)
    emit(f"manager_resume_{WORLD}", refused=refused, reset=reset, reset_kept=reset_data == kept, mapped=mapped,
         data=state["data"].state_dict(), mismatches=diff(clone(state["model"].state_dict()), want))


def dcp_async_own_group(tmp: Path) -> None:
    """docs/dcp.md's async_save example: a group of its own for the save, while training's collectives go on
    on the default group (on the default gloo group too, the job dies with SIGABRT, as with stock DCP)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    import fito.dcp

    ckpt_group = dist.new_group(backend="gloo")
    state = {"w": torch.arange(12.0).reshape(3, 4), "step": torch.tensor(3)}
    fut = dcp.async_save(state, storage_writer=fito.dcp.Writer(tmp / "dcp_async", 3),
                         planner=fito.dcp.SavePlanner(), process_group=ckpt_group)
    total = torch.zeros(1)
    for _ in range(50):  # the training loop's collectives, on the default group, while the save runs
        grad = torch.ones(1)
        dist.all_reduce(grad)
        total += grad
    fut.result()
    target = {"w": torch.zeros(3, 4), "step": torch.tensor(0)}
    with fito.dcp.Reader(tmp / "dcp_async") as reader:
        dcp.load(target, storage_reader=reader, planner=fito.dcp.LoadPlanner())
    dist.destroy_process_group(ckpt_group)
    emit("dcp_async", step=reader.loaded_step, mismatches=diff(target, state), total=float(total))


GROUPS: dict[str, list[Callable[[Path], None]]] = {
    "w2": [tp_same_world, manager_save, dcp_async_own_group, tp_masters],
    "w1": [tp_same_world, tp_from_2, manager_resume, tp_masters_from_2],
    "w4": [tp_same_world],
}


if __name__ == "__main__":
    rank_main(GROUPS, globals())
