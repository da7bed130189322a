"""Checkpoint save/restore throughput: fito against the floors (raw durable write, raw read, host memcpy) and
against torch.save/torch.load and torch.distributed.checkpoint (DCP), side by side in one run.

State: a stack of nn.Linear(4096, 4096) layers plus AdamW after one real step, sized so that weights +
exp_avg + exp_avg_sq reach each target size. Within every repeat all methods run once, in an order shuffled
per repeat (seeded), so load from other processes on this shared machine hits every method alike and no
method always follows the same one; medians are
reported. The page cache is dropped before every read measurement when we are allowed to.

Run: python benchmarks/checkpoint_io.py [--sizes 1,4] [--repeats 3] [--profile]
Writes benchmarks/results/checkpoint_io.md (unless --no-write).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import io
import os
import platform
import pstats
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import blake3
import numpy as np
import torch
import torch.distributed.checkpoint as dcp
import xxhash
from torch import nn
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

import fito
from bench_io import CHUNK, drop_caches, fsync_path, write_durably  # beside this script
from tc_peer import tc_missing  # torch_checkpointing, a peer

OUT = Path(__file__).resolve().parent / "results" / "checkpoint_io.md"
WARM = " (warm cache)"  # a restore row read right after its save, the page cache still holding the bytes
WIDTH = 4096
GB = 10**9
warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")


# ------------------------------------------------------------------ state
@dataclass
class Bench:
    """The model, its optimizer, the flat list of state tensors and one reference layer for checking restores."""

    model: nn.Module
    opt: torch.optim.Optimizer
    reference: torch.Tensor
    nbytes: int
    staging: list[torch.Tensor] = field(default_factory=list)
    pinned: bool = False

    @property
    def tensors(self) -> list[torch.Tensor]:
        """The live state tensors, looked up each time: a restore may replace the optimizer's moment tensors."""
        out: list[torch.Tensor] = []
        for p in self.model.parameters():
            out += [p.data, self.opt.state[p]["exp_avg"], self.opt.state[p]["exp_avg_sq"]]
        return out

    def state(self) -> dict[str, object]:
        return {"model": self.model, "optim": self.opt}

    def spoil(self) -> None:
        """Overwrite one weight and its moment so a restore that loads nothing is caught."""
        self.model[0].weight.data.zero_()
        self.opt.state[self.model[0].weight]["exp_avg"].zero_()

    def check(self, what: str) -> None:
        if not torch.equal(self.model[0].weight.data, self.reference):
            raise AssertionError(f"{what}: restored weights differ from the saved ones")
        if not bool(self.opt.state[self.model[0].weight]["exp_avg"].abs().sum() > 0):
            raise AssertionError(f"{what}: optimizer moments were not restored")


def build(target_gb: float) -> Bench:
    per_layer = 3 * 4 * (WIDTH * WIDTH + WIDTH)  # fp32 weight+bias, exp_avg, exp_avg_sq
    layers = max(1, round(target_gb * GB / per_layer))
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(layers)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, WIDTH)).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    b = Bench(model, opt, model[0].weight.data.clone(), 0)
    b.nbytes = sum(t.numel() * t.element_size() for t in b.tensors)
    return b


def staging_buffers(b: Bench) -> None:
    """Host buffers for the memcpy floor, allocated and touched once (as a reused staging area would be)."""
    try:
        b.staging = [torch.empty_like(t, pin_memory=True) for t in b.tensors]
        b.pinned = True
    except RuntimeError:  # CPU-only build: no pinned memory without an accelerator
        b.staging = [torch.empty_like(t) for t in b.tensors]
    for s, t in zip(b.staging, b.tensors):
        s.copy_(t)


# ------------------------------------------------------------------ helpers
def view(t: torch.Tensor) -> memoryview:
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ methods
# Each method gets a fresh directory and returns {row name: seconds}; reads drop the page cache first.
Result = dict[str, float]


def m_raw(b: Bench, d: Path, dropped: bool) -> Result:
    path = d / "rank0.bin"

    def write() -> None:
        write_durably(path, (view(t) for t in b.tensors))

    def read(targets: list[torch.Tensor]) -> None:
        with open(path, "rb", buffering=0) as f:
            for t in targets:
                mv = view(t)
                while len(mv):
                    n = f.readinto(mv[:CHUNK])
                    if not n:
                        raise EOFError(path)
                    mv = mv[n:]

    out = {"raw durable write": timed(write)}
    b.spoil()
    out[f"raw read{WARM}"] = timed(lambda: read(b.tensors))  # right after the write: from the page cache
    b.check("raw read (warm)")
    b.spoil()
    drop_caches() if dropped else None
    out["raw read"] = timed(lambda: read(b.tensors))
    b.check("raw read")
    # The same read into freshly allocated (untouched) memory: the page-fault cost a restore buffer pays.
    drop_caches() if dropped else None
    out["raw read, fresh buffer"] = timed(lambda: read([torch.empty(b.nbytes, dtype=torch.uint8)]))
    return out


def m_memcpy(b: Bench, d: Path, dropped: bool) -> Result:
    def copy(into: list[torch.Tensor]) -> None:
        for s, t in zip(into, b.tensors):
            s.copy_(t)
    out = {"host memcpy": timed(lambda: copy(b.staging))}

    def np_copy() -> None:  # one plain single-threaded memcpy per tensor, no torch dispatch
        for s, t in zip(b.staging, b.tensors):
            np.copyto(s.numpy(), t.numpy())
    out["host memcpy, numpy"] = timed(np_copy)
    # Into newly allocated memory, as a first save with no staging buffer yet does: adds the page faults.
    t0 = time.perf_counter()
    copy([torch.empty_like(t) for t in b.tensors])
    out["host memcpy, fresh buffer"] = time.perf_counter() - t0
    return out


def m_torch(b: Bench, d: Path, dropped: bool) -> Result:
    path = d / "state.pt"

    def save() -> None:
        with open(path, "wb") as f:
            torch.save({"model": b.model.state_dict(), "optim": b.opt.state_dict()}, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_path(d, directory=True)

    def load() -> None:
        sd = torch.load(path, weights_only=True)
        b.model.load_state_dict(sd["model"])
        b.opt.load_state_dict(sd["optim"])

    out = {"torch.save": timed(save)}
    b.spoil()
    out[f"torch.load{WARM}"] = timed(load)
    b.check("torch.load (warm)")
    b.spoil()
    drop_caches() if dropped else None
    out["torch.load"] = timed(load)
    b.check("torch.load")
    return out


def m_dcp(b: Bench, d: Path, dropped: bool) -> Result:
    def save() -> None:
        sd = {"model": b.model.state_dict(), "optim": b.opt.state_dict()}
        dcp.save(sd, storage_writer=FileSystemWriter(d / "dcp"), no_dist=True)

    def load() -> None:
        sd = {"model": b.model.state_dict(), "optim": b.opt.state_dict()}
        dcp.load(sd, storage_reader=FileSystemReader(d / "dcp"), no_dist=True)
        b.model.load_state_dict(sd["model"])
        b.opt.load_state_dict(sd["optim"])

    out = {"DCP save": timed(save)}
    b.spoil()
    out[f"DCP load{WARM}"] = timed(load)
    b.check("DCP load (warm)")
    b.spoil()
    drop_caches() if dropped else None
    out["DCP load"] = timed(load)
    b.check("DCP load")
    return out


def m_dcp_async(b: Bench, d: Path, dropped: bool) -> Result:
    """Cold: `dcp.async_save` as documented (the writer stages into freshly allocated memory). Warm: a reused
    DefaultStager whose cached buffers were filled once beforehand, as a training loop saving repeatedly has."""
    out: Result = {}
    for label in ("cold", "warm"):
        stager = None
        if label == "warm":
            stager = DefaultStager(StagingOptions(use_pinned_memory=False, use_shared_memory=False,
                                                  use_async_staging=False, use_non_blocking_copy=False))
            stager.stage({"model": b.model.state_dict(), "optim": b.opt.state_dict()})  # fill its cache
        t0 = time.perf_counter()
        sd = {"model": b.model.state_dict(), "optim": b.opt.state_dict()}
        future = dcp.async_save(sd, storage_writer=FileSystemWriter(d / label), async_stager=stager, no_dist=True)
        stall = time.perf_counter() - t0
        future.result()
        out[f"DCP async_save stall ({label})"] = stall
        out[f"DCP async_save total ({label})"] = time.perf_counter() - t0
        if stager is not None:
            stager.close()
        shutil.rmtree(d / label)
    return out


def m_tc(b: Bench, d: Path, dropped: bool) -> Result:
    """torch_checkpointing's CheckpointManager as documented, with two changes: O_DIRECT off (its default: the
    last, unaligned write of every file raises EINVAL at close on this ext4), and sync and async managers apart.
    It writes no fsync, so its saves are not durable when they return. Load: `mgr.load(into=...)` copies into the
    live state dicts' tensors (read through mmap), then load_state_dict, as a user resumes. Async: *stall* = the
    save call plus the wait for its staging thread (`mgr.lock()`, which a training step must take before it
    mutates the state); cold = the first save of a new manager (it also starts the writer process)."""
    from torch_checkpointing import CheckpointManager
    from torch_checkpointing.config import SyncCheckpointSaverConfig
    from torch_checkpointing.storage.filesystem import LocalFileSystemStorageConfig

    storage = LocalFileSystemStorageConfig(use_direct_io=False)

    def payload() -> dict[str, object]:
        return {"model": b.model.state_dict(), "optim": b.opt.state_dict()}

    out: Result = {}
    mgr = CheckpointManager(CheckpointManager.Config(save=SyncCheckpointSaverConfig(), storage_config=storage))
    out["tc save"] = timed(lambda: mgr.save(str(d / "sync"), payload()))

    def load() -> None:
        got = mgr.load(str(d / "sync"), into=payload())
        b.model.load_state_dict(got["model"])
        b.opt.load_state_dict(got["optim"])

    for cache in (WARM, ""):
        b.spoil()
        drop_caches() if dropped and not cache else None
        out[f"tc load{cache}"] = timed(load)
        b.check(f"tc load{cache}")
    mgr.close()
    from torch_checkpointing.checkpoint_process import CheckpointProcessConfig
    from torch_checkpointing.config import AsyncCheckpointSaverConfig

    # its writer process must start within 30 s by default: under this shared machine's load it did not
    amgr = CheckpointManager(CheckpointManager.Config(storage_config=storage, save=AsyncCheckpointSaverConfig(
        process_config=CheckpointProcessConfig(subprocess_init_timeout_secs=600))))
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        future = amgr.save(str(d / label), payload())
        with amgr.lock():  # staging done: the state may change again
            stall = time.perf_counter() - t0
        assert future is not None
        future.result()
        out[f"tc async stall ({label})"] = stall
        out[f"tc async total ({label})"] = time.perf_counter() - t0
    amgr.close()
    return out


def fito_sync(algorithm: str) -> Callable[[Bench, Path, bool], Result]:
    def run(b: Bench, d: Path, dropped: bool) -> Result:
        ck = fito.Checkpointer(d / "ck", hash=algorithm, progress=False)
        out = {f"fito save [{algorithm}]": timed(lambda: ck.save(1, b.state()))}
        ck.close()
        for cache in (WARM, ""):  # right after the save (page cache warm), then after a drop (cold)
            b.spoil()
            drop_caches() if dropped and not cache else None
            t0 = time.perf_counter()
            with fito.Checkpointer(d / "ck", progress=False) as ck2:
                step = ck2.restore(b.state())
            out[f"fito restore [{algorithm}]{cache}"] = time.perf_counter() - t0
            assert step == 1
            b.check(f"fito restore{cache}")
        return out
    return run


def fito_async(algorithm: str) -> Callable[[Bench, Path, bool], Result]:
    """Two background saves on one Checkpointer (keep=None, so no deletion is timed): the first stages into
    a new buffer (cold), the second reuses it (warm, the steady state of a training loop)."""
    def run(b: Bench, d: Path, dropped: bool) -> Result:
        out: Result = {}
        with fito.Checkpointer(d / "ck", hash=algorithm, progress=False) as ck:
            for step, label in ((1, "cold"), (2, "warm")):
                t0 = time.perf_counter()
                handle = ck.save(step, b.state(), blocking=False)  # type: ignore[call-arg]
                stall = time.perf_counter() - t0
                handle.wait()
                out[f"fito async stall ({label}) [{algorithm}]"] = stall
                out[f"fito async total ({label}) [{algorithm}]"] = time.perf_counter() - t0
                if handle.exception() is not None:
                    raise handle.exception()
        gc.collect()  # release the staging buffer before the next method
        return out
    return run


def hash_rate(algorithm: str) -> Callable[[Bench, Path, bool], Result]:
    """In-memory single-thread hashing of the whole state: what a save or restore pays if hashing is not hidden."""
    def run(b: Bench, d: Path, dropped: bool) -> Result:
        def go() -> None:
            for t in b.tensors:
                h = xxhash.xxh3_128() if algorithm == "xxh3-128" else blake3.blake3()
                h.update(view(t))
                h.hexdigest()
        return {f"hash in memory [{algorithm}]": timed(go)}
    return run


def has_async() -> bool:
    return "blocking" in inspect.signature(fito.Checkpointer.save).parameters


def methods(hashes: list[str], async_hashes: list[str]) -> dict[str, Callable[[Bench, Path, bool], Result]]:
    out: dict[str, Callable[[Bench, Path, bool], Result]] = {
        "raw": m_raw, "memcpy": m_memcpy, "torch": m_torch, "dcp": m_dcp, "dcp_async": m_dcp_async,
    }
    if tc_missing() is None:
        out["tc"] = m_tc
    for h in hashes:
        out[f"fito[{h}]"] = fito_sync(h)
        if has_async() and h in async_hashes:
            out[f"fito_async[{h}]"] = fito_async(h)
        out[f"hash[{h}]"] = hash_rate(h)
    return out


# ------------------------------------------------------------------ reporting
FLOOR = {  # row -> the floor it is compared with
    "torch.save": "raw durable write", "DCP save": "raw durable write",
    "torch.load": "raw read", "DCP load": "raw read", "raw read, fresh buffer": "raw read",
    "host memcpy, fresh buffer": "host memcpy", "host memcpy, numpy": "host memcpy",
}


def floor_of(row: str) -> str | None:
    if row.endswith(WARM):  # a warm-cache restore is compared with the warm-cache read of the same floor
        base = floor_of(row[:-len(WARM)])
        return base + WARM if base == "raw read" else base
    if row.startswith("tc save"):
        return "raw durable write"
    if row.startswith("tc load"):
        return "raw read"
    if row.startswith("tc async stall"):
        return "host memcpy"
    if row.startswith("tc async total"):
        return "raw durable write"
    if row in FLOOR:
        return FLOOR[row]
    if row.startswith("DCP async_save total"):
        return "raw durable write"
    if row.startswith("DCP async_save stall"):
        return "host memcpy"
    if row.startswith(("fito save", "fito async total")):
        return "raw durable write"
    if row.startswith("fito restore"):
        return "raw read"
    if row.startswith("fito async stall"):
        return "host memcpy"
    return None


FLOORS = ("raw durable write", "raw read", "host memcpy")


def dcp_of(row: str) -> str | None:
    if row.endswith(WARM):
        base = dcp_of(row[:-len(WARM)])
        return base + WARM if base else None
    for prefix, peer in (("fito save", "DCP save"), ("fito restore", "DCP load"), ("tc save", "DCP save"),
                         ("tc load", "DCP load")):
        if row.startswith(prefix):
            return peer
    for kind in ("stall", "total"):
        for label in ("cold", "warm"):
            if row.startswith((f"fito async {kind} ({label})", f"tc async {kind} ({label})")):
                return f"DCP async_save {kind} ({label})"
    return None


def table(size: str, nbytes: int, samples: dict[str, list[float]]) -> list[str]:
    med = {k: statistics.median(v) for k, v in samples.items()}
    lines = [f"### State of {nbytes / GB:.2f} GB ({size} GB target)", "",
             "| operation | median s | min–max s | GB/s | vs floor | vs DCP |", "|---|---:|---:|---:|---:|---:|"]
    for row, v in med.items():
        floor, peer = floor_of(row), dcp_of(row)
        vs_floor = f"{v / med[floor]:.2f}x {floor}" if floor in med else "(floor)" if row in FLOORS else ""
        vs_dcp = f"{v / med[peer]:.2f}x" if peer in med else ""
        lo, hi = min(samples[row]), max(samples[row])
        lines.append(f"| {row} | {v:.3f} | {lo:.2f}–{hi:.2f} | {nbytes / GB / v:.2f} | {vs_floor} | {vs_dcp} |")
    return lines


def goals(size: str, samples: dict[str, list[float]], algorithm: str) -> list[str]:
    med = {k: statistics.median(v) for k, v in samples.items()}
    out: list[str] = []

    def goal(text: str, row: str, ref: str, limit: float) -> None:
        if row not in med or ref not in med:
            out.append(f"- {size} GB: {text}: **not measured** ({row if row not in med else ref} missing)")
            return
        r = med[row] / med[ref]
        out.append(f"- {size} GB: {text}: {r:.2f}x (goal <= {limit:g}x) — **{'met' if r <= limit else 'NOT met'}**")

    goal(f"fito save [{algorithm}] vs raw durable write", f"fito save [{algorithm}]", "raw durable write", 1.15)
    goal(f"fito save [{algorithm}] vs DCP save", f"fito save [{algorithm}]", "DCP save", 1.0)
    for label in ("warm", "cold"):
        stall, total = f"fito async stall ({label}) [{algorithm}]", f"fito async total ({label}) [{algorithm}]"
        goal(f"fito async stall ({label}) vs host memcpy", stall, "host memcpy", 1.2)
        if label == "warm":
            goal("(context) fito async stall (warm) vs numpy memcpy", stall, "host memcpy, numpy", 1.2)
        if label == "cold":
            goal("(context) fito async stall (cold) vs host memcpy into a fresh buffer", stall,
                 "host memcpy, fresh buffer", 1.2)
        for kind, row in (("stall", stall), ("total", total)):
            peer = f"DCP async_save {kind} ({label})"
            goal(f"fito async {kind} ({label}) vs {peer}", row, peer, 1.0)
    goal(f"fito restore [{algorithm}] vs raw read", f"fito restore [{algorithm}]", "raw read", 1.15)
    goal(f"(context) fito restore [{algorithm}] vs raw read into a fresh buffer", f"fito restore [{algorithm}]",
         "raw read, fresh buffer", 1.15)
    goal(f"fito restore [{algorithm}] vs DCP load", f"fito restore [{algorithm}]", "DCP load", 1.0)
    goal(f"fito restore [{algorithm}] vs DCP load, warm page cache", f"fito restore [{algorithm}]{WARM}",
         f"DCP load{WARM}", 1.0)
    for kind, label in (("stall", "warm"), ("stall", "cold"), ("total", "warm")):
        goal(f"fito async {kind} ({label}) vs torch_checkpointing's", f"fito async {kind} ({label}) [{algorithm}]",
             f"tc async {kind} ({label})", 1.0)
    goal(f"fito restore [{algorithm}] vs torch_checkpointing load", f"fito restore [{algorithm}]", "tc load", 1.0)
    goal(f"fito restore [{algorithm}] vs torch_checkpointing load, warm page cache",
         f"fito restore [{algorithm}]{WARM}", f"tc load{WARM}", 1.0)
    return out


def git_head() -> str:
    """HEAD, plus a note when the library's checkpoint code has uncommitted changes (shared working tree)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--", "../src/fito/ckpt", "../src/fito/storage")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in src/fito/ckpt" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)")


# ------------------------------------------------------------------ profile
def profile(b: Bench, tmp: Path, algorithm: str, dropped: bool) -> str:
    """cProfile one fito save and one restore (main thread only: the hashing thread shows up as waits)."""
    d = Path(tempfile.mkdtemp(dir=tmp))
    buf = io.StringIO()
    try:
        for label, fn in (("save", lambda: fito.Checkpointer(d / "ck", hash=algorithm).save(1, b.state())),
                          ("restore", lambda: fito.Checkpointer(d / "ck").restore(b.state()))):
            if label == "restore" and dropped:
                drop_caches()
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.runcall(fn)
            buf.write(f"== fito {label} [{algorithm}] {time.perf_counter() - t0:.3f} s ==\n")
            stats = pstats.Stats(prof, stream=buf)
            stats.sort_stats("tottime").print_stats(10)
            stats.sort_stats("cumulative").print_stats("fito", 12)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return buf.getvalue()


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4", help="target state sizes in GB (10^9 bytes), comma separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hashes", default="xxh3-128,blake3", help="fito hash algorithms to run")
    ap.add_argument("--async-hashes", default="xxh3-128",
                    help="hashes for the async rows (the stall does not depend on it)")
    ap.add_argument("--tmp", default="/tmp", help="where checkpoints are written (deleted after each method)")
    ap.add_argument("--only", default="", help="comma-separated method names (default: all)")
    ap.add_argument("--profile", action="store_true", help="also cProfile one fito save/restore per size")
    ap.add_argument("--no-write", action="store_true", help="do not write the markdown results")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    hashes = [h.strip() for h in args.hashes.split(",") if h.strip()]
    tmp = Path(args.tmp)
    all_methods = methods(hashes, [h.strip() for h in args.async_hashes.split(",") if h.strip()])
    if args.only:
        all_methods = {k: v for k, v in all_methods.items() if k in args.only.split(",")}
    dropped = drop_caches()
    free = shutil.disk_usage(tmp).free
    print(f"{machine()}; page cache drop: {'yes' if dropped else 'NO (reads are from cache)'}; "
          f"{free / GB:.0f} GB free in {tmp}; fito async: {has_async()}", flush=True)
    load0 = os.getloadavg()[0]
    head = git_head()
    md = ["## Checkpoint save/restore I/O (`benchmarks/checkpoint_io.py`)", ""]
    goal_lines: list[str] = []
    profiles: list[str] = []
    started = time.time()
    pinned = False
    for size in sizes:
        b = build(float(size))
        if b.nbytes * 1.2 > free:
            raise SystemExit(f"not enough space in {tmp} for {b.nbytes / GB:.1f} GB")
        staging_buffers(b)
        pinned = b.pinned
        samples: dict[str, list[float]] = {}
        names = list(all_methods)
        for r in range(args.repeats):
            # Shuffled (seeded), not rotated: a rotation keeps every method's predecessor, and what a method
            # leaves behind (DCP's async writer, gigabytes being unlinked) then always lands on the same next one.
            order = list(names)
            random.Random(r).shuffle(order)
            for name in order:
                d = Path(tempfile.mkdtemp(prefix="ckio-", dir=tmp))
                try:
                    res = all_methods[name](b, d, dropped)
                finally:
                    shutil.rmtree(d, ignore_errors=True)
                for row, secs in res.items():
                    samples.setdefault(row, []).append(secs)
                print(f"[{size} GB rep {r + 1}/{args.repeats}] {name}: " +
                      ", ".join(f"{k} {v:.3f}s ({b.nbytes / GB / v:.2f} GB/s)" for k, v in res.items()), flush=True)
        ordered = {k: samples[k] for k in _row_order(samples)}
        lines = table(size, b.nbytes, ordered)
        print("\n".join(lines), flush=True)
        md += lines + [""]
        goal_lines += goals(size, ordered, hashes[0])
        if args.profile:
            profiles.append(profile(b, tmp, hashes[0], dropped))
            print(profiles[-1], flush=True)
        del b
    print("\n".join(goal_lines))
    header = [
        f"Machine: {machine()}. File system: ext4 on a virtual disk (`/tmp` and `/work` share it). "
        f"fito at commit {head}; run took {(time.time() - started) / 60:.1f} min, "
        f"1-minute load average at start {load0:.2f}.",
        "",
        f"State: nn.Linear({WIDTH}, {WIDTH}) layers + AdamW after one step (weights + exp_avg + exp_avg_sq, fp32). "
        f"{args.repeats} repeats; in each repeat every method runs once, in an order shuffled per repeat (seeded; a "
        "rotation kept every method's predecessor), so noise from other engineers' jobs on this shared 2-core machine hits all methods alike; the table shows medians and the "
        "min–max spread. "
        + ("The page cache was dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every read, so reads hit the disk."
           if dropped else "The page cache could NOT be dropped: every read is served from the page cache."),
        "",
        "Floors: *raw durable write* = the same bytes written from the tensors' memory to one file with os.write, "
        "then fsync(file) + fsync(dir); *raw read* = readinto straight into the live tensors' memory (no copy, "
        "no checks); *host memcpy* = `Tensor.copy_` of every state tensor into preallocated, already-touched "
        f"host buffers ({'pinned' if pinned else 'not pinned: CPU-only torch cannot pin memory'}); "
        "*host memcpy, numpy* = the same with `np.copyto` (single-threaded plain memcpy). The *fresh buffer* rows "
        "repeat a floor into newly allocated memory: the difference is the cost of first-touch page faults, which "
        "is large on this VM (~0.5–1 s per GB) and is paid by every restore that allocates its buffer and by the "
        "first background save before its staging buffer exists. Note that this benchmark's optimizer already "
        "has its moments when it restores, so *raw read* can land in touched memory; a resume in a new process "
        "has no moments yet and pays the page faults whatever the method.",
        "",
        "torch.save/DCP saves fsync their files (DCP's `sync_files=True` default); DCP runs in one process with "
        "`no_dist=True`. Async rows: *cold* = first background save (fito: a new Checkpointer; DCP: "
        "`dcp.async_save` as documented, which stages into fresh memory); *warm* = steady state (fito: the second "
        "save on the same Checkpointer, which reuses its staging buffer; DCP: a reused `DefaultStager` whose "
        "cache was filled beforehand). *stall* = until the call returns, *total* = until the data is durable "
        "(`handle.wait()` / `future.result()`). Restores include putting the data into the model/optimizer "
        "(`load_state_dict`), and each restore is checked to have loaded the data. *hash in memory* = one "
        "thread hashing the whole state, for reference (fito hashes in a second thread while writing/reading).",
        "",
        f"Every restore row is measured twice: *{WARM.strip()}* = right after its own save, the bytes still in the "
        "page cache (a job restarted on the same node), and without the suffix after the page cache was dropped "
        "as above (cold). *tc* = torch_checkpointing 0.1.1's `CheckpointManager` ("
        + (tc_missing() or "sync and async managers; O_DIRECT off, as its default raises EINVAL on this ext4; it "
           "does not fsync, so its save rows are not durable writes") + ").",
        "",
    ]
    if not has_async():
        header += ["fito's `save(..., blocking=False)` did not exist at this commit: no fito async rows.", ""]
    md = md[:2] + header + md[2:] + ["### Issue goals (default hash)", ""] + goal_lines + [""]
    if profiles:
        md += ["### cProfile of one fito save/restore (main thread, top by own time)", "", "```",
               *[p.rstrip() for p in profiles], "```", ""]
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text("\n".join(md))
        print(f"wrote {OUT}")
    return 0


def _row_order(samples: dict[str, list[float]]) -> list[str]:
    """Floors first, then saves, async, restores, hashing."""
    def key(row: str) -> tuple[int, str]:
        groups = ["raw durable write", "torch.save", "DCP save", "tc save", "fito save", "host memcpy",
                  "DCP async_save stall", "tc async stall", "fito async stall", "DCP async_save total",
                  "tc async total", "fito async total", "raw read", "torch.load", "DCP load", "tc load",
                  "fito restore", "hash"]
        for i, g in enumerate(groups):
            if row.startswith(g):
                return i, row
        return len(groups), row
    return sorted(samples, key=key)


if __name__ == "__main__":
    raise SystemExit(main())
