"""fito.dcp vs stock DCP (FileSystemWriter/Reader), 2 gloo ranks on CPU, side by side in one run.

    python benchmarks/dcp_plugin.py [--mb 128] [--repeats 3] [--dir /tmp/fito-bench-dcp]

DDP (replicated module): save time and bytes written. FSDP2 + AdamW: save, and load on the same 2 ranks.
The two systems alternate within each repeat; medians are printed with their ratio. Files are written to
--dir (same file system for both) and removed after each measurement."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).parent


def rank_main(mb: int, repeats: int, base: Path) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import fito.dcp

    warnings.filterwarnings("ignore")
    dist.init_process_group("gloo", timeout=timedelta(seconds=300))
    rank, world = dist.get_rank(), dist.get_world_size()
    width = 2048
    layers = max(1, mb * (1 << 20) // (width * width * 4))

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])

    def timed(fn) -> float:
        dist.barrier()
        t = time.perf_counter()
        fn()
        dist.barrier()
        return time.perf_counter() - t

    def size(d: Path) -> int:
        return sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and not p.name.startswith("decisions.sqlite"))

    out: dict[str, list[float]] = {}
    ddp = torch.nn.parallel.DistributedDataParallel(model())
    ddp_state = {"model": ddp.state_dict()}
    fsdp = model()
    mesh = init_device_mesh("cpu", (world,))
    for layer in fsdp:
        fully_shard(layer, mesh=mesh)
    fully_shard(fsdp, mesh=mesh)
    opt = torch.optim.AdamW(fsdp.parameters(), lr=1e-3)
    fsdp(torch.randn(2, width)).sum().backward()
    opt.step()
    msd, osd = get_state_dict(fsdp, opt)
    fsdp_state = {"model": msd, "optim": osd}

    def save(kind: str, state: dict, d: Path) -> None:
        if kind == "dcp":
            dcp.save(state, checkpoint_id=str(d))
        else:
            dcp.save(state, storage_writer=fito.dcp.Writer(d, 1), planner=fito.dcp.SavePlanner())

    def load(kind: str, state: dict, d: Path) -> None:
        if kind == "dcp":
            dcp.load(state, checkpoint_id=str(d))
        else:
            dcp.load(state, storage_reader=fito.dcp.Reader(d), planner=fito.dcp.LoadPlanner())

    for rep in range(repeats):
        for kind in (("dcp", "fito") if rep % 2 == 0 else ("fito", "dcp")):
            d = base / f"ddp-{kind}"
            out.setdefault(f"ddp_save_s/{kind}", []).append(timed(lambda: save(kind, ddp_state, d)))
            out.setdefault(f"ddp_bytes/{kind}", []).append(size(d))
            dist.barrier()
            if rank == 0:
                shutil.rmtree(d)
            d = base / f"fsdp-{kind}"
            out.setdefault(f"fsdp_save_s/{kind}", []).append(timed(lambda: save(kind, fsdp_state, d)))
            os.sync()
            out.setdefault(f"fsdp_load_s/{kind}", []).append(timed(lambda: load(kind, fsdp_state, d)))
            dist.barrier()
            if rank == 0:
                shutil.rmtree(d)
    if rank == 0:
        replica = sum(t.numel() * t.element_size() for t in ddp_state["model"].values())
        print(json.dumps({"replica_bytes": replica, "layers": layers, **out}))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=128, help="model size in MiB (float32 weights)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/fito-bench-dcp")
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    base = Path(args.dir)
    if args.rank:
        rank_main(args.mb, args.repeats, base)
        return
    from fito.testing.dist import run_ranks

    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    results = run_ranks("dcp_plugin", ["--rank", "--mb", str(args.mb), "--repeats", str(args.repeats), "--dir", str(base)],
                        2, timeout=1800, env=env)
    for r in results:
        if r.returncode:
            sys.exit(f"rank {r.rank} failed:\n{r.stderr[-3000:]}")
    doc = json.loads(results[0].stdout.strip().splitlines()[-1])
    print(f"model {args.mb} MiB ({doc['layers']} layers), 2 gloo ranks, {args.repeats} repeats, medians")
    print(f"{'measure':<14}{'stock DCP':>12}{'fito.dcp':>12}{'fito/DCP':>10}")
    for measure in ("ddp_save_s", "ddp_bytes", "fsdp_save_s", "fsdp_load_s"):
        a, b = statistics.median(doc[f"{measure}/dcp"]), statistics.median(doc[f"{measure}/fito"])
        fmt = (lambda x: f"{x / 1e6:.1f} MB") if measure.endswith("bytes") else (lambda x: f"{x:.3f} s")
        print(f"{measure:<14}{fmt(a):>12}{fmt(b):>12}{b / a:>10.2f}")
    print(f"one DDP replica: {doc['replica_bytes'] / 1e6:.1f} MB")
    print(json.dumps(doc))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
