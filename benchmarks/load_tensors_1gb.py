"""`fito.load_tensors` on a 1 GB checkpoint (issue 18): selecting the weights of a model + AdamW state reads only
the weights' bytes, in bounded extra memory.

Saves an nn.Embedding whose weight is a third of the state (the AdamW moments are the other two thirds), then,
in a fresh process, measures one `fito.load_tensors(root, "model")`:
- bytes read: the kernel's own count of bytes this process read through read(2) (`rchar` in /proc/self/io),
  taken just before and after the call; no wrapper around fito's storage;
- peak extra memory: the peak RSS (VmHWM, reset with /proc/self/clear_refs just before the call) minus the RSS
  then, against the bytes of the tensors returned.

Usage: python3 benchmarks/load_tensors_1gb.py [--gb 1.0] [--dir DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import fito

MEASURE = """
import json, sys, time, fito
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) << 10
def rchar():
    for line in open("/proc/self/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])
fito.load_tensors(sys.argv[2], "model")  # imports and first-use allocations, on a tiny checkpoint
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak from here on
before, read0, t0 = status("VmHWM"), rchar(), time.perf_counter()
got = fito.load_tensors(sys.argv[1], "model")
seconds, read1, peak = time.perf_counter() - t0, rchar(), status("VmHWM")
print(json.dumps({"seconds": seconds, "read": read1 - read0, "extra": peak - before,
                  "bytes": sum(t.numel() * t.element_size() for t in got.values()), "names": sorted(got)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of the whole saved state (weights + 2 moments)")
    ap.add_argument("--dir", type=Path, default=None, help="where to save (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = int(args.gb * (1 << 30) / 3 / 4 / 4096)
        torch.manual_seed(0)
        model = torch.nn.Embedding(rows, 4096)
        opt = torch.optim.AdamW(model.parameters())
        model(torch.tensor([1, 2])).sum().backward()
        opt.step()
        state_bytes = sum(t.numel() * t.element_size() for t in (model.weight, *opt.state[model.weight].values()))
        t0 = time.perf_counter()
        with fito.Checkpointer(Path(tmp) / "big") as ck:
            ck.save(1, {"model": model, "optim": opt})
        save_s = time.perf_counter() - t0
        with fito.Checkpointer(Path(tmp) / "tiny") as ck:
            ck.save(1, {"model": torch.nn.Linear(2, 2)})
        del model, opt
        run = subprocess.run([sys.executable, "-c", MEASURE, str(Path(tmp) / "big"), str(Path(tmp) / "tiny")],
                             capture_output=True, text=True, check=True)
        found = json.loads(run.stdout.strip().splitlines()[-1])
    found.update(state=state_bytes, save_seconds=save_s, torch=torch.__version__)
    mb = 1e6
    print(f"state saved: {state_bytes / mb:,.0f} MB (weights + AdamW moments), in {save_s:.2f} s")
    print(f"load_tensors(root, 'model'): {found['bytes'] / mb:,.0f} MB of tensors {found['names']} in "
          f"{found['seconds']:.2f} s")
    print(f"  bytes read (rchar): {found['read'] / mb:,.1f} MB = {found['read'] / found['bytes']:.4f}x the "
          f"selected tensors, {found['read'] / state_bytes:.3f}x the state")
    print(f"  peak extra memory: {found['extra'] / mb:,.1f} MB = {found['extra'] / found['bytes']:.3f}x the "
          f"selected tensors ({(found['extra'] - found['bytes']) / mb:,.1f} MB beyond them)")
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
