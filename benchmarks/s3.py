"""Checkpoints on S3 (issue 17): fito save and restore against a local SeaweedFS, side by side in one run with
the floor of the same bytes through obstore, DCP's fsspec writer/reader on s3fs, and s3torchconnector's DCP
writer/reader.

    PYTHONPATH=$PWD/src python3 benchmarks/s3.py [--gb 1] [--repeats 3] [--no-write]

Contenders (within every repeat each runs once, in an order rotated per repeat, so noise from other jobs on
this shared machine hits all alike; medians and min-max are reported):
  fito              Checkpointer(S3Storage(url), store=ObjectDecisionStore) save, then restore into the live
                    model + AdamW (every byte verified; load_state_dict included)
  raw obstore       the same bytes as ONE object by obstore's multipart put (16 MiB parts, 8 in flight, as
                    S3Storage), and read back by parallel 16 MiB ranged GETs into memory (no copy into the
                    tensors, no checks): the server's and the client's ceiling together
  dcp-s3fs          torch.distributed.checkpoint save/load (no_dist) with _fsspec_filesystem.FsspecWriter /
                    FsspecReader on s3fs, load_state_dict included
  dcp-s3torch       the same with s3torchconnector.dcp.S3StorageWriter / S3StorageReader (AWS CRT client)
The state: Linear(4096, 4096) layers + AdamW after one step (weights, exp_avg, exp_avg_sq; fp32).

Optional contenders need packages the project does not depend on (for this benchmark only):
    pip install s3fs                       # dcp-s3fs (it upgrades botocore)
    pip install s3torchconnector tenacity  # dcp-s3torch (1.5.0 takes torch 2.13 as is; tenacity is its [dcp] extra)
A contender whose package is missing is reported as not run. The server (`weed mini`, fito.testing.s3server)
runs on this machine and shares its cores with the client: its own ceiling is the raw obstore row.
Writes benchmarks/results/s3.md (unless --no-write)."""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "s3.md")
MB = 10**6
PART = 16 << 20
warnings.filterwarnings("ignore")


def make_state(gb: float) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    layers = max(1, round(gb * 1e9 / (12 * 4096 * 4096)))
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(layers)])
    opt = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    nbytes = sum(t.numel() * t.element_size() for t in tensors(model, opt))
    return model, opt, nbytes


def tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p.data for p in model.parameters()] + [t for s in opt.state.values() for t in s.values() if t.dim()]


def fingerprint(model: torch.nn.Module, opt: torch.optim.Optimizer) -> float:
    return float(sum(t.double().sum() for t in tensors(model, opt)))


class Bench:
    def __init__(self, server: Any, model: torch.nn.Module, opt: torch.optim.Optimizer, nbytes: int) -> None:
        self.server, self.model, self.opt, self.nbytes = server, model, opt, nbytes
        self.want = fingerprint(model, opt)
        from obstore.store import S3Store

        self.bucket = S3Store("fito", config=server.options())

    def scramble(self) -> None:
        """Zero the live state, so a restore that loaded nothing would show (checked after each restore)."""
        for t in tensors(self.model, self.opt):
            t.zero_()

    def check(self, name: str) -> None:
        got = fingerprint(self.model, self.opt)
        if got != self.want:
            raise SystemExit(f"{name}: the restored state differs ({got} != {self.want})")

    def drop(self, url: str) -> None:
        """Delete a contender's objects (keeps the server's disk and memory from growing over the run)."""
        import obstore

        prefix = url.split("/", 3)[3]
        keys = [o["path"] for batch in obstore.list(self.bucket, prefix=prefix + "/") for o in batch]
        for i in range(0, len(keys), 1000):
            obstore.delete(self.bucket, keys[i:i + 1000])

    # ---------------------------------------------------------------- contenders: (save, restore) pairs
    def fito(self) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
        import fito
        from fito.coord.object_store import ObjectDecisionStore
        from fito.storage.s3 import S3Storage

        url = self.server.new_url()

        def checkpointer() -> Any:
            storage = S3Storage(url, storage_options=self.server.options())
            return fito.Checkpointer(storage, store=ObjectDecisionStore.for_storage(storage))

        def save() -> None:
            checkpointer().save(1, {"model": self.model, "optim": self.opt})

        def restore() -> None:
            checkpointer().restore({"model": self.model, "optim": self.opt})
        return save, restore, lambda: self.drop(url)

    def raw(self) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
        import obstore

        url = self.server.new_url()
        key = url.split("/", 3)[3] + "/raw.bin"

        def chunks() -> Any:
            for t in tensors(self.model, self.opt):
                view = memoryview(t.detach().numpy()).cast("B")
                for at in range(0, len(view), PART):
                    yield view[at:at + PART]

        def save() -> None:
            obstore.put(self.bucket, key, chunks(), chunk_size=PART, max_concurrency=8, use_multipart=True)

        def restore() -> None:
            starts = list(range(0, self.nbytes, PART))
            got = obstore.get_ranges(self.bucket, key, starts=starts, ends=[min(s + PART, self.nbytes) for s in starts])
            if sum(len(memoryview(g)) for g in got) != self.nbytes:
                raise SystemExit("raw: short read")
        return save, restore, lambda: self.drop(url)

    def _dcp(self, writer: Callable[[str], Any], reader: Callable[[str], Any]) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
        import torch.distributed.checkpoint as dcp

        url = self.server.new_url()

        def save() -> None:
            dcp.save({"model": self.model.state_dict(), "optim": self.opt.state_dict()}, storage_writer=writer(url),
                     no_dist=True)

        def restore() -> None:
            sd = {"model": self.model.state_dict(), "optim": self.opt.state_dict()}
            dcp.load(sd, storage_reader=reader(url), no_dist=True)
            self.model.load_state_dict(sd["model"])
            self.opt.load_state_dict(sd["optim"])
        return save, restore, lambda: self.drop(url)

    def dcp_s3fs(self) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
        import s3fs  # noqa: F401 - only to fail early when it is not installed
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter

        o = self.server.options()
        kw = {"key": o["access_key_id"], "secret": o["secret_access_key"],
              "client_kwargs": {"endpoint_url": o["endpoint"], "region_name": o["region"]}}
        return self._dcp(lambda url: FsspecWriter(url, thread_count=8, sync_files=False, **kw),
                         lambda url: FsspecReader(url, **kw))

    def dcp_s3torch(self) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
        from s3torchconnector import S3ClientConfig
        from s3torchconnector._s3client import S3Client
        from s3torchconnector.dcp import S3StorageReader, S3StorageWriter

        o = self.server.options()
        os.environ.setdefault("AWS_ACCESS_KEY_ID", o["access_key_id"])
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", o["secret_access_key"])
        config = S3ClientConfig(force_path_style=True, part_size=PART)

        def at_server(x: Any) -> Any:  # its DCP classes take no endpoint: give their file system a client that has one
            x.fs._client = S3Client(o["region"], endpoint=o["endpoint"], s3client_config=config)
            return x
        return self._dcp(lambda url: at_server(S3StorageWriter(o["region"], url, s3client_config=config, thread_count=8)),
                         lambda url: at_server(S3StorageReader(o["region"], url, s3client_config=config)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="state size (model + AdamW), GB; 0.25 for a quick run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help=f"print only, do not write {OUT}")
    args = ap.parse_args()
    from fito.testing.s3server import SeaweedS3

    torch.set_num_threads(2)
    model, opt, nbytes = make_state(args.gb)
    load0 = os.getloadavg()[0]
    started = time.monotonic()
    names = ["fito", "raw", "dcp_s3fs", "dcp_s3torch"]
    times: dict[tuple[str, str], list[float]] = {}
    skipped: dict[str, str] = {}
    with SeaweedS3() as server:
        bench = Bench(server, model, opt, nbytes)
        save, restore, drop = bench.raw()  # untimed: the server creates its volumes on the first writes
        save(), restore(), drop()
        for rep in range(args.repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                if name in skipped:
                    continue
                try:
                    save, restore, drop = getattr(bench, name)()
                except ImportError as exc:
                    skipped[name] = f"not installed ({exc.name})"
                    continue
                for op, fn in (("save", save), ("restore", restore)):
                    if op == "restore" and name != "raw":
                        bench.scramble()  # outside the timing; the check after it too
                    t = time.perf_counter()
                    fn()
                    times.setdefault((name, op), []).append(time.perf_counter() - t)
                    if op == "restore" and name != "raw":
                        bench.check(name)
                    print(f"rep {rep} {name:12s} {op:8s} {times[(name, op)][-1]:7.2f} s", flush=True)
                drop()
    load1 = os.getloadavg()[0]
    rows = table(times, nbytes, skipped)
    head = (f"State {nbytes / MB:.0f} MB (Linear(4096, 4096) x {len(model)} + AdamW), {args.repeats} repeats, medians "
            f"(min-max). SeaweedFS `weed mini` on 127.0.0.1 (same machine, same cores), python {platform.python_version()}, "
            f"torch {torch.__version__}, {os.cpu_count()} cores; 1-minute load average {load0:.1f} at start, {load1:.1f} "
            f"at end; run took {(time.monotonic() - started) / 60:.1f} min.")
    text = head + "\n\n" + rows
    print(text)
    if not args.no_write:
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "w") as f:
            f.write(f"# benchmarks/s3.py --gb {args.gb} --repeats {args.repeats}\n\n{text}\n")


def table(times: dict[tuple[str, str], list[float]], nbytes: int, skipped: dict[str, str]) -> str:
    label = {"fito": "fito Checkpointer", "raw": "raw obstore (floor)", "dcp_s3fs": "DCP fsspec on s3fs",
             "dcp_s3torch": "DCP s3torchconnector"}
    out = ["| contender | save s | save MB/s | save / raw | restore s | restore MB/s | restore / raw |",
           "|---|---|---|---|---|---|---|"]
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in label:
        if name in skipped:
            out.append(f"| {label[name]} | {skipped[name]} | | | | | |")
            continue
        if (name, "save") not in med:
            continue
        cells = [label[name]]
        for op in ("save", "restore"):
            m, v = med[(name, op)], times[(name, op)]
            raw = med.get(("raw", op))
            cells += [f"{m:.2f} ({min(v):.2f}-{max(v):.2f})", f"{nbytes / MB / m:.0f}",
                      f"{m / raw:.2f}x" if raw else "-"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
