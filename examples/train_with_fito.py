"""A training loop with fito: resume-or-start, background checkpoints every N steps, keep the last K.

    python examples/train_with_fito.py --dir /tmp/run1 --steps 300
    # kill it at any moment (Ctrl-C, kill -9) and run the same command again: it resumes bit-exactly.

Under torchrun, every rank runs this; each saves its own RNG and data position, rank 0 commits."""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

import fito


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="checkpoint directory")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50, help="checkpoint every N steps")
    args = ap.parse_args()
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(64, 5))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
    g = torch.Generator().manual_seed(123)
    x = torch.randn(2048, 20, generator=g)
    y = (x[:, :5] * 3).argmax(dim=1)
    held_x, held_y = x[:256], y[:256]
    torch.manual_seed(1 + rank)

    def held_out_loss() -> float:  # §9.3 validation: recorded at save, recomputed after restore
        model.eval()
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(model(held_x), held_y).item()
        model.train()
        return loss

    state = {"model": model, "optim": opt, "sched": sched, "rng": fito.RNGState(), "data": fito.DataPosition(seed=rank)}
    with fito.CheckpointManager(args.dir, state, every_steps=args.every, keep=3, validator=held_out_loss) as mgr:
        start = mgr.resume()
        if rank == 0:
            print(f"starting at step {start}")
        pos: fito.DataPosition = state["data"]
        for step in range(start, args.steps):
            idx = pos.order(len(x))[pos.index:pos.index + 32]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            pos.advance(32, len(x))
            if mgr.step(step + 1) is not None and rank == 0:
                print(f"step {step + 1}: loss {loss.item():.4f}, checkpoint started")
    if rank == 0:
        print(f"done; committed steps: {fito.Checkpointer(args.dir).committed()}")


if __name__ == "__main__":
    main()
