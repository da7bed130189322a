"""Bytes fetched from storage per restore of a DDP checkpoint (replicated state: every rank needs every byte),
fito's cooperative read vs fito with it off (FITO_COOPERATIVE_READ=0, the path main had) vs stock DCP, on 2
and 4 gloo ranks; and the restore times, side by side in one run (issue 17, "read each stored byte once").

    PYTHONPATH=$PWD/src python3 benchmarks/coop_read.py [--repeats 3] [--worlds 2,4] [--layers 8 --width 1024] [--s3]

--s3: the fito rows again with the checkpoint on a local SeaweedFS S3 server (fito.testing.s3server, `weed
mini` on 127.0.0.1), where every fetched byte is a ranged GET; no DCP row there (its fsspec reader needs s3fs).

Every read is counted the same way for all three, by a wrapper at the storage seam: fito restores through
fito.testing.counting.CountingStorage (its bytes in the data objects: tensor blocks, headers, the entries' JSON
documents; the manifest apart), DCP through a FileSystemReader whose FileSystem counts what its streams
deliver (`.distcp` files; `.metadata` apart). Each restore goes into a fresh model and a fresh AdamW and is
checked against the saved sums. DCP is used as documented: get_state_dict, dcp.load(FileSystemReader),
set_state_dict. The page cache is dropped before every timed restore where allowed (root), else not.
Writes benchmarks/results/coop_read.md (unless --no-write)."""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import bench_io  # beside this script
from sharded import checksum, git_head, linear_stack, machine, rotated, same_sums

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "coop_read.md"
MB = 10**6
METHODS = ["fito, cooperative", "fito, each rank reads", "stock DCP"]
warnings.filterwarnings("ignore")


def counting_fs():  # type: ignore[no-untyped-def]
    from torch.distributed.checkpoint.filesystem import FileSystem

    class CountingFileSystem(FileSystem):
        """DCP's FileSystem, counting the bytes its read streams deliver, per file name."""

        def __init__(self) -> None:
            super().__init__()
            self.read: dict[str, int] = {}

        @contextmanager
        def create_stream(self, path: Any, mode: str) -> Iterator[io.IOBase]:
            with super().create_stream(path, mode) as stream:
                yield _Counted(stream, self.read, Path(path).name) if "r" in mode else stream

    return CountingFileSystem()


class _Counted(io.RawIOBase):
    def __init__(self, inner: Any, counts: dict[str, int], name: str) -> None:
        self.inner, self.counts, self.name = inner, counts, name

    def _add(self, n: int) -> None:
        self.counts[self.name] = self.counts.get(self.name, 0) + n

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self._add(len(data))
        return data

    def readinto(self, buf: Any) -> int:
        n = self.inner.readinto(buf) or 0
        self._add(n)
        return n

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()


def rank_main(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from datetime import timedelta
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    import fito
    from fito import knobs
    from fito.storage import open_storage
    from fito.testing.counting import CountingStorage
    import fito.ckpt.sharded_restore  # noqa: F401  (imported before the timing)

    dist.init_process_group("gloo", timeout=timedelta(seconds=600))
    rank, world = dist.get_rank(), dist.get_world_size()
    base = Path(args.dir) / f"w{world}"
    fito_root: Any = args.url or base / "fito"
    methods = [m for m in METHODS if not (args.url and m == "stock DCP")]

    def fresh(seed: int):  # type: ignore[no-untyped-def]
        model = torch.nn.parallel.DistributedDataParallel(linear_stack(args.layers, args.width, seed))
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    model, opt = fresh(0)
    model(torch.randn(2, args.width)).square().mean().backward()
    opt.step()
    want = checksum(model, opt)
    replica = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + sum(
        t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    with fito.Checkpointer(fito_root, progress=False) as ck:
        ck.save(1, {"model": model, "optim": opt})
    msd, osd = get_state_dict(model, opt)
    if not args.url:
        dcp.save({"model": msd, "optim": osd}, storage_writer=FileSystemWriter(base / "dcp"))
    del model, opt, msd, osd
    out: dict[str, Any] = {"world": world, "replica": replica}

    def restore(method: str) -> tuple[float, int, int]:
        model, opt = fresh(1)
        if rank == 0 and args.drop:
            bench_io.drop_caches()
        dist.barrier()
        t = time.perf_counter()
        if method == "stock DCP":
            msd, osd = get_state_dict(model, opt)
            sd = {"model": msd, "optim": osd}
            reader = FileSystemReader(base / "dcp")
            reader.fs = counting_fs()
            dcp.load(sd, storage_reader=reader)
            set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
            data = sum(n for name, n in reader.fs.read.items() if name.endswith(".distcp"))
            meta = sum(reader.fs.read.values()) - data
        else:
            storage = CountingStorage(open_storage(fito_root, create=False))
            with knobs.override(FITO_COOPERATIVE_READ=int(method == "fito, cooperative")):
                with fito.Checkpointer(storage, progress=False) as ck:
                    ck.restore({"model": model, "optim": opt})
            meta = sum(n for rel, _, n in storage.reads if rel.endswith("manifest.json"))
            data = storage.total() - meta
        dist.barrier()
        seconds = time.perf_counter() - t
        same_sums(checksum(model, opt), want, method)
        return seconds, data, meta

    for rep in range(args.repeats):
        for method in rotated(methods, rep):
            seconds, data, meta = restore(method)
            counts = [torch.tensor([data, meta], dtype=torch.int64) for _ in range(world)]
            dist.all_gather(counts, torch.tensor([data, meta], dtype=torch.int64))
            out.setdefault(method, {"s": [], "data": [], "meta": []})
            out[method]["s"].append(seconds)
            out[method]["data"].append([int(c[0]) for c in counts])
            out[method]["meta"].append([int(c[1]) for c in counts])
    if rank == 0:
        print(json.dumps(out), flush=True)
    dist.destroy_process_group()


def ranks(world: int, args: argparse.Namespace, url: str = "", env: dict[str, str] | None = None) -> dict[str, Any]:
    from fito.testing.dist import run_ranks

    cmd = ["--rank", "1", "--dir", args.dir, *(["--url", url] if url else []), "--repeats", str(args.repeats), "--layers", str(args.layers),
           "--width", str(args.width), *(["--drop"] if args.drop else [])]
    results = run_ranks("coop_read", cmd, world, timeout=1800, path=[str(HERE)], env=env)
    for r in results:
        if r.returncode:
            sys.exit(f"{world} ranks: rank {r.rank} failed (rc {r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(results[0].stdout.strip().splitlines()[-1])


def report(res: dict[str, Any]) -> list[str]:
    lines = ["| storage, ranks | method | bytes fetched, all ranks | per rank (first repeat) | × one replica | "
             "manifest/metadata bytes | restore median s | min–max s |", "|---:|---|---:|---|---:|---:|---:|---:|"]
    for key, r in res.items():
        for method in [m for m in METHODS if m in r]:
            m = r[method]
            total = sum(m["data"][0])
            s = m["s"]
            lines.append(f"| {key} | {method} | {total / MB:.1f} MB | {', '.join(f'{b / MB:.1f}' for b in m['data'][0])} | "
                         f"{total / r['replica']:.2f} | {sum(m['meta'][0]) / 1e3:.1f} kB | {statistics.median(s):.3f} | "
                         f"{min(s):.3f}–{max(s):.3f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worlds", default="2,4")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--dir", default="/tmp/fito-bench-coop")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--drop", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--s3", action="store_true", help="also the fito rows on a local SeaweedFS S3 server")
    ap.add_argument("--rank", help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank:
        rank_main(args)
        return 0
    load0, started, head = os.getloadavg(), time.time(), git_head()
    args.drop = bench_io.drop_caches()
    shutil.rmtree(args.dir, ignore_errors=True)
    res: dict[str, Any] = {}
    try:
        for world in (int(w) for w in args.worlds.split(",")):
            res[f"local disk, {world}"] = ranks(world, args)
        if args.s3:
            from fito.testing.s3server import SeaweedS3

            with SeaweedS3() as s3:
                for world in (int(w) for w in args.worlds.split(",")):
                    res[f"S3 (SeaweedFS), {world}"] = ranks(world, args, s3.new_url(), s3.env())
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    replica = next(iter(res.values()))["replica"]
    meta = (f"Machine: {machine()}. fito at commit {head}. DDP Linear({args.width}, {args.width}) x {args.layers} + "
            f"AdamW, one replica = {replica / MB:.1f} MB. {args.repeats} repeats, methods interleaved (order rotated "
            f"per repeat). Run took {(time.time() - started) / 60:.1f} min; load average at start {load0[0]:.2f} on "
            "2 cores shared with other jobs. Page cache: " + ("dropped before every timed restore." if args.drop else
                                                             "NOT dropped (not allowed here): reads hit the page cache."))
    text = "\n".join(["## Cooperative restore reads (issue 17) (`benchmarks/coop_read.py`)", "", meta, "", *report(res), ""])
    print(text)
    print(json.dumps(res), file=sys.stderr)
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text + "\n<details><summary>raw samples (JSON)</summary>\n\n```\n" + json.dumps(res) + "\n```\n</details>\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
