"""Restore of a ~1 GB model+AdamW into a fresh model and optimizer in a new process, fito against torch.load
(+ load_state_dict) of the same state, side by side. Each measurement runs in its own process, methods
interleaved per repeat so load from other processes hits both alike; medians are reported. The page cache
is not dropped (not allowed on this machine): both read warm files.

    python benchmarks/restore_fresh.py [--repeats 5] [--dir /tmp/fito-restore-fresh]

Run it with PYTHONPATH pointing at the sources to measure (the checkpoint is written once and reused).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAYERS, WIDTH = 5, 4096  # 5 x 16.8M params; weights + exp_avg + exp_avg_sq ~ 1.0 GB


def build():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])
    opt = torch.optim.AdamW(model.parameters())
    return model, opt


def setup(d: Path) -> None:
    import torch

    import fito

    if (d / "done").exists():
        return
    d.mkdir(parents=True, exist_ok=True)
    model, opt = build()
    model(torch.randn(2, WIDTH)).sum().backward()
    opt.step()
    fito.Checkpointer(d / "fito").save(1, {"model": model, "optim": opt})
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, d / "state.pt")
    (d / "done").write_text("")


def child(method: str, d: Path) -> None:
    t0 = time.perf_counter()
    import torch

    t_torch = time.perf_counter()
    model, opt = build()  # fresh: initialised weights, no optimizer state
    if method == "fito":
        t1 = time.perf_counter()
        import fito
        import fito.ckpt.checkpointer  # noqa: F401  (reported apart: the import is paid once per process)

        t2 = time.perf_counter()
        with fito.Checkpointer(d / "fito") as ck:
            ck.restore({"model": model, "optim": opt})
        t3 = time.perf_counter()
    else:
        t1 = t2 = time.perf_counter()
        sd = torch.load(d / "state.pt", weights_only=True)
        model.load_state_dict(sd["model"])
        opt.load_state_dict(sd["optim"])
        t3 = time.perf_counter()
    print(json.dumps({"import_torch": t_torch - t0, "import": t2 - t1, "restore": t3 - t2}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default="/tmp/fito-restore-fresh")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    d = Path(args.dir)
    if args.child:
        child(args.child, d)
        return
    setup(d)
    times: dict[str, list[dict[str, float]]] = {"fito": [], "torch.load": []}
    for i in range(args.repeats):
        for method in (list(times) if i % 2 == 0 else list(times)[::-1]):
            out = subprocess.run([sys.executable, __file__, "--dir", str(d), "--child", method],
                                 check=True, capture_output=True, text=True, env=os.environ).stdout
            times[method].append(json.loads(out.splitlines()[-1]))
    for method, runs in times.items():
        restore = [r["restore"] for r in runs]
        imp = [r["import"] for r in runs]
        print(f"{method:10s} restore {[round(t, 3) for t in restore]} s, median {statistics.median(restore):.3f} s"
              f"; import fito median {statistics.median(imp):.3f} s")
    ratio = statistics.median(r["restore"] for r in times["fito"]) / statistics.median(r["restore"] for r in times["torch.load"])
    print(f"fito / torch.load restore: {ratio:.2f}x")


if __name__ == "__main__":
    main()
