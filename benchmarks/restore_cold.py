"""Diagnostic: restore the same ~1 GB checkpoint several times with the page cache dropped before each,
alternating xxh3-128 and blake3 checkpoints. Unlike checkpoint_io.py, the state restored into already holds
tensors from a previous fito restore, and no save runs in between.

    python benchmarks/restore_cold.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import torch

import fito


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(5)])
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4096)).sum().backward()
    opt.step()
    state = {"model": model, "optim": opt}
    base = tempfile.mkdtemp(dir="/tmp")
    hashes = ("xxh3-128", "blake3")
    for h in hashes:
        fito.Checkpointer(os.path.join(base, h), hash=h).save(1, state)
    times: dict[str, list[float]] = {h: [] for h in hashes}
    for i in range(args.repeats):
        for h in hashes if i % 2 == 0 else hashes[::-1]:
            subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=False)
            with fito.Checkpointer(os.path.join(base, h)) as ck:
                t = time.perf_counter()
                ck.restore(state)
                times[h].append(time.perf_counter() - t)
    shutil.rmtree(base)
    for h, ts in times.items():
        print(f"{h}: restore {[round(t, 3) for t in ts]} s, median {statistics.median(ts):.3f} s")


if __name__ == "__main__":
    main()
