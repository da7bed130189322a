"""Checkpointing as a training job feels it (issue 19): a small GPT-style model trains on 2 gloo ranks (DDP, CPU)
and checkpoints every N steps; the loop's time is compared with the same loop without checkpoints.

    PYTHONPATH=$PWD/src python3 benchmarks/training_loop.py [--steps 200] [--every 10,50] [--repeats 3] [--quick]

Contenders, side by side in one run (one 2-rank job; in every repeat each loop runs once, in an order rotated
per repeat, and each repeat has its own no-checkpoint baseline, so load from other jobs hits all alike):
  none        the loop without checkpoints (the baseline of every overhead)
  fito async  fito.Checkpointer.save(step, state, blocking=False): copies to host memory, commits in the background
  fito sync   fito.Checkpointer.save(step, state)
  DCP async   dcp.async_save with a reused DefaultStager (async staging, CPU memory), on a gloo group of its own
  DCP sync    dcp.save(FileSystemWriter)
  tc async    torch_checkpointing.CheckpointManager (0.1.1; background process, staged shared-memory copies);
              optimizer.step() runs under manager.lock() as its docs ask
  tc sync     the same with SyncCheckpointSaverConfig
Every contender saves the model's and AdamW's state dict; one untimed save before the loop warms each one up
(buffers, subprocess, groups) as a long job is after its first checkpoint. Timing ends after the last step: the
background part of the last async save is not in the loop's time (it is reported as "drain").
*stall* = how long the training thread is blocked per save: the save call, plus any wait before the next
optimizer step for staging still running (DCP's staging future, torch_checkpointing's lock). It is compared with
a host memcpy of this rank's whole state (weights + both AdamW moments) into already-touched memory.
Every loop must end with the baseline's weights bit for bit (checkpointing must not perturb training).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "training_loop.md"
CONTENDERS = ["none", "fito async", "fito sync", "DCP async", "DCP sync", "tc async", "tc sync"]
warnings.filterwarnings("ignore")


# ---------------------------------------------------------------- the model
def gpt(vocab: int, dim: int, layers: int, ctx: int, seed: int):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, dim // 64, 64).permute(2, 0, 3, 1, 4)
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, dim))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(ctx, dim)
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.ln = nn.LayerNorm(dim)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            return self.ln(self.blocks(x)) @ self.tok.weight.T  # tied head

    torch.manual_seed(seed)
    return GPT()


# ---------------------------------------------------------------- one rank (python -m training_loop --rank)
def rank_main(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from datetime import timedelta
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.nn.parallel import DistributedDataParallel as DDP

    import fito
    import fito.ckpt.sharded_save  # noqa: F401  (imported by the first save: not inside a timing)

    dist.init_process_group("gloo", timeout=timedelta(seconds=900))
    rank, world = dist.get_rank(), dist.get_world_size()
    base = Path(args.dir)
    contenders = args.contenders.split(",")
    everies = [int(n) for n in args.every.split(",")]
    gen = torch.Generator().manual_seed(1000 + rank)
    batches = [torch.randint(0, args.vocab, (args.batch, args.ctx + 1), generator=gen) for _ in range(args.steps + 1)]
    out: dict[str, Any] = {"world": world, "loops": {}, "stalls": {}, "drain": {}}
    dcp_group = dist.new_group(backend="gloo")  # dcp.async_save's collectives never share training's group

    def fresh():  # type: ignore[no-untyped-def]
        model = DDP(gpt(args.vocab, args.dim, args.layers, args.ctx, seed=0))
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(model, opt, i: int, guard: Callable[[], Any]) -> None:  # type: ignore[no-untyped-def]
        x = batches[i]
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        with guard():
            opt.step()
        opt.zero_grad(set_to_none=True)

    # The floor: this rank's whole state (weights + moments) copied into already-touched host memory.
    model, opt = fresh()
    step(model, opt, 0, _nothing)
    state = [t for p in model.parameters() for t in (p.data, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])]
    out["state_bytes"] = sum(t.numel() * t.element_size() for t in state)
    out["params"] = sum(p.numel() for p in model.parameters())
    dst = [torch.empty_like(t) for t in state]
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for d, s in zip(dst, state):
            d.copy_(s)
        times.append(time.perf_counter() - t0)
    out["memcpy"] = statistics.median(times[1:])
    del model, opt, state, dst

    def loop(kind: str, every: int, rep: int) -> tuple[float, list[float], float, list[float]]:
        """Run args.steps steps with `kind` saving every `every` steps; (loop s, stalls, drain s, weight sums)."""
        model, opt = fresh()
        d = base / f"{kind.replace(' ', '-')}-{every}-{rep}"
        if rank == 0:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        dist.barrier()
        pending: list[Callable[[], Any]] = []  # waits the training thread must do before the next optimizer step
        guard: Callable[[], Any] = _nothing
        stalls: list[float] = []

        def before_step() -> Any:  # DCP's staging future is waited for (and timed) right before opt.step()
            t = time.perf_counter()
            while pending:
                pending.pop()()
            if stalls and t:
                stalls[-1] += time.perf_counter() - t
            return _Null()

        if kind.startswith("fito"):
            ck = fito.Checkpointer(d / "ck", progress=False)
            state = {"model": model, "optim": opt}
            save: Callable[[int], Any] = (lambda s: ck.save(s, state, blocking=False)) if kind == "fito async" else (
                lambda s: ck.save(s, state))
            finish: Callable[[], Any] = ck.close
        elif kind.startswith("DCP"):
            if kind == "DCP async":
                stager = DefaultStager(StagingOptions(use_pinned_memory=False, use_shared_memory=False,
                                                      use_async_staging=True, use_non_blocking_copy=False))
                last: list[Any] = []

                def save(s: int) -> None:
                    if last:
                        last.pop().upload_completion.result()  # one in flight, like the others
                    msd, osd = get_state_dict(model, opt)
                    resp = dcp.async_save({"model": msd, "optim": osd}, storage_writer=FileSystemWriter(d / str(s)),
                                          async_stager=stager, process_group=dcp_group)
                    pending.append(resp.staging_completion.result)
                    last.append(resp)

                def finish() -> None:
                    if last:
                        last.pop().upload_completion.result()
                    stager.close()
                guard = before_step
            else:
                def save(s: int) -> None:
                    msd, osd = get_state_dict(model, opt)
                    dcp.save({"model": msd, "optim": osd}, storage_writer=FileSystemWriter(d / str(s)))
                finish = _nothing
        elif kind.startswith("tc"):
            from torch_checkpointing import CheckpointManager
            from torch_checkpointing.config import SyncCheckpointSaverConfig
            from torch_checkpointing.storage.filesystem import LocalFileSystemStorageConfig

            from torch_checkpointing.checkpoint_process import CheckpointProcessConfig
            from torch_checkpointing.config import AsyncCheckpointSaverConfig

            # O_DIRECT (the default) fails here: the last, unaligned write of each file raises EINVAL at close.
            # Its writer process must start within 30 s by default: under this shared machine's load it did not.
            cfg = CheckpointManager.Config(storage_config=LocalFileSystemStorageConfig(use_direct_io=False), save=(
                AsyncCheckpointSaverConfig(process_config=CheckpointProcessConfig(subprocess_init_timeout_secs=600))))
            if kind == "tc sync":
                cfg.save = SyncCheckpointSaverConfig()
            mgr = cfg.build()
            futures: list[Any] = []

            def save(s: int) -> None:
                f = mgr.save(str(d / f"step_{s}"), {"model": model.state_dict(), "optim": opt.state_dict()})
                if f is not None:
                    futures.append(f)

            def finish() -> None:
                for f in futures:
                    f.result()
                mgr.close()

            def locked() -> Any:  # the wait for staging in flight counts as stall
                t = time.perf_counter()
                lock = mgr.lock()
                lock.__enter__()
                if stalls:
                    stalls[-1] += time.perf_counter() - t
                return _Exit(lock)
            guard = locked
        else:
            def save(s: int) -> None:
                pass
            finish = _nothing
        # Step 0 and a warm-up save, untimed. The step comes first: DCP's get_state_dict on an optimizer without
        # state takes a zero-gradient step, which would change AdamW's step count and so the training.
        step(model, opt, 0, guard)
        if kind != "none":
            save(0)
            before_step()
            if kind in ("fito async",):
                ck.wait()
            if kind == "DCP async":
                last.pop().upload_completion.result()
            if kind == "tc async":
                futures.pop().result()
        dist.barrier()
        t0 = time.perf_counter()
        for i in range(1, args.steps + 1):
            step(model, opt, i, guard)
            if kind != "none" and i % every == 0:
                t = time.perf_counter()
                save(i)
                stalls.append(time.perf_counter() - t)
        dist.barrier()
        elapsed = time.perf_counter() - t0
        t = time.perf_counter()
        while pending:
            pending.pop()()
        finish()
        drain = time.perf_counter() - t
        sums = [float(p.detach().double().sum()) for p in model.parameters()][:4]
        dist.barrier()
        if rank == 0:
            shutil.rmtree(d, ignore_errors=True)
        return elapsed, stalls, drain, sums

    reference: list[float] | None = None
    order = [("none", 0)] + [(k, n) for n in everies for k in contenders if k != "none"]
    for rep in range(args.repeats):
        k = rep % len(order)
        for kind, every in order[k:] + order[:k]:
            elapsed, stalls, drain, sums = loop(kind, every, rep)
            if reference is None:
                reference = sums
            elif sums != reference:
                raise AssertionError(f"{kind} every {every}: final weights {sums} differ from the others' {reference}")
            key = kind if kind == "none" else f"{kind}|{every}"
            out["loops"].setdefault(key, []).append(elapsed)
            everyone = [None] * world
            dist.all_gather_object(everyone, stalls)
            out["stalls"].setdefault(key, []).extend(max(col) for col in zip(*everyone))  # the slowest rank
            out["drain"].setdefault(key, []).append(drain)
            if rank == 0:
                print(f"[rep {rep}] {key}: {elapsed:.2f} s, {len(stalls)} saves", file=sys.stderr, flush=True)
    if rank == 0:
        print(json.dumps(out), flush=True)
    dist.destroy_process_group()


def tc_missing() -> str | None:
    """Why torch_checkpointing (PyPI 0.1.1) cannot run here, or None."""
    try:
        import torch_checkpointing  # noqa: F401
    except ImportError as exc:
        return f"not runnable: {exc}"
    return None


def _nothing() -> Any:
    return _Null()


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Exit(_Null):
    def __init__(self, cm: Any) -> None:
        self.cm = cm

    def __exit__(self, *exc: object) -> None:
        self.cm.__exit__(*exc)


# ---------------------------------------------------------------- the report
def spread(xs: list[float], scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(xs) * scale)} ({fmt.format(min(xs) * scale)}–{fmt.format(max(xs) * scale)})"


def report(res: dict[str, Any], args: argparse.Namespace, head: str) -> list[str]:
    loops, base = res["loops"], res["loops"]["none"]
    memcpy = res["memcpy"]
    lines = [head, "",
             f"Model: GPT-style, {args.layers} blocks, width {args.dim}, vocab {args.vocab}, context {args.ctx}, batch "
             f"{args.batch} per rank: {res['params'] / 1e6:.1f} M parameters; state per rank (weights + AdamW moments) "
             f"{res['state_bytes'] / 1e6:.0f} MB; host memcpy of it into touched memory {memcpy * 1e3:.1f} ms "
             f"(median of 6). {args.steps} steps, {args.repeats} repeats; no-checkpoint loop "
             f"{spread(base)} s.", "",
             "| contender | every N | loop s, median (min–max) | overhead vs no checkpoints, median (min–max) | "
             "saves per loop | stall per save ms, median (max) | stall / memcpy | drain s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, xs in loops.items():
        if key == "none":
            continue
        kind, every = key.split("|")
        over = [x / b - 1 for x, b in zip(xs, base)]  # paired with the same repeat's baseline
        st = res["stalls"][key]
        ratio = statistics.median(st) / memcpy if st else float("nan")
        lines.append(f"| {kind} | {every} | {spread(xs)} | {spread(over, 100, '{:+.1f}')} % | {len(st) // len(xs)} | "
                     f"{statistics.median(st) * 1e3:.1f} ({max(st) * 1e3:.1f}) | {ratio:.2f}x | "
                     f"{statistics.median(res['drain'][key]):.2f} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", default="10,50", help="checkpoint every N steps, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny model, 12 steps, 1 repeat")
    p.add_argument("--dir", default="/tmp/fito-bench-training-loop")
    p.add_argument("--json", help="also write the raw samples here")
    p.add_argument("--no-write", action="store_true", help=f"do not write {OUT.relative_to(HERE.parent)}")
    args = p.parse_args()
    if args.quick:
        args.steps, args.every, args.repeats, args.layers, args.dim, args.vocab, args.ctx = 12, "3,6", 1, 2, 128, 512, 16
    if args.rank:
        rank_main(args)
        return 0
    if "none" not in args.contenders.split(","):
        args.contenders = "none," + args.contenders
    missing = tc_missing()
    if missing:  # torch_checkpointing is a benchmark peer, not a dependency of fito
        args.contenders = ",".join(k for k in args.contenders.split(",") if not k.startswith("tc"))
    from fito.testing.dist import run_ranks

    load0, t = os.getloadavg()[0], time.perf_counter()
    cmd = ["--rank", *sys.argv[1:], "--contenders", args.contenders]
    results = run_ranks("training_loop", cmd, 2, timeout=3600, path=[str(HERE)])
    for r in results:
        if r.returncode:
            sys.exit(f"rank {r.rank} failed (rc {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    res = json.loads(results[0].stdout.strip().splitlines()[-1])
    took, load1 = time.perf_counter() - t, os.getloadavg()[0]
    import torch

    head = (f"`benchmarks/training_loop.py {' '.join(sys.argv[1:])}`: 2 gloo ranks (DDP, 1 intra-op thread each), "
            f"torch {torch.__version__}, {os.cpu_count()} cores shared with other jobs; 1-minute load average "
            f"{load0:.1f} at start, {load1:.1f} at end; run took {took / 60:.1f} min.")
    if missing:
        head += f" torch_checkpointing: {missing}."
    lines = report(res, args, head)
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(res))
    if not args.no_write:
        OUT.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
