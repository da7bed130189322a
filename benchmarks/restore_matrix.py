"""Restore time and peak extra memory (issue 19): fito vs DCP vs torch.load, warm and cold page cache, into the
live trained model + AdamW (moments present) and into a fresh model + fresh AdamW, on 1 rank (plain module)
and 2 gloo ranks (DDP, FSDP2).

Cold: `posix_fadvise(POSIX_FADV_DONTNEED)` on every file of the checkpoint (the machine is shared: no global
drop_caches). Peak extra memory: each rank resets its peak RSS (`echo 5 > /proc/self/clear_refs`) just before
the restore and reports VmHWM - VmRSS(before) after it, the largest over ranks; the state was already
resident before (a live or freshly built model + optimizer), so this is what the restore adds at its peak.

    python3 benchmarks/restore_matrix.py --repeats 3 [--parts plain,ddp,fsdp] [--profile fito]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
METHODS = ["fito", "DCP", "torch.load", "torch_checkpointing", "raw read, fresh memory", "raw read, touched memory"]
RAW = ("raw read, fresh memory", "raw read, touched memory")


def fadvise_dontneed(d: Path) -> None:
    for p in d.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd) if os.access(p, os.W_OK) else None
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak() -> None:
    """Free heap memory back to the OS first (malloc_trim), so memory the allocator kept from an earlier
    restore does not hide this one's first-touch; then reset VmHWM to the current RSS."""
    import ctypes
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5\n")


def rank_main(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import fito
    import fito.ckpt.checkpointer  # noqa: F401
    import fito.ckpt.sharded_restore  # noqa: F401

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    base = Path(args.dir)
    torch.manual_seed(0)

    def build(seed: int):  # type: ignore[no-untyped-def]
        g = torch.Generator().manual_seed(seed)
        model = torch.nn.Sequential(*[torch.nn.Linear(args.width, args.width) for _ in range(args.layers)])
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        if args.part == "ddp":
            model = torch.nn.parallel.DistributedDataParallel(model)
        elif args.part == "fsdp":
            mesh = init_device_mesh("cpu", (world,))
            for layer in model:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train(model, opt) -> None:  # type: ignore[no-untyped-def]
        model(torch.randn(2, args.width)).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def checksum(model, opt) -> list[float]:  # type: ignore[no-untyped-def]
        def local(t):  # type: ignore[no-untyped-def]
            return (t.to_local() if hasattr(t, "to_local") else t).detach()
        out = [float(local(p).double().sum()) for p in model.parameters()]
        out += [float(local(v).double().sum()) for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim()]
        return out

    model, opt = build(0)
    train(model, opt)
    want = checksum(model, opt)
    # saves (not timed)
    with fito.Checkpointer(base / "fito", progress=False) as ck:
        ck.save(1, {"model": model, "optim": opt})
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(base / "DCP"))
    tc = None
    if args.part == "plain":
        torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, base / "torch.pt")
        try:  # PyPI 0.1.1 beside torch 2.13; O_DIRECT writes fail here (EINVAL), so buffered I/O
            from torch_checkpointing import CheckpointManager
            from torch_checkpointing.storage.filesystem import LocalFileSystemStorageConfig
            config = CheckpointManager.Config.with_sync_save()
            config.storage_config = LocalFileSystemStorageConfig(use_direct_io=False)
            tc = CheckpointManager(config)
            tc.save(str(base / "torch_checkpointing" / "s1"), {"model": model.state_dict(), "optim": opt.state_dict()})
        except ImportError:
            tc = None
    def nbytes(t):  # type: ignore[no-untyped-def]
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()
    state_bytes = sum(nbytes(t) for t in model.state_dict().values()) + sum(
        nbytes(t) for s in opt.state.values() for t in s.values() if torch.is_tensor(t))

    def fito_load(m, o) -> None:  # type: ignore[no-untyped-def]
        with fito.Checkpointer(base / "fito", progress=False) as ck:
            assert ck.restore({"model": m, "optim": o}) == 1

    def dcp_load(m, o) -> None:  # type: ignore[no-untyped-def]
        msd, osd = get_state_dict(m, o)
        sd = {"model": msd, "optim": osd}
        dcp.load(sd, storage_reader=FileSystemReader(base / "DCP"))
        set_state_dict(m, o, model_state_dict=sd["model"], optim_state_dict=sd["optim"])

    def torch_load(m, o) -> None:  # type: ignore[no-untyped-def]
        sd = torch.load(base / "torch.pt", weights_only=True)
        m.load_state_dict(sd["model"])
        o.load_state_dict(sd["optim"])

    def tc_load(m, o) -> None:  # type: ignore[no-untyped-def]
        # it loads only the keys its templates have (a fresh AdamW has no moments: live cells only), in place
        assert tc is not None
        got = tc.load(str(base / "torch_checkpointing" / "s1"), into={"model": m.state_dict(), "optim": o.state_dict()})
        m.load_state_dict(got["model"])
        o.load_state_dict(got["optim"])

    objects = sorted(p for p in (base / "fito").rglob("*") if p.is_file() and p.stat().st_size > 1 << 20)
    touched = torch.zeros(max(p.stat().st_size for p in objects), dtype=torch.uint8)  # the floors: fito's objects

    def raw(fresh: bool) -> None:
        for path in objects:
            buf = torch.empty(path.stat().st_size, dtype=torch.uint8) if fresh else touched
            mv = memoryview(buf.numpy())[:path.stat().st_size]
            with open(path, "rb", buffering=0) as f:
                while len(mv):
                    mv = mv[f.readinto(mv[:64 << 20]):]

    loads: dict[str, Callable[..., None]] = {"raw read, fresh memory": lambda m, o: raw(True),
                                             "raw read, touched memory": lambda m, o: raw(False),"fito": fito_load, "DCP": dcp_load, "torch.load": torch_load,
                                             "torch_checkpointing": tc_load}
    methods = [m for m in METHODS if m in ("fito", "DCP") or args.part == "plain" and (m != "torch_checkpointing" or tc)]
    if args.part == "plain":
        methods = [m for m in methods if m not in RAW] + [m for m in RAW]
    out: dict[str, Any] = {"state_bytes": state_bytes, "rows": {}}
    live = (model, opt)
    for rep in range(args.repeats):
        for cache in ("warm", "cold"):
            for target in ("live", "fresh"):
                here = [m for m in methods if m != "torch_checkpointing" or target == "live"]
                order = here[rep % len(here):] + here[:rep % len(here)]
                for method in order:
                    m, o = live if target == "live" else build(1)
                    if target == "live":  # perturb, so a restore that did nothing fails the check
                        with torch.no_grad():
                            for p in m.parameters():
                                p.add_(1.0)
                    dist.barrier()
                    if cache == "cold" and rank == 0:
                        fadvise_dontneed(base / ("torch.pt" if method == "torch.load" else "fito" if method in RAW else method))
                    dist.barrier()
                    reset_peak()
                    before = rss_kb("VmRSS")
                    t = time.perf_counter()
                    if args.profile == method and rep == 0 and cache == "warm":
                        import cProfile
                        import pstats
                        prof = cProfile.Profile()
                        prof.runcall(loads[method], m, o)
                        if rank == 0:
                            pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
                    else:
                        loads[method](m, o)
                    dt = time.perf_counter() - t
                    extra = (rss_kb("VmHWM") - before) * 1024
                    ts = [None] * world
                    dist.all_gather_object(ts, (dt, extra))
                    got = want if method in RAW else checksum(m, o)
                    if any(abs(a - b) > 1e-3 * max(1.0, abs(b)) for a, b in zip(got, want)) or len(got) != len(want):
                        raise SystemExit(f"{method} {cache} {target}: wrong state after restore")
                    row = out["rows"].setdefault(f"{cache}/{target}/{method}", {"s": [], "extra": []})
                    row["s"].append(max(t for t, _ in ts))
                    row["extra"].append(max(e for _, e in ts))
                    del m, o
    if rank == 0:
        print(json.dumps(out), flush=True)
    del live, model, opt
    import gc
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--part", default="plain")
    ap.add_argument("--parts", default="plain,ddp,fsdp")
    ap.add_argument("--dir", default="")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--profile", default="")
    args = ap.parse_args()
    if args.rank:
        rank_main(args)
        return 0
    from fito.testing.dist import run_ranks
    load = os.getloadavg()
    print(f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; {args.repeats} repeats, methods "
          "rotated per repeat, medians (min-max)")
    for part in args.parts.split(","):
        world = 1 if part == "plain" else 2
        d = tempfile.mkdtemp(prefix="fito-restore-matrix-", dir=os.environ.get("BENCH_DIR", "/tmp"))
        try:
            cmd = ["--rank", "--part", part, "--dir", d, "--repeats", str(args.repeats), "--layers", str(args.layers),
                   "--width", str(args.width), "--profile", args.profile]
            results = run_ranks("restore_matrix", cmd, world, timeout=1800, path=[str(HERE)])
        finally:
            shutil.rmtree(d, ignore_errors=True)
        for r in results:
            if r.returncode:
                sys.exit(f"{part}: rank {r.rank} failed (rc {r.returncode}):\n{r.stderr[-4000:]}")
        if args.profile:
            print(results[0].stderr[-12000:])
        res = json.loads(results[0].stdout.strip().splitlines()[-1])
        mb = res["state_bytes"] / 1e6
        print(f"\n### {part}, {world} rank(s), state per rank {mb:.1f} MB\n")
        print("| page cache | into | method | median s | min–max s | vs DCP | peak extra MB | extra − DCP's, % of state |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        rows = res["rows"]
        for key, row in rows.items():
            cache, target, method = key.split("/")
            dcp_row = rows[f"{cache}/{target}/DCP"]
            s, e = statistics.median(row["s"]), statistics.median(row["extra"])
            ds, de = statistics.median(dcp_row["s"]), statistics.median(dcp_row["extra"])
            print(f"| {cache} | {target} | {method} | {s:.3f} | {min(row['s']):.3f}–{max(row['s']):.3f} | {s / ds:.2f}x | "
                  f"{e / 1e6:.0f} | {100 * (e - de) / res['state_bytes']:+.0f}% |")
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
