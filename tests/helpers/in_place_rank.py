"""One rank of the restore-path tests of issue 19 (tests/test_restore_in_place.py).
Usage: python -m in_place_rank ROOT SCENARIO; prints one JSON line.
- flip: save, then restore with a byte of every object flipped on disk after the reads were verified and
  voted (fito.ckpt.sharded_restore.after_verify); then restore again from the now damaged files.
- fsdp: an FSDP2 module loads by trading bytes with its targets (no snapshot), and is put back when a later
  entry refuses.
- memory: peak extra RSS of restoring a 256 MB FSDP2 model + AdamW into a fresh model + fresh AdamW."""
from __future__ import annotations

import ctypes
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import fito
from fito.ckpt import sharded_restore
from fito.coord.sqlite import SqliteDecisionStore
from fito.commit.manifests import load_sharded_manifest
from fito.storage.localfs import LocalFS


def plain(seed: int, width: int = 64, layers: int = 2) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def sharded(seed: int, width: int = 64, layers: int = 2) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model, _ = plain(seed, width, layers)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, width: int = 64) -> None:
    model(torch.randn(3, width)).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def values(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    out = [local(p.detach()).clone() for p in model.parameters()]
    return out + [local(v).clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            local(p).add_(1.0)


def flip_every_object(root: Path) -> int:
    """Flip one payload byte in every rank's object of the newest committed step; returns how many."""
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    d = store.committed()[-1]
    store.close()
    m = load_sharded_manifest(LocalFS(root, create=False), d)
    flipped = 0
    for obj in m.objects:
        piece = max((c.piece for t in m.tensors.values() for c in t.chunks if c.piece.rank == obj.rank),
                    key=lambda p: p.length)
        with open(root / obj.file, "r+b") as f:
            f.seek(piece.offset + piece.length // 2)
            byte = f.read(1)[0]
            f.seek(piece.offset + piece.length // 2)
            f.write(bytes([byte ^ 0x10]))
        flipped += 1
    return flipped


def flip(root: Path, rank: int) -> dict[str, Any]:
    model, opt = plain(0)
    step(model, opt)
    with fito.Checkpointer(root) as ck:
        ck.save(1, {"model": model, "optim": opt})
    saved = values(model, opt)
    perturb(model)
    flipped: list[int] = []

    def between() -> None:  # every rank has verified and voted; now the files change under the restore
        dist.barrier()
        if rank == 0:
            flipped.append(flip_every_object(root))
        dist.barrier()

    sharded_restore.after_verify = between
    try:
        with fito.Checkpointer(root) as ck:
            got = ck.restore({"model": model, "optim": opt})
    finally:
        sharded_restore.after_verify = None
    out: dict[str, Any] = {"step": got, "applied_verified": same(values(model, opt), saved), "flipped": flipped}
    perturb(model)
    before = values(model, opt)
    try:
        with fito.Checkpointer(root) as ck:
            ck.restore({"model": model, "optim": opt})
        out["second"] = None
    except fito.FitoError as exc:
        out["second"] = type(exc).__name__
    out["untouched"] = same(values(model, opt), before)
    return out


class Refuses:
    def state_dict(self) -> dict[str, int]:
        return {"x": 1}

    def load_state_dict(self, sd: dict[str, int]) -> None:
        raise RuntimeError("refused")


def fsdp(root: Path) -> dict[str, Any]:
    model, opt = sharded(0)
    step(model, opt)
    with fito.Checkpointer(root / "ok") as ck:
        ck.save(1, {"model": model, "optim": opt})
    with fito.Checkpointer(root / "refuses") as ck:
        ck.save(1, {"model": model, "later": Refuses()})
    saved = values(model, opt)
    target, topt = sharded(1)
    step(target, topt)
    ptrs = [local(p).data_ptr() for p in target.parameters()]
    from fito.ckpt.exchange import sharded_exchangeable  # here: the other scenarios also run on older fito
    out: dict[str, Any] = {"pairs": sharded_exchangeable(target, target.state_dict()) is not None}
    with fito.Checkpointer(root / "ok") as ck:
        ck.restore({"model": target, "optim": topt})
    out["restored"] = same(values(target, topt), saved)
    out["in_place"] = [local(p).data_ptr() for p in target.parameters()] == ptrs
    perturb(target)
    before = [local(p.detach()).clone() for p in target.parameters()]
    try:
        with fito.Checkpointer(root / "refuses") as ck:
            ck.restore({"model": target, "later": Refuses()})
        out["raised"] = None
    except fito.FitoError as exc:
        out["raised"] = type(exc).__name__
    out["put_back"] = same([local(p.detach()) for p in target.parameters()], before)
    out["still_in_place"] = [local(p).data_ptr() for p in target.parameters()] == ptrs
    step(target, topt)  # FSDP2 still trains on the restored module
    hooked, hopt = sharded(2)  # a load hook FSDP2 did not register: not a plain copy, so the snapshot path
    hooked[0].register_load_state_dict_post_hook(lambda module, keys: None)
    out["foreign_hook_pairs"] = sharded_exchangeable(hooked, hooked.state_dict()) is not None
    with fito.Checkpointer(root / "ok") as ck:
        ck.restore({"model": hooked, "optim": hopt})
    out["foreign_hook_restored"] = same(values(hooked, hopt), saved)
    return out


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory(root: Path) -> dict[str, Any]:
    width, layers = 2048, 5  # 84 MB of weights: with AdamW's two moments a 252 MB state
    model, opt = sharded(0, width, layers)
    step(model, opt, width)
    with fito.Checkpointer(root) as ck:
        ck.save(1, {"model": model, "optim": opt})
    state = sum(t.numel() * t.element_size() for t in values(model, opt))
    del model, opt
    target, topt = sharded(1, width, layers)  # a fresh process's model and a fresh AdamW
    libc = ctypes.CDLL(None)
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5\n")  # VmHWM := VmRSS
    with fito.Checkpointer(root) as ck:
        ck.restore({"model": target, "optim": topt})
    peak = rss_kb("VmHWM") * 1024
    libc.malloc_trim(0)
    after = rss_kb("VmRSS") * 1024  # the restored state is resident: what the peak held beyond it is extra
    return {"state": state, "extra": peak - after}


def main() -> None:
    root, scenario = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    out = {"flip": lambda: flip(root, rank), "fsdp": lambda: fsdp(root), "memory": lambda: memory(root)}[scenario]()
    print(json.dumps({"rank": rank, **out}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
