"""`fito export` throughput against a plain read of the same bytes (issue 18).

A model of LAYERS x Linear(WIDTH, WIDTH) + AdamW after one step is saved once with fito (one process). Then,
per repeat, in a shuffled order so load from other jobs hits every method alike:
    plain read      the step's object files read whole (64 MiB readinto calls into one reused buffer)
    plain read, fresh memory   the same into new buffers, one per object, all kept (as returned tensors are)
    plain copy      the same, each run also written to one new file, fsynced: the I/O floor of any export
    load_tensors    fito.load_tensors(root): every tensor consolidated, every block hash checked
    export          fito export ROOT OUT (safetensors; read, verify, write, fsync, rename)
Medians are reported, with MB/s over the tensor bytes and each method's time over the plain read's. The page
cache is not dropped (not allowed on this machine): every method reads warm files.

    PYTHONPATH=src python benchmarks/export.py [--layers 4] [--width 2048] [--repeats 3] [--dir /tmp/fito-export-bench]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Callable

RUN = 64 << 20


def setup(d: Path, layers: int, width: int) -> Path:
    import torch

    import fito

    root = d / f"ck-{layers}x{width}"
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    with fito.Checkpointer(root) as ck:
        ck.save(1, {"model": model, "optim": opt})
    (root / "done").write_text("")
    return root


def objects(root: Path) -> list[Path]:
    return sorted(root.glob("epochs/*/*/rank-*.fito"))


def plain_read(root: Path, copy_to: Path | None = None) -> None:
    buf = bytearray(RUN)
    view = memoryview(buf)
    out = open(copy_to, "xb") if copy_to is not None else None
    try:
        for path in objects(root):
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    if out is not None:
                        out.write(view[:n])
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()


def plain_read_fresh(root: Path) -> None:
    """Every object read whole into new memory of its own (what load_tensors must do: it returns tensors)."""
    import torch

    kept = []
    for path in objects(root):
        buf = torch.empty(path.stat().st_size, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        with open(path, "rb", buffering=0) as f:
            got = 0
            while got < len(view) and (n := f.readinto(view[got:got + RUN])):
                got += n
        kept.append(buf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/fito-export-bench"))
    args = parser.parse_args()

    import fito
    from fito.export.write import export

    args.dir.mkdir(parents=True, exist_ok=True)
    root = setup(args.dir, args.layers, args.width)
    tensor_bytes = sum(t.numel() * t.element_size() for t in fito.load_tensors(root).values())
    object_bytes = sum(p.stat().st_size for p in objects(root))
    scratch = args.dir / "scratch"

    def fresh() -> Path:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        return scratch

    methods: dict[str, Callable[[], None]] = {
        "plain read": lambda: plain_read(root),
        "plain read, fresh memory": lambda: plain_read_fresh(root),
        "plain copy": lambda: plain_read(root, fresh() / "copy"),
        "load_tensors": lambda: fito.load_tensors(root) and None,
        "export": lambda: export(root, fresh() / "out") and None,
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    rng = random.Random(0)
    for name, fn in methods.items():  # warm-up: the page cache and first-use imports for every method
        fn()
    for _ in range(args.repeats):
        order = list(methods)
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    shutil.rmtree(scratch, ignore_errors=True)
    base = statistics.median(times["plain read"])
    rows = []
    print(f"{args.layers} x Linear({args.width}, {args.width}) + AdamW: {tensor_bytes / 1e6:.0f} MB of tensors in "
          f"{object_bytes / 1e6:.0f} MB of objects; {args.repeats} repeats, medians; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| method | median s | min-max s | MB/s | / plain read |\n|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"method": name, "median_s": med, "min_s": min(ts), "max_s": max(ts),
                     "mb_per_s": tensor_bytes / med / 1e6, "vs_plain_read": med / base})
        print(f"| {name} | {med:.3f} | {min(ts):.3f}-{max(ts):.3f} | {tensor_bytes / med / 1e6:,.0f} | {med / base:.2f}x |")
    print(json.dumps({"tensor_bytes": tensor_bytes, "object_bytes": object_bytes, "rows": rows}))


if __name__ == "__main__":
    main()
