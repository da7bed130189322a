"""Crash states of torch.distributed.checkpoint saving over an existing checkpoint, counted.

Runs the same crash-state generator as fito's own check (fito.testing.crashstates) against
`dcp.save(..., storage_writer=FileSystemWriter(folder))` into a folder that already holds the previous
step's checkpoint (single process, no process group). Every file operation DCP performs is recorded
(open "wb" truncates the old data file in place; writes; os.fsync; unlink of the old .metadata; rename of
.metadata.tmp), then every post-crash disk POSIX allows at every point is materialised and loaded with
`dcp.load`, and classified: loud error, whole old step, whole new step, SILENT MIX (values of both steps),
or silent garbage (values of neither, e.g. zero-filled blocks).

Usage: python benchmarks/dcp_crash_states.py [--json] [--size N]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception
from torch.distributed.checkpoint.filesystem import FileSystem, FileSystemReader, FileSystemWriter

from fito.testing.crashstates import materialise, snapshot_dir
from fito.model.posix_crash import Op, each_crash_state


class RecordingStream(io.RawIOBase):
    def __init__(self, raw: Any, rel: str, log: list[Op]) -> None:
        self.raw, self.rel, self.log = raw, rel, log

    def write(self, data: Any) -> int:
        offset = self.raw.tell()
        n = self.raw.write(data)
        self.log.append(Op("write", self.rel, (offset, bytes(memoryview(data).cast("B")[:n]))))
        return n

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, *args: Any) -> int:
        return self.raw.seek(*args)

    def fileno(self) -> int:
        return self.raw.fileno()

    def flush(self) -> None:
        self.raw.flush()

    def writable(self) -> bool:
        return True


class RecordingFileSystem(FileSystem):
    """DCP's FileSystem, logging each primitive operation relative to `root`."""

    def __init__(self, root: Path, log: list[Op], fds: dict[int, str]) -> None:
        super().__init__()
        self.root, self.log, self.fds = root, log, fds

    def _rel(self, p: Any) -> str:
        return Path(p).relative_to(self.root).as_posix()

    @contextlib.contextmanager
    def create_stream(self, path: Any, mode: str) -> Iterator[io.IOBase]:
        if "w" not in mode:
            with super().create_stream(path, mode) as s:
                yield s
            return
        rel = self._rel(path)
        self.log.append(Op("trunc" if Path(path).exists() else "create", rel))
        with super().create_stream(path, mode) as raw:
            self.fds[raw.fileno()] = rel
            try:
                yield RecordingStream(raw, rel, self.log)  # type: ignore[misc]
            finally:
                self.fds.pop(raw.fileno(), None)

    def rename(self, path: Any, new_path: Any) -> None:
        super().rename(path, new_path)
        self.log.append(Op("rename", self._rel(path), self._rel(new_path)))

    def rm_file(self, path: Any) -> None:
        super().rm_file(path)
        self.log.append(Op("unlink", self._rel(path)))

    def mkdir(self, path: Any) -> None:
        if not Path(path).exists():
            super().mkdir(path)
            self.log.append(Op("mkdir", self._rel(path)))


def state(step: int, size: int, n_tensors: int) -> dict[str, torch.Tensor]:
    """Every tensor filled with the step number: a loaded state holding two values is a mix."""
    return {f"layer{i}.weight": torch.full((size, size), float(step)) for i in range(n_tensors)} | {
        "optimizer.exp_avg": torch.full((size,), float(step)), "optimizer.step": torch.tensor(float(step)),
    }


@contextlib.contextmanager
def recording_fsync(log: list[Op], fds: dict[int, str]) -> Iterator[None]:
    """DCP calls os.fsync(stream.fileno()) itself; log it while it runs."""
    real = os.fsync

    def fsync(fd: int) -> None:
        real(fd)
        if fd in fds:
            log.append(Op("fsync_file", fds[fd]))

    os.fsync = fsync  # type: ignore[assignment]
    try:
        yield
    finally:
        os.fsync = real  # type: ignore[assignment]


def run(writer_kwargs: dict[str, Any], *, size: int, n_tensors: int, workdir: Path) -> dict[str, Any]:
    folder = workdir / "ckpt"
    warnings.filterwarnings("ignore")
    logging.disable(logging.CRITICAL)  # DCP logs a traceback for every failed load; we count them instead
    dcp.save(state(1, size, n_tensors), storage_writer=FileSystemWriter(folder, **writer_kwargs))
    os.sync()
    initial = snapshot_dir(folder)
    log: list[Op] = []
    fds: dict[int, str] = {}
    writer = FileSystemWriter(folder, **writer_kwargs)
    writer.fs = RecordingFileSystem(folder, log, fds)
    with recording_fsync(log, fds):
        dcp.save(state(2, size, n_tensors), storage_writer=writer)
    counts: dict[str, int] = {}  # distinct crash states by outcome
    examples: dict[str, str] = {}
    by_point: dict[int, set[str]] = {}  # crash point (ops done) -> outcomes possible there
    outcome_of: dict[tuple, str] = {}
    t0 = time.perf_counter()
    n = 0
    for cs in each_crash_state(initial, log, dedupe=False):
        key = cs.files
        if key not in outcome_of:
            n += 1
            outcome_of[key] = kind = load_outcome(cs, workdir / f"crash-{n:05d}", size, n_tensors)
            counts[kind] = counts.get(kind, 0) + 1
            examples.setdefault(kind, cs.describe(log))
        by_point.setdefault(cs.op_index, set()).add(outcome_of[key])
    seconds = time.perf_counter() - t0
    shutil.rmtree(folder)
    points = len(by_point)
    silent = sum(1 for o in by_point.values() if any(k.startswith("SILENT") for k in o))
    nothing = sum(1 for o in by_point.values() if all(k.startswith("loud") for k in o))
    old_safe = sum(1 for o in by_point.values() if "whole step 1 (old)" in o or "whole step 2 (new)" in o)
    return {"writer": writer_kwargs, "ops": len(log), "crash_states": n, "outcomes": counts,
            "crash_points": points, "points_with_silent_wrong_load": silent,
            "points_where_every_state_fails_to_load": nothing, "points_where_some_state_loads_a_whole_step": old_safe,
            "seconds": round(seconds, 2), "states_per_second": round(n / seconds, 1) if seconds else None,
            "examples": examples, "log": [op.label() for op in log]}


def load_outcome(cs: Any, target: Path, size: int, n_tensors: int) -> str:
    materialise(cs, target, decision_log=None)
    into = state(-1, size, n_tensors)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            dcp.load(into, storage_reader=FileSystemReader(target))
        values = sorted({float(v) for t in into.values() for v in t.reshape(-1).unique().tolist()})
        if values == [1.0]:
            kind = "whole step 1 (old)"
        elif values == [2.0]:
            kind = "whole step 2 (new)"
        elif set(values) <= {1.0, 2.0}:
            kind = "SILENT MIX of steps 1 and 2"
        else:
            kind = "SILENT GARBAGE (values of neither step)"
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - loud failures are counted, not hidden
        kind = f"loud error ({type(exc).__name__})"
    shutil.rmtree(target)
    return kind


CONFIGS = {
    "default (one file per rank, 1 thread)": {},
    "thread_count=2 (two data files)": {"thread_count": 2},
    "single_file_per_rank=False (one file per tensor)": {"single_file_per_rank": False},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--tensors", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    for name, kwargs in CONFIGS.items():
        with tempfile.TemporaryDirectory(prefix="dcp-crash-") as tmp:
            results[name] = run(kwargs, size=args.size, n_tensors=args.tensors, workdir=Path(tmp))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"torch {torch.__version__}: dcp.save of step 2 over step 1 in the same folder "
          f"({args.tensors} x {args.size}x{args.size} + 2 optimizer tensors)")
    for name, r in results.items():
        print(f"\n== {name}: {r['ops']} file ops recorded, {r['crash_states']} distinct crash states, {r['seconds']} s")
        print(f"  crash points (a power cut after op k, k = 0..{r['ops']}): {r['crash_points']}; a silent wrong load is "
              f"possible at {r['points_with_silent_wrong_load']}; nothing loads at all at "
              f"{r['points_where_every_state_fails_to_load']}")
        for kind, count in sorted(r["outcomes"].items(), key=lambda kv: -kv[1]):
            print(f"  {count:5d}  {kind}")
        for kind, example in r["examples"].items():
            if kind.startswith("SILENT"):
                print(f"  e.g. {kind}: {example}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
