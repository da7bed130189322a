"""One rank of the demo's training run: a small MLP with dropout under DDP (gloo, CPU), AdamW, a cosine LR
schedule, per-rank RNG and data position, checkpointed every few steps with fito.

Run as `python -m fito.demo.worker ROOT --steps N --every K [--resume] [--kill-rank R --kill-step S]`
with MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE set (see fito.testing.dist). On finishing it prints one JSON
line with the hash of every tensor and value of its final state, so runs can be compared bit for bit."""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import xxhash

from fito import Checkpointer, DataPosition, RNGState, SaveAbortedError
from fito.plan.values import tensor_bytes
from fito.protocol.layout import parse_attempt_path, parse_object
from fito.storage.localfs import LocalFS

SAMPLES, FEATURES, BATCH = 512, 16, 16


def build(rank: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)  # same initial weights on every rank
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(64, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)
    g = torch.Generator().manual_seed(42)
    x = torch.randn(SAMPLES, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, 1, generator=g)).sin() + 0.1 * torch.randn(SAMPLES, 1, generator=g)
    torch.manual_seed(1000 + rank)  # dropout differs per rank: the RNG state is per-rank state
    np.random.seed(2000 + rank)
    random.seed(3000 + rank)
    return model, opt, sched, x[rank::2], y[rank::2]


def digest_state(state: dict[str, Any]) -> dict[str, str]:
    """xxh3 of every tensor and value reachable from the state: equal digests = bit-identical state."""
    out: dict[str, str] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, torch.Tensor):
            out[prefix] = f"{v.dtype}{list(v.shape)}:{xxhash.xxh3_128_hexdigest(tensor_bytes(v))}"
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}/{k}", x)
        elif isinstance(v, (list, tuple)) and any(isinstance(x, (torch.Tensor, dict, list, tuple)) or hasattr(x, "tobytes") for x in v):
            for i, x in enumerate(v):
                walk(f"{prefix}/{i}", x)
        elif hasattr(v, "tobytes"):
            out[prefix] = xxhash.xxh3_128_hexdigest(v.tobytes())
        else:
            out[prefix] = repr(v)

    for name, obj in state.items():
        walk(name, obj.state_dict() if hasattr(obj, "state_dict") else obj)
    return out


class KillMidWrite(LocalFS):
    """Storage whose writes of a rank's object of step `step` SIGKILL this process after `after` bytes: a crash
    in the middle of that save (`step=None`: a plain LocalFS). Given to the Checkpointer as its root."""

    def __init__(self, root: str, after: int, step: int | None) -> None:
        super().__init__(root)
        self.after, self.step = after, step

    def create(self, rel: str):  # type: ignore[override]
        f = super().create(rel)
        where, _, name = rel.rpartition("/")
        attempt = parse_attempt_path(where)
        # a rank's object of the chosen step (fito.protocol.layout) dies mid-write; in a background save the
        # previous step's objects may still be written after this one was asked for, and they live
        if parse_object(name) is None or attempt is None or attempt.step != self.step:
            return f
        limit = self.after

        class Dying:
            def __init__(self) -> None:
                self.written = 0

            def write(self, data: Any) -> int:
                room = limit - self.written
                if room <= 0:
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                n = f.write(memoryview(data)[:room])
                self.written += n
                return n

            def __enter__(self) -> "Dying":
                return self

            def __exit__(self, *exc: object) -> None:
                f.close()

        return Dying()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill-rank", type=int, default=-1)
    ap.add_argument("--kill-step", type=int, default=-1)
    ap.add_argument("--async-save", action="store_true", help="save in the background while training goes on")
    args = ap.parse_args(argv)

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    model, opt, sched, x, y = build(rank)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    state = {"model": model, "optim": opt, "sched": sched, "rng": RNGState(), "data": DataPosition(seed=7 + rank)}
    kill = args.kill_step if rank == args.kill_rank else None
    ck = Checkpointer(KillMidWrite(args.root, after=1500, step=kill), keep=3)  # dies inside the object write
    try:
        start = ck.restore(state) if args.resume else 0
        if args.resume:
            print(json.dumps({"event": "restored", "rank": rank, "step": start}), flush=True)

        for step in range(start, args.steps):
            pos: DataPosition = state["data"]
            idx = pos.order(len(x))[pos.index:pos.index + BATCH]
            loss = torch.nn.functional.mse_loss(ddp(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            pos.advance(BATCH, len(x))
            done = step + 1
            if done % args.every == 0:
                try:
                    committed = ck.save(done, state, blocking=not args.async_save)
                except SaveAbortedError as exc:
                    print(json.dumps({"event": "aborted", "rank": rank, "step": done, "error": str(exc)}), flush=True)
                    return 3
                if not args.async_save:
                    print(json.dumps({"event": "committed", "rank": rank, "step": committed}), flush=True)
        ck.close()  # waits for a background save still in flight
        print(json.dumps({"event": "final", "rank": rank, "step": args.steps, "digest": digest_state(state)}), flush=True)
        return 0
    finally:  # on every path, an aborted save's too: a group left to interpreter exit can abort the process
        ck.close()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
