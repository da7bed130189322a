"""Sharded state (issue 10): fito.Checkpointer against stock torch.distributed.checkpoint (DCP), torch.save /
torch.load and raw I/O, side by side in one run.

    PYTHONPATH=$PWD/src python3 benchmarks/sharded.py [--repeats 3] [--quick] [--parts ddp,fsdp,single,many]

Parts (each one table; within every repeat each method runs once, in an order rotated per repeat, so noise
from other jobs on this shared machine hits all methods alike; medians and min-max are reported):
  ddp     2 gloo ranks, DDP-replicated Linear stack + AdamW (~252 MB state): save time and bytes written.
  fsdp    FSDP2 (fully_shard per layer and root) + AdamW, same size: save on 2 ranks, restore on 2 ranks,
          and restore of the 2-rank checkpoints by new process groups of 1 and of 4 ranks (resharding).
  single  one process, Linear(4096, 4096) x 5 + AdamW (1.01 GB): save vs raw durable write, torch.save and
          DCP save; restore into a fresh model + fresh AdamW, each in a new process, vs DCP load and torch.load.
  many    one process, a dict of 20,000 tensors of 256 float32: save and restore vs torch.save/torch.load, DCP.
DCP is used as documented: get_state_dict, dcp.save(FileSystemWriter); get_state_dict, dcp.load(
FileSystemReader), set_state_dict. Writes benchmarks/results/sharded.md (unless --no-write).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import bench_io  # beside this script
from bench_io import CHUNK, fsync_path
from tc_peer import tc_load, tc_manager, tc_missing  # torch_checkpointing, the third peer

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "sharded.md"
MB = 10**6
WARM = " (warm cache)"  # a restore row read with the checkpoint's bytes still in the page cache
warnings.filterwarnings("ignore")


# ---------------------------------------------------------------- shared helpers
def rotated(names: list[str], rep: int) -> list[str]:
    k = rep % len(names)
    return names[k:] + names[:k]


def tree_bytes(d: Path) -> tuple[int, int]:
    """Bytes and files under `d`, the decision log (SQLite, a fixed few tens of KB) excluded."""
    files = [p for p in d.rglob("*") if p.is_file() and not p.name.startswith("decisions.sqlite")]
    return sum(p.stat().st_size for p in files), len(files)


def drop_caches(enabled: bool) -> None:
    """Write back, then (when wanted) drop the page cache so the timed read hits the disk."""
    if enabled:
        bench_io.drop_caches()
    else:
        os.sync()


def linear_stack(layers: int, width: int, seed: int):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])


def checksum(model, opt) -> list[float]:  # type: ignore[no-untyped-def]
    """float64 sums of this process's (local shards of) weights, exp_avg and exp_avg_sq, summed over ranks."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if isinstance(t, DTensor) else t

    s = torch.zeros(3, dtype=torch.float64)
    for p in model.parameters():
        s[0] += local(p.detach()).double().sum()
        st = opt.state.get(p, {})
        if st:
            s[1] += local(st["exp_avg"]).double().sum()
            s[2] += local(st["exp_avg_sq"]).double().sum()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(s)
    return s.tolist()


def same_sums(got: list[float], want: list[float], what: str) -> None:
    for g, w in zip(got, want):
        if abs(g - w) > 1e-6 * max(abs(w), 1e-30):
            raise AssertionError(f"{what}: restored state differs from the saved one ({got} vs {want})")


# ---------------------------------------------------------------- multi-rank parts (python -m sharded --rank PART)
def rank_main(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from datetime import timedelta
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import fito
    import fito.ckpt.checkpointer  # noqa: F401  (DCP's modules are imported above: neither pays imports when timed)

    for lazy in ("fito.ckpt.sharded_save", "fito.ckpt.sharded_restore"):  # imported by the first save/restore
        try:
            __import__(lazy)
        except ImportError:
            pass
    dist.init_process_group("gloo", timeout=timedelta(seconds=600))
    rank, world = dist.get_rank(), dist.get_world_size()
    base, layers, width = Path(args.dir), args.layers, args.width
    out: dict[str, Any] = {"world": world}

    def timed(fn: Callable[[], object]) -> float:
        dist.barrier()
        t = time.perf_counter()
        fn()
        dist.barrier()
        return time.perf_counter() - t

    def add(row: str, v: float) -> None:
        out.setdefault(row, []).append(v)

    def fsdp_model(seed: int):  # type: ignore[no-untyped-def]
        model = linear_stack(layers, width, seed)
        mesh = init_device_mesh("cpu", (world,))
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def trained(model):  # type: ignore[no-untyped-def]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.randn(2, width)).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return opt

    def dcp_save(model, opt, d: Path) -> None:  # type: ignore[no-untyped-def]
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, storage_writer=FileSystemWriter(d))

    def fito_save(model, opt, d: Path) -> float:  # type: ignore[no-untyped-def]
        ck = fito.Checkpointer(d, progress=False)  # made once per job: outside the timing
        try:
            return timed(lambda: ck.save(1, {"model": model, "optim": opt}))
        finally:
            ck.close()

    def tc_save(model, opt, d: Path, reshard: bool) -> float:  # type: ignore[no-untyped-def]
        mgr = tc_manager(reshard)  # made once per job: outside the timing
        try:
            return timed(lambda: mgr.save(str(d), {"model": model.state_dict(), "optim": opt.state_dict()}))
        finally:
            mgr.close()

    def dcp_load(model, opt, d: Path) -> None:  # type: ignore[no-untyped-def]
        msd, osd = get_state_dict(model, opt)  # on a fresh optimizer: DCP's zero-gradient step makes its moments
        sd = {"model": msd, "optim": osd}
        dcp.load(sd, storage_reader=FileSystemReader(d))
        set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])

    def fito_load(model, opt, d: Path) -> None:  # type: ignore[no-untyped-def]
        with fito.Checkpointer(d, progress=False) as ck:
            assert ck.restore({"model": model, "optim": opt}) == 1

    def restore_round(tag: str, rep: int, want: list[float]) -> None:
        """Each method restores twice: page cache warm (its files were just written or read), then cold."""
        for kind in rotated(["DCP", "fito", *(peers if world == 2 else [])], rep):  # tc: no resharding on CPU
            for cache in ("warm", "cold"):
                model = fsdp_model(seed=1)  # fresh weights, fresh AdamW without moments (not timed)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
                if rank == 0:  # no write-back of the save under the timed read; cold: dropped when allowed
                    drop_caches(args.drop and cache == "cold")
                fn = {"DCP": dcp_load, "fito": fito_load, "tc": tc_load}[kind]
                add(f"{tag}{'' if cache == 'cold' else '-warm'}/{kind}", timed(lambda: fn(model, opt, base / f"fsdp-{kind}")))
                same_sums(checksum(model, opt), want, f"{kind} restore {tag} ({cache} page cache)")
                del model, opt

    peers = ["tc"] if tc_missing() is None else []
    if args.rank == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(linear_stack(layers, width, seed=0))
        opt = trained(model)
        out["replica_bytes"] = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + sum(
            t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
        for rep in range(args.repeats):
            for kind in rotated(["DCP", "fito", *peers], rep):
                d = base / f"ddp-{kind}"
                add(f"save/{kind}", fito_save(model, opt, d) if kind == "fito" else tc_save(model, opt, d, False)
                    if kind == "tc" else timed(lambda: dcp_save(model, opt, d)))
                if rank == 0:
                    nbytes, nfiles = tree_bytes(d)
                    add(f"bytes/{kind}", nbytes)
                    add(f"files/{kind}", nfiles)
                    shutil.rmtree(d)
                dist.barrier()
    elif args.rank == "fsdp-save":
        model = fsdp_model(seed=0)
        opt = trained(model)
        want = out["checksum"] = checksum(model, opt)
        for rep in range(args.repeats):
            for kind in rotated(["DCP", "fito", *peers], rep):
                d = base / f"fsdp-{kind}"
                if rank == 0:
                    shutil.rmtree(d, ignore_errors=True)  # the last repeat's checkpoints stay for the reshard groups
                dist.barrier()
                add(f"save/{kind}", fito_save(model, opt, d) if kind == "fito" else tc_save(model, opt, d, False)
                    if kind == "tc" else timed(lambda: dcp_save(model, opt, d)))
            restore_round("restore", rep, want)
        del model, opt
    elif args.rank == "fsdp-restore":
        want = json.loads(args.want)
        for rep in range(args.repeats):
            restore_round("restore", rep, want)
    if rank == 0:
        print(json.dumps(out), flush=True)
    dist.destroy_process_group()


def ranks(part: str, world: int, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    from fito.testing.dist import run_ranks

    cmd = ["--rank", part, "--cache", args.cache, "--dir", args.dir, "--repeats", str(args.repeats), "--layers", str(args.layers),
           "--width", str(args.width), *extra]
    t = time.perf_counter()
    results = run_ranks("sharded", cmd, world, timeout=900, path=[str(HERE)])
    for r in results:
        if r.returncode:
            sys.exit(f"{part} on {world} ranks: rank {r.rank} failed (rc {r.returncode}):\n{r.stderr[-4000:]}")
    print(f"[{part} x{world}] done in {time.perf_counter() - t:.0f} s", flush=True)
    return json.loads(results[0].stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- single process, 1 GB
SINGLE = ["raw durable write", "raw durable write, early write-back", "torch.save", "DCP save", "fito save"]
RESTORES = ["raw read, fresh memory", "torch.load", "DCP load", "fito restore"]
if tc_missing() is None:
    SINGLE.append("tc save")
    RESTORES.append("tc load")


def single_save(args: argparse.Namespace) -> None:
    """Saves interleaved per repeat; the last repeat's files stay for the restore children."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict

    import fito
    from fito import knobs

    base = Path(args.dir) / "single"
    model = linear_stack(args.single_layers, 4096, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4096)).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    tensors = [t for p in model.parameters() for t in (p.data, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)

    def raw(d: Path, writeback: int = 0) -> None:
        bench_io.write_durably(d / "state.bin", (memoryview(t.reshape(-1).view(torch.uint8).numpy()) for t in tensors), writeback)

    def tsave(d: Path) -> None:
        with open(d / "state.pt", "wb") as f:
            torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_path(d, directory=True)

    def dsave(d: Path) -> None:
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, storage_writer=FileSystemWriter(d))

    samples: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        for name in rotated(SINGLE, rep):
            d = base / name.split()[0]
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            os.sync()  # the previous method's write-back is not charged to this one
            if name == "tc save":
                mgr = tc_manager()
                t = time.perf_counter()
                mgr.save(str(d / "ck"), {"model": model.state_dict(), "optim": opt.state_dict()})
                samples.setdefault(name, []).append(time.perf_counter() - t)
                mgr.close()
                continue
            if name == "fito save":
                ck = fito.Checkpointer(d / "ck", progress=False)
                t = time.perf_counter()
                ck.save(1, {"model": model, "optim": opt})
                samples.setdefault(name, []).append(time.perf_counter() - t)
                ck.close()
                continue
            fn = {"raw durable write": raw, "raw durable write, early write-back": lambda d: raw(d, knobs.writeback_bytes()),
                  "torch.save": tsave, "DCP save": dsave}[name]
            t = time.perf_counter()
            fn(d)
            samples.setdefault(name, []).append(time.perf_counter() - t)
    print(json.dumps({"nbytes": nbytes, "checksum": checksum(model, opt), **samples}), flush=True)


def restore_child(method: str, args: argparse.Namespace) -> None:
    """One restore into a fresh model + fresh AdamW, in this new process; imports are reported apart.

    With --code warm (the default) the process first restores the same checkpoint once, untimed, into another
    fresh model, then drops the page cache again: the timed restore reads its data from the disk while the
    library code it runs is already paged in (a process started after a drop would otherwise page in, during
    the timing, the parts of libtorch that this method uses and an earlier one did not)."""
    import torch

    base = Path(args.dir) / "single"
    t0 = time.perf_counter()
    if method == "fito restore":
        import fito
        import fito.ckpt.checkpointer  # noqa: F401
        import fito.ckpt.sharded_restore  # noqa: F401  (imported by the first restore; DCP's import is apart too)
    elif method == "DCP load":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    elif method == "tc load":
        import torch_checkpointing  # noqa: F401
    imported = time.perf_counter() - t0

    def fresh():  # type: ignore[no-untyped-def]
        model = linear_stack(args.single_layers, 4096, seed=1)  # other weights than saved, no optimizer state
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    def run(model, opt) -> None:  # type: ignore[no-untyped-def]
        if method == "fito restore":
            with fito.Checkpointer(base / "fito" / "ck", progress=False) as ck:
                assert ck.restore({"model": model, "optim": opt}) == 1
        elif method == "DCP load":
            msd, osd = get_state_dict(model, opt)
            sd = {"model": msd, "optim": osd}
            dcp.load(sd, storage_reader=FileSystemReader(base / "DCP"))
            set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        elif method == "tc load":
            tc_load(model, opt, base / "tc" / "ck")
        elif method == "torch.load":
            sd = torch.load(base / "torch.save" / "state.pt", weights_only=True)
            model.load_state_dict(sd["model"])
            opt.load_state_dict(sd["optim"])
        else:  # the floor: the raw file read into newly allocated memory (its first-touch page faults included)
            path = base / "raw" / "state.bin"
            buf = torch.empty(path.stat().st_size, dtype=torch.uint8)
            mv = memoryview(buf.numpy())
            with open(path, "rb", buffering=0) as f:
                while len(mv):
                    mv = mv[f.readinto(mv[:CHUNK]):]

    if args.code == "warm":
        run(*fresh())
        drop_caches(args.drop)
    model, opt = fresh()
    t1 = time.perf_counter()
    run(model, opt)
    t2 = time.perf_counter()
    sums = checksum(model, opt) if method != "raw read, fresh memory" else None
    print(json.dumps({"import": imported, "restore": t2 - t1, "checksum": sums}), flush=True)


def single(args: argparse.Namespace) -> dict[str, Any]:
    me = [sys.executable, str(Path(__file__).resolve()), "--cache", args.cache, "--dir", args.dir, "--single-layers", str(args.single_layers),
          "--repeats", str(args.repeats), "--code", args.code]
    t = time.perf_counter()
    out = json.loads(subprocess.run([*me, "--child", "single-save"], check=True, capture_output=True, text=True,
                                    env=os.environ).stdout.strip().splitlines()[-1])
    for rep in range(args.repeats):
        for method in rotated(RESTORES, rep):
            # warm: the files in the page cache (saved, or read just before); cold: as --cache says
            for row, cache in ((f"{method}{WARM}", "warm"), (method, args.cache)):
                drop_caches(args.drop and cache == "drop")
                child = [*me[:me.index("--cache") + 1], cache, *me[me.index("--cache") + 2:]]
                r = json.loads(subprocess.run([*child, "--child", method], check=True, capture_output=True, text=True,
                                              env=os.environ).stdout.strip().splitlines()[-1])
                if r["checksum"] is not None:
                    same_sums(r["checksum"], out["checksum"], row)
                out.setdefault(row, []).append(r["restore"])
                out.setdefault(f"import/{row}", []).append(r["import"])
    out["code"] = args.code
    print(f"[single] done in {time.perf_counter() - t:.0f} s", flush=True)
    shutil.rmtree(Path(args.dir) / "single", ignore_errors=True)
    return out


# ---------------------------------------------------------------- many small tensors
MANY = ["torch.save", "torch.save (no fsync)", "DCP", "fito"]
if tc_missing() is None:
    MANY.append("tc")


def many(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

    import fito

    torch.manual_seed(0)
    data = {f"t{i}": torch.randn(256) for i in range(args.many)}
    base = Path(args.dir) / "many"
    out: dict[str, Any] = {"count": args.many}

    def fresh() -> dict[str, torch.Tensor]:
        return {k: torch.zeros(256) for k in data}

    def check(got: dict[str, torch.Tensor], what: str) -> None:
        if len(got) != len(data) or not all(torch.equal(got[k], v) for k, v in data.items()):
            raise AssertionError(f"{what}: restored tensors differ from the saved ones")

    def run(name: str, d: Path) -> tuple[float, float | None, float | None]:
        """(save s, restore s with the page cache warm, then cold; None where not restored); restore targets
        are made outside the timing."""
        load: Callable[[], dict[str, torch.Tensor]]
        if name.startswith("torch.save"):
            t0 = time.perf_counter()
            with open(d / "state.pt", "wb") as f:
                torch.save(data, f)
                if name == "torch.save":
                    f.flush()
                    os.fsync(f.fileno())
            if name == "torch.save":
                fsync_path(d, directory=True)
            t_save = time.perf_counter() - t0
            if name != "torch.save":
                return t_save, None, None
            load = lambda: torch.load(d / "state.pt", weights_only=True)  # noqa: E731
        elif name == "DCP":
            t0 = time.perf_counter()
            dcp.save(data, storage_writer=FileSystemWriter(d))
            t_save = time.perf_counter() - t0

            def load() -> dict[str, torch.Tensor]:
                got = targets.pop()
                dcp.load(got, storage_reader=FileSystemReader(d))
                return got
        elif name == "tc":
            mgr = tc_manager()  # made once per job: outside the timing
            t0 = time.perf_counter()
            mgr.save(str(d / "ck"), {"tensors": data})
            t_save = time.perf_counter() - t0

            def load() -> dict[str, torch.Tensor]:
                return mgr.load(str(d / "ck"), into={"tensors": targets.pop()})["tensors"]
        else:
            ck = fito.Checkpointer(d, progress=False)  # made once per job: outside the timing
            t0 = time.perf_counter()
            ck.save(1, {"tensors": data})
            t_save = time.perf_counter() - t0
            ck.close()

            def load() -> dict[str, torch.Tensor]:
                state: dict[str, Any] = {"tensors": targets.pop()}
                with fito.Checkpointer(d, progress=False) as ck2:
                    assert ck2.restore(state) == 1
                return state["tensors"]
        times = []
        for cache in ("warm", "cold"):
            targets = [fresh()]
            drop_caches(args.drop and cache == "cold")
            t0 = time.perf_counter()
            got = load()
            times.append(time.perf_counter() - t0)
            check(got, f"{name} ({cache} page cache)")
        if name == "tc":
            mgr.close()
        return t_save, times[0], times[1]

    t = time.perf_counter()
    for rep in range(args.repeats):
        for name in rotated(MANY, rep):
            d = base / name.replace(" ", "_").replace("(", "").replace(")", "")
            d.mkdir(parents=True)
            os.sync()
            t_save, t_warm, t_cold = run(name, d)
            out.setdefault(f"save/{name}", []).append(t_save)
            if t_warm is not None and t_cold is not None:
                out.setdefault(f"restore-warm/{name}", []).append(t_warm)
                out.setdefault(f"restore/{name}", []).append(t_cold)
            shutil.rmtree(d)
    print(f"[many] done in {time.perf_counter() - t:.0f} s", flush=True)
    return out


# ---------------------------------------------------------------- report
def med(xs: list[float]) -> float:
    return statistics.median(xs)


def row(name: str, xs: list[float], ref: list[float] | None = None, ref2: list[float] | None = None) -> str:
    cells = [name, f"{med(xs):.3f}", f"{min(xs):.3f}–{max(xs):.3f}"]
    cells += [f"{med(xs) / med(r):.2f}x" if r else "" for r in (ref, ref2)]
    return "| " + " | ".join(cells) + " |"


def report(res: dict[str, Any], meta: str) -> tuple[list[str], list[str]]:
    md, goals = [meta, ""], []

    def goal(text: str, value: float, limit: float) -> None:
        goals.append(f"- {text}: {value:.2f}x (goal <= {limit:g}x) — **{'met' if value <= limit else 'NOT met'}**")

    if "ddp" in res:
        r = res["ddp"]
        md += [f"### DDP, 2 gloo ranks: Linear stack + AdamW, one replica of the state = {r['replica_bytes'] / MB:.1f} MB",
               "", "| method | save median s | min–max s | vs DCP | bytes written | files |", "|---|---:|---:|---:|---:|---:|"]
        for k in [k for k in ("DCP", "fito", "tc") if f"save/{k}" in r]:
            label = {"DCP": "stock DCP", "fito": "fito Checkpointer", "tc": "torch_checkpointing (every rank writes its replica, no fsync)"}[k]
            md.append(row(label, r[f"save/{k}"], r["save/DCP"] if k != "DCP" else None)[:-1]
                      + f"{med(r[f'bytes/{k}']) / MB:.1f} MB | {int(med(r[f'files/{k}']))} |")
        md.append("")
        goal("DDP 2 ranks: fito bytes written / DCP's (goal: equal)", med(r["bytes/fito"]) / med(r["bytes/DCP"]), 1.01)
        goal("DDP 2 ranks: fito save time / DCP save", med(r["save/fito"]) / med(r["save/DCP"]), 1.0)
    if "fsdp" in res:
        md += ["### FSDP2 + AdamW: saved on 2 gloo ranks; restored into a fresh model + AdamW on 2, 1 and 4 ranks", "",
               "Restores: *cold* = page cache dropped before the read (when allowed), *warm* = the checkpoint's bytes "
               "still in the page cache (just saved or just read). tc = torch_checkpointing 0.1.1, restores on the "
               "saving world size only: its resharding (DefaultResharder) gathers metadata through CUDA tensors "
               "and raises on CPU-only torch, so 2 -> 1 and 2 -> 4 are not runnable here.", "",
               "| operation | DCP median s | DCP min–max s | fito median s | fito min–max s | fito / DCP | tc median s "
               "| tc min–max s | tc / DCP |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, r, key in (("save, 2 ranks", res["fsdp"], "save"), ("restore 2 -> 2, cold", res["fsdp"], "restore"),
                              ("restore 2 -> 2, warm", res["fsdp"], "restore-warm"),
                              ("restore 2 -> 1, cold", res.get("fsdp1"), "restore"),
                              ("restore 2 -> 1, warm", res.get("fsdp1"), "restore-warm"),
                              ("restore 2 -> 4, cold", res.get("fsdp4"), "restore"),
                              ("restore 2 -> 4, warm", res.get("fsdp4"), "restore-warm")):
            if not r or f"{key}/DCP" not in r:
                continue
            a, b, c = r[f"{key}/DCP"], r[f"{key}/fito"], r.get(f"{key}/tc")
            tc = f"{med(c):.3f} | {min(c):.3f}–{max(c):.3f} | {med(c) / med(a):.2f}x" if c else " | | "
            md.append(f"| {label} | {med(a):.3f} | {min(a):.3f}–{max(a):.3f} | {med(b):.3f} | {min(b):.3f}–{max(b):.3f} "
                      f"| {med(b) / med(a):.2f}x | {tc} |")
            goal(f"FSDP2 {label}: fito / DCP", med(b) / med(a), 1.0)
        md.append("")
    if "single" in res:
        r = res["single"]
        md += [f"### One process, Linear(4096, 4096) x {res['single_layers']} + AdamW = {r['nbytes'] / 1e9:.2f} GB", "",
               "| operation | median s | min–max s | vs raw durable write / vs DCP | vs torch |", "|---|---:|---:|---:|---:|"]
        for name in SINGLE:
            md.append(row(name, r[name], r["raw durable write"] if name != SINGLE[0] else None,
                          r["torch.save"] if name == "fito save" else None))
        md.append(row("fito save vs DCP save", r["fito save"], r["DCP save"]))
        md.append(row("fito save vs raw with early write-back", r["fito save"], r["raw durable write, early write-back"]))
        code = ("the library code paged in by one untimed restore first, the data read from the disk" if r.get("code") == "warm"
                else "a fresh process after a cache drop: library code and data both cold")
        md += ["", f"Restore into a fresh model + fresh AdamW, each in a new process ({code}; import of the library "
               "reported apart):", "",
               "| operation | median s | min–max s | vs DCP load | vs torch.load | import median s |", "|---|---:|---:|---:|---:|---:|"]
        for cache in ("", WARM):
            for name in [n + cache for n in RESTORES if n + cache in r]:
                md.append(row(name, r[name], r["DCP load" + cache] if name.startswith(("fito", "tc")) else None,
                              r["torch.load" + cache] if name.startswith(("fito", "DCP", "tc")) else None)
                          + f" {med(r['import/' + name]):.3f} |")
        md.append("")
        if f"fito restore{WARM}" in r:
            goal("1 GB: fito restore (fresh process, warm page cache) / DCP load",
                 med(r[f"fito restore{WARM}"]) / med(r[f"DCP load{WARM}"]), 1.0)
        goal("1 GB: fito restore (fresh process) / DCP load", med(r["fito restore"]) / med(r["DCP load"]), 1.0)
        goal("1 GB: fito restore (fresh process) / torch.load", med(r["fito restore"]) / med(r["torch.load"]), 1.0)
        goal("1 GB: fito save / raw durable write", med(r["fito save"]) / med(r["raw durable write"]), 1.05)
        goals.append(f"- for reference, not a goal: 1 GB fito save / raw durable write with the same early write-back "
                     f"(the floor of that way of writing): {med(r['fito save']) / med(r['raw durable write, early write-back']):.2f}x")
    if "many" in res:
        r = res["many"]
        md += [f"### One process, a dict of {r['count']:,} tensors of 256 float32", "",
               "| method | save median s | save min–max s | restore median s (cold) | restore min–max s | restore median s (warm page cache) | save vs torch.save | restore (cold) vs torch.load |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name in MANY:
            s = r[f"save/{name}"]
            label = {"torch.save": "torch.save (fsync'd) / torch.load", "DCP": "DCP save / load",
                     "fito": "fito save / restore", "tc": "torch_checkpointing save (no fsync) / load"}.get(name, name)
            cells = [label, f"{med(s):.3f}", f"{min(s):.3f}–{max(s):.3f}"]
            if f"restore/{name}" in r:
                x, w = r[f"restore/{name}"], r.get(f"restore-warm/{name}", [float("nan")])
                cells += [f"{med(x):.3f}", f"{min(x):.3f}–{max(x):.3f}", f"{med(w):.3f}",
                          f"{med(s) / med(r['save/torch.save']):.2f}x", f"{med(x) / med(r['restore/torch.save']):.2f}x"]
            else:
                cells += ["", "", "", f"{med(s) / med(r['save/torch.save']):.2f}x", ""]
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
        goal("20k tensors: fito save / torch.save (fsync'd)", med(r["save/fito"]) / med(r["save/torch.save"]), 1.0)
        goal("20k tensors: fito restore / torch.load", med(r["restore/fito"]) / med(r["restore/torch.save"]), 1.0)
    return md, goals


def machine() -> str:
    import torch

    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, torch {torch.__version__}"


def git_head() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, check=True, cwd=HERE).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--", "../src")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cache_droppable() -> bool:
    return bench_io.drop_caches()  # a first drop doubles as the probe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repeat: a smoke run (results not written)")
    ap.add_argument("--parts", default="ddp,fsdp,single,many")
    ap.add_argument("--dir", default="/tmp/fito-bench-sharded")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--layers", type=int, default=5, help="Linear layers of the DDP/FSDP2 model")
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--single-layers", type=int, default=5, help="Linear(4096, 4096) layers of the 1 GB state")
    ap.add_argument("--many", type=int, default=20000)
    ap.add_argument("--code", choices=("warm", "cold"), default="warm",
                    help="1 GB restores: run the method once untimed first, so its library code is paged in when "
                         "the timed restore reads its data from the disk (cold: a fresh process after a drop)")
    ap.add_argument("--cache", choices=("drop", "warm"), default="drop",
                    help="drop the page cache before every timed read (when allowed), or read warm files")
    ap.add_argument("--rank", help=argparse.SUPPRESS)
    ap.add_argument("--want", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.drop = args.cache == "drop"
    if args.rank:
        rank_main(args)
        return 0
    if args.child:
        single_save(args) if args.child == "single-save" else restore_child(args.child, args)
        return 0
    if args.quick:
        args.repeats, args.layers, args.width, args.single_layers, args.many = 1, 2, 512, 1, 2000
        args.no_write = True
    load0, started, head = os.getloadavg(), time.time(), git_head()
    if args.cache == "drop" and not cache_droppable():
        args.cache, args.drop = "warm", False
    base = Path(args.dir)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    parts = args.parts.split(",")
    res: dict[str, Any] = {"single_layers": args.single_layers}
    try:
        if "ddp" in parts:
            res["ddp"] = ranks("ddp", 2, args)
        if "fsdp" in parts:
            res["fsdp"] = ranks("fsdp-save", 2, args)
            want = json.dumps(res["fsdp"]["checksum"])
            res["fsdp1"] = ranks("fsdp-restore", 1, args, "--want", want)
            res["fsdp4"] = ranks("fsdp-restore", 4, args, "--want", want)
        if "single" in parts:
            res["single"] = single(args)
        if "many" in parts:
            res["many"] = many(args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    meta = (f"Machine: {machine()}; ext4 on a virtual disk. fito at commit {head}. Run took "
            f"{(time.time() - started) / 60:.1f} min; load average at start {load0[0]:.2f} / {load0[1]:.2f} / "
            f"{load0[2]:.2f} (1/5/15 min) on 2 cores shared with other jobs. {args.repeats} repeats, methods "
            "interleaved (order rotated per repeat), medians and min–max. Page cache: "
            + ("dropped (os.sync(), then `echo 3 > /proc/sys/vm/drop_caches`) before every timed read, so restores "
               "read from the disk." if args.drop else "NOT dropped (--cache warm, or /proc/sys/vm/drop_caches not "
               "writable): every read comes from the page cache (os.sync() before each measurement)."))
    md, goals = report(res, meta)
    text = "\n".join(["## Sharded state (`benchmarks/sharded.py`)", "", *md, "### Goals (issue 10)", "", *goals, ""])
    print(text)
    print(json.dumps(res), file=sys.stderr)
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text + "\n<details><summary>raw samples (JSON)</summary>\n\n```\n" + json.dumps(res) + "\n```\n</details>\n")
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
