"""One rank of a multi-rank `fito.Checkpointer` scenario group (started N times by fito.testing.dist.run_ranks).

    python -m sharded_ranks GROUP TMPDIR

Each scenario runs on every rank and prints one JSON line {"scenario", "rank", ...}; a scenario that raises
reports its error instead. The "save" group runs on 2 ranks (saves, and restores on the same world size);
the "restore" group runs on 1, 3 and 4. Oracles (full tensors gathered at save time) are written with
torch.save by the test only, never by fito."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import fito
from fito import knobs
from fito.testing.compare import clone, diff
from fito.testing.scenarios import emit, rank_main
from fito.coord.sqlite import SqliteDecisionStore
from fito.commit.manifests import load_sharded_manifest
from fito.storage.localfs import LocalFS

warnings.filterwarnings("ignore")
RANK = WORLD = 0


# ---------------------------------------------------------------- helpers
def full(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Weights, moments and step counters as full tensors (collective), copied."""
    msd, osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    return clone({"model": msd, "optim": osd["state"]})


def weights(model: torch.nn.Module) -> dict[str, Any]:
    return clone(get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)))


def committed(root: Path) -> list[int]:
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    try:
        return [d.epoch for d in store.committed()]
    finally:
        store.close()


def manifest(root: Path, step: int | None = None) -> Any:
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    d = [d for d in store.committed() if step is None or d.epoch == step][-1]
    store.close()
    return load_sharded_manifest(LocalFS(root, create=False), d)


def failure(exc: BaseException) -> dict[str, Any]:
    return {"raised": type(exc).__name__, "fito": isinstance(exc, fito.FitoError), "message": str(exc)[-1500:]}


# ---------------------------------------------------------------- FSDP2 + AdamW through Checkpointer
def layers(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # 5 output rows: 0 rows on rank 3 of 4, uneven on 2 and 3
    return torch.nn.Sequential(torch.nn.Linear(8, 18), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(18, 5))


def fsdp_state(seed: int) -> dict[str, Any]:
    model = layers(seed)
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in (model[0], model[3]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return with_optimizer(model, seed)


def plain_state(seed: int, ddp: bool) -> dict[str, Any]:
    model = layers(seed)
    return with_optimizer(torch.nn.parallel.DistributedDataParallel(model) if ddp else model, seed)


def with_optimizer(model: torch.nn.Module, seed: int) -> dict[str, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    torch.manual_seed(1000 * seed + RANK)  # dropout differs per rank: the RNG is rank-local state
    return {"model": model, "optim": opt, "sched": torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5),
            "rng": fito.RNGState(), "data": fito.DataPosition(seed=7)}


def train(state: dict[str, Any], steps: int) -> None:
    model, opt, pos = state["model"], state["optim"], state["data"]
    for _ in range(steps):
        g = torch.Generator().manual_seed(pos.epoch * 1000 + pos.index * 10 + RANK)
        model(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        state["sched"].step()
        pos.advance(4, 64)


def fsdp_save(tmp: Path) -> None:
    root = tmp / "fsdp"
    state = fsdp_state(0)
    train(state, 3)
    ck = fito.Checkpointer(root, keep=3)
    ck.save(3, state)
    at3 = full(state["model"], state["optim"])
    train(state, 1)
    handle = ck.save(4, state, blocking=False)  # staged now; training goes on while it commits
    at4 = full(state["model"], state["optim"])
    rng4 = torch.get_rng_state().clone()
    train(state, 2)
    handle.wait()
    at6 = full(state["model"], state["optim"])
    if RANK == 0:
        torch.save({"3": at3, "4": at4}, tmp / "fsdp_oracle.pt")
    torch.save(rng4, tmp / f"fsdp_rng4_rank{RANK}.pt")
    m = manifest(root)
    emit("fsdp_save", committed=ck.committed(), values=sorted(m.values),
         local_types=sorted({type(v).__name__ for v in state["model"].state_dict().values()}))
    ck.close()
    # the same world size: restore the newest into a fresh FSDP2 model, then train on, bit for bit
    fresh = fsdp_state(5)
    step = fito.Checkpointer(root).restore(fresh)
    got4 = full(fresh["model"], fresh["optim"])
    rng_ok = torch.equal(torch.get_rng_state(), rng4)
    sched, data = fresh["sched"].last_epoch, fresh["data"].state_dict()
    train(fresh, 2)
    emit("fsdp_restore_2", step=step, mismatches=diff(got4, at4), rng_ok=rng_ok, sched=sched,
         data=data, continued=diff(full(fresh["model"], fresh["optim"]), at6),
         compared=len(at4["model"]) + sum(len(s) for s in at4["optim"].values()))
    older = fsdp_state(6)
    emit("fsdp_restore_2_step3", step=fito.Checkpointer(root).restore(older, step=3),
         mismatches=diff(full(older["model"], older["optim"]), at3))


def fsdp_restore(tmp: Path) -> None:
    root = tmp / "fsdp"
    want = torch.load(tmp / "fsdp_oracle.pt", weights_only=True)["4"]
    state = fsdp_state(5)
    before = weights(state["model"])  # not full(): reading a fresh optimizer's state dict creates its state
    try:  # the default policy: the rank-local RNG and data position of 2 ranks do not fit this world
        fito.Checkpointer(root).restore(state)
        refused: dict[str, Any] = {"raised": None}
    except BaseException as exc:  # noqa: BLE001
        refused = failure(exc)
    untouched = not state["optim"].state and not diff(weights(state["model"]), before)
    step = fito.Checkpointer(root).restore(state, rank_local={r: r % 2 for r in range(WORLD)})
    saved_rng = torch.load(tmp / f"fsdp_rng4_rank{RANK % 2}.pt", weights_only=True)
    emit(f"fsdp_restore_{WORLD}", step=step, mismatches=diff(full(state["model"], state["optim"]), want),
         refused=refused, untouched=untouched, rng_is_saved_rank=bool(torch.equal(torch.get_rng_state(), saved_rng)),
         sched=state["sched"].last_epoch, data=state["data"].state_dict())
    train(state, 1)  # and it trains on
    # FSDP2 -> DDP (or plain on one rank): the same checkpoint into unsharded parameters
    other = plain_state(6, ddp=WORLD > 1)
    torch.manual_seed(77)
    rng = torch.get_rng_state()
    fito.Checkpointer(root).restore(other, rank_local="reset")
    emit(f"fsdp_to_plain_{WORLD}", mismatches=diff(full(other["model"], other["optim"]), want),
         rng_kept=bool(torch.equal(torch.get_rng_state(), rng)), data=other["data"].state_dict())


# ---------------------------------------------------------------- DDP: one replica's bytes; DDP -> FSDP2
def ddp_model() -> dict[str, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])
    return {"model": torch.nn.parallel.DistributedDataParallel(model), "optim": torch.optim.AdamW(model.parameters())}


def ddp_save(tmp: Path) -> None:
    root = tmp / "ddp"
    state = ddp_model()
    state["model"](torch.randn(4, 256)).sum().backward()
    state["optim"].step()
    ck = fito.Checkpointer(root)
    with knobs.override(FITO_BLOCK_BYTES=8 << 20):  # the default block, not the group's tiny test blocks
        ck.save(1, state)
    dist.barrier()
    replica = sum(t.numel() * t.element_size() for t in state["model"].state_dict().values())
    replica += sum(t.numel() * t.element_size() for s in state["optim"].state.values() for t in s.values())
    attempt = root / manifest(root).objects[0].file.rsplit("/", 1)[0]
    files = {p.name: p.stat().st_size for p in attempt.iterdir()}
    if RANK == 0:
        torch.save(full(state["model"], state["optim"]), tmp / "ddp_oracle.pt")
    else:
        full(state["model"], state["optim"])
    emit("ddp_save", replica=replica, written=sum(files.values()), files=files)


def ddp_to_fsdp(tmp: Path) -> None:
    want = torch.load(tmp / "ddp_oracle.pt", weights_only=True)
    torch.manual_seed(3)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    state = {"model": model, "optim": torch.optim.AdamW(model.parameters())}
    fito.Checkpointer(tmp / "ddp").restore(state)
    emit(f"ddp_to_fsdp_{WORLD}", mismatches=diff(full(model, state["optim"]), want))


# ---------------------------------------------------------------- TP DTensors, uneven shapes
TP = {"rows": ((10, 6), Shard(0)), "cols": ((7, 5), Shard(1)), "rep": ((5, 3), Replicate())}


def tp_value(name: str) -> torch.Tensor:
    shape, _ = TP[name]
    return torch.arange(shape[0] * shape[1], dtype=torch.float32).reshape(shape) * (1 + len(name))


def tp_save(tmp: Path) -> None:
    mesh = init_device_mesh("cpu", (WORLD,))
    state: dict[str, Any] = {n: distribute_tensor(tp_value(n), mesh, [p]) for n, (_, p) in TP.items()}
    state["plain"] = torch.linspace(0, 1, 9, dtype=torch.float64)
    fito.Checkpointer(tmp / "tp").save(1, state)
    emit("tp_save", local=[list(state[n].to_local().shape) for n in TP])


def tp_restore(tmp: Path) -> None:
    mesh = init_device_mesh("cpu", (WORLD,))
    state: dict[str, Any] = {n: distribute_tensor(torch.zeros(s), mesh, [p]) for n, (s, p) in TP.items()}
    state["plain"] = torch.zeros(9, dtype=torch.float64)
    fito.Checkpointer(tmp / "tp").restore(state)
    equal = {n: bool(torch.equal(state[n].full_tensor(), tp_value(n))) for n in TP}
    plain: dict[str, Any] = {n: torch.zeros(s) for n, (s, _) in TP.items()}
    plain["plain"] = torch.zeros(9, dtype=torch.float64)
    fito.Checkpointer(tmp / "tp").restore(plain)
    equal |= {f"{n} as plain": bool(torch.equal(plain[n], tp_value(n))) for n in TP}
    equal["plain"] = bool(torch.equal(state["plain"], torch.linspace(0, 1, 9, dtype=torch.float64)))
    emit(f"tp_restore_{WORLD}", equal=equal, local_rows=list(state["rows"].to_local().shape))


# ---------------------------------------------------------------- rank-local entries and their policies
def local_state(fill: int) -> dict[str, Any]:
    sched_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return {"seen": {"rank": RANK * fill, "ids": torch.full((3,), float(RANK * fill))},  # differs: found by hashing
            "data": fito.DataPosition(epoch=fill, index=RANK * fill),  # declared rank-local
            "sched": torch.optim.lr_scheduler.StepLR(sched_opt, 3), "shared": torch.full((4,), float(fill))}


def rank_local_save(tmp: Path) -> None:
    state = local_state(1)
    for _ in range(2):
        state["sched"].optimizer.step()
        state["sched"].step()
    fito.Checkpointer(tmp / "local").save(1, state)
    m = manifest(tmp / "local")
    emit("rank_local_save", values=sorted(m.values), tensors=sorted(m.tensors))


def rank_local_restore(tmp: Path) -> None:
    root = tmp / "local"
    out: dict[str, Any] = {}
    state = local_state(-5)
    try:
        fito.Checkpointer(root).restore(state)
        out["error"] = None
    except fito.StateMismatchError as exc:
        out["error"] = str(exc)
    out["untouched"] = state["data"].state_dict() == {"epoch": -5, "index": -5 * RANK, "seed": 0} and state["shared"].eq(-5).all().item()
    fito.Checkpointer(root).restore(state, rank_local="reset")
    out["reset"] = {"data": state["data"].state_dict(), "seen": state["seen"]["rank"], "shared": state["shared"].tolist(),
                    "sched": state["sched"].last_epoch}
    state = local_state(-5)
    fito.Checkpointer(root).restore(state, rank_local={r: (r + 1) % 2 for r in range(WORLD)})
    out["mapped"] = {"data": state["data"].state_dict(), "seen": state["seen"]["rank"], "ids": state["seen"]["ids"].tolist()}
    state = local_state(-5)
    fito.Checkpointer(root).restore(state, rank_local={"data": "reset", "seen": {r: 0 for r in range(WORLD)}})
    out["per_entry"] = {"data": state["data"].state_dict(), "seen": state["seen"]["rank"]}
    emit(f"rank_local_{WORLD}", **out)


# ---------------------------------------------------------------- one flipped bit: every rank refuses
def flipped_bit(tmp: Path) -> None:
    root = tmp / "flip"
    state = fsdp_state(0)
    train(state, 2)
    fito.Checkpointer(root).save(2, state)
    dist.barrier()
    if RANK == 0:
        m = manifest(root)
        piece = next(c.piece for t in m.tensors.values() for c in t.chunks if c.piece.rank == 1 and c.piece.length > 8)
        with open(root / m.objects[1].file, "r+b") as f:
            f.seek(piece.offset + piece.length // 2)
            byte = f.read(1)[0]
            f.seek(piece.offset + piece.length // 2)
            f.write(bytes([byte ^ 0x04]))
    dist.barrier()
    target = fsdp_state(9)
    before = {k: v.to_local().clone() for k, v in target["model"].state_dict().items()}
    rng, data, lr = torch.get_rng_state().clone(), target["data"].state_dict(), target["optim"].param_groups[0]["lr"]
    try:
        fito.Checkpointer(root).restore(target)
        out: dict[str, Any] = {"raised": None}
    except BaseException as exc:  # noqa: BLE001
        out = failure(exc)
    out["untouched"] = (all(torch.equal(v.to_local(), before[k]) for k, v in target["model"].state_dict().items())
                        and torch.equal(torch.get_rng_state(), rng) and target["data"].state_dict() == data
                        and target["sched"].last_epoch == 0)
    out["optimizer_fresh"] = (not target["optim"].state and target["optim"].param_groups[0]["lr"] == lr
                              and all(p.grad is None for p in target["model"].parameters()))
    emit("flipped_bit", **out)


# ---------------------------------------------------------------- HF GPT-2 (tied weights) under FSDP2
def gpt2(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=101, n_positions=16, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, loss_type="ForCausalLM")
    model = GPT2LMHeadModel(config)
    mesh = init_device_mesh("cpu", (WORLD,))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def gpt2_save(tmp: Path) -> None:
    model, opt = gpt2(0)
    tokens = torch.randint(0, 101, (2, 16), generator=torch.Generator().manual_seed(RANK))
    model(input_ids=tokens, labels=tokens).loss.backward()
    opt.step()
    opt.zero_grad()
    fito.Checkpointer(tmp / "gpt2").save(1, {"model": model, "optim": opt})
    want = full(model, opt)
    if RANK == 0:
        torch.save(want, tmp / "gpt2_oracle.pt")
    fresh, fresh_opt = gpt2(1)
    fito.Checkpointer(tmp / "gpt2").restore({"model": fresh, "optim": fresh_opt})
    emit("gpt2_2", tied=fresh.lm_head.weight is fresh.transformer.wte.weight, mismatches=diff(full(fresh, fresh_opt), want),
         keys=len(want["model"]))


def gpt2_restore(tmp: Path) -> None:
    want = torch.load(tmp / "gpt2_oracle.pt", weights_only=True)
    model, opt = gpt2(1)
    fito.Checkpointer(tmp / "gpt2").restore({"model": model, "optim": opt})
    emit(f"gpt2_{WORLD}", tied=model.lm_head.weight is model.transformer.wte.weight, mismatches=diff(full(model, opt), want))


# ---------------------------------------------------------------- groups
GROUPS: dict[str, list[Callable[[Path], None]]] = {
    "save": [fsdp_save, ddp_save, tp_save, rank_local_save, flipped_bit, gpt2_save],
    "restore": [fsdp_restore, ddp_to_fsdp, tp_restore, rank_local_restore],
    "restore+gpt2": [fsdp_restore, ddp_to_fsdp, tp_restore, rank_local_restore, gpt2_restore],
}


if __name__ == "__main__":
    rank_main(GROUPS, globals())
