"""The one way to run N ranks on one machine: `run_ranks` starts a Python module N times as separate processes
joined by torch.distributed (gloo on 127.0.0.1, MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE set), and
`free_port` is the one free-port helper. Used by `fito demo` and the multi-rank tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RankResult:
    rank: int
    returncode: int
    stdout: str
    stderr: str


def run_ranks(module: str, args: Sequence[str], world_size: int, *, timeout: float = 300.0,
              env: dict[str, str] | None = None, path: Sequence[str] = ()) -> list[RankResult]:
    """Run `python -m module args...` as ranks 0..world_size-1; wait for all; return their results.
    `path`: directories appended to PYTHONPATH (where a test's worker module lives)."""
    port = free_port()
    procs, outputs = [], []
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), *path) if p)
    for rank in range(world_size):
        rank_env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                        WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1", PYTHONPATH=pythonpath)
        rank_env.update(env or {})
        # Files, not pipes: a pipe read only once its rank ends fills up (64 KiB) and blocks a rank that writes
        # more while the others wait for it in a collective -- every rank hangs.
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        outputs.append((out, err))
        procs.append(subprocess.Popen([sys.executable, "-m", module, *args], env=rank_env, stdout=out, stderr=err, text=True))
    results = []
    timed_out: int | None = None
    for rank, (p, (out, err)) in enumerate(zip(procs, outputs)):
        note = ""
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            p.wait()
            note = f"\n[fito] rank {rank} killed after {timeout}s timeout"
            timed_out = rank
        with out, err:
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if not note and timed_out is not None:  # killed above, with the rank that timed out
            note = f"\n[fito] rank {rank} killed after rank {timed_out}'s timeout" if p.returncode < 0 else ""
        elif not note:
            note = _death(rank, p.returncode, stdout)
        results.append(RankResult(rank, p.returncode, stdout, stderr + note))
    return results


def _death(rank: int, returncode: int, out: str) -> str:
    """A note for a rank killed by a signal, saying how far its output got: one that printed its result
    and then aborted (SIGABRT) most likely died at interpreter exit, after the code under test."""
    if returncode >= 0:
        return ""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    lines = out.strip().splitlines()
    last = f"after printing {len(lines)} line(s) to stdout, the last: {lines[-1][:300]!r}" if lines else "before printing anything to stdout"
    return f"\n[fito] rank {rank} died of {name} (returncode {returncode}) {last}"
