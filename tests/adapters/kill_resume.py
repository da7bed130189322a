"""The adapters' kill-then-resume harness: run a worker module of this directory in one process or as gloo
ranks (a run may SIGKILL itself mid-checkpoint: exit -9), and compare the training state two runs dumped."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fito.testing.dist import run_ranks

HERE = os.path.dirname(os.path.abspath(__file__))


def run_worker(module: str, args: Sequence[str], world: int, *, timeout: float,
               env: Mapping[str, str] = {}) -> list[int]:
    """`python -m module args...` on `world` ranks (DDP on gloo) or in one process (world 1, with `env`); the
    exit codes, each 0 or -9 (killed by the worker itself), else an AssertionError with the stderr tail."""
    if world > 1:
        results = run_ranks(module, list(args), world, path=[HERE], timeout=timeout)
        for r in results:
            if r.returncode not in (0, -9):
                raise AssertionError(f"rank {r.rank} exited {r.returncode}:\n{r.stderr[-3000:]}")
        return [r.returncode for r in results]
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), HERE) if p),
                    **env)
    p = subprocess.run([sys.executable, "-m", module, *args], env=full_env, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode not in (0, -9):
        raise AssertionError(p.stderr[-3000:])
    return [p.returncode]


def assert_same_weights_and_optimizer(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bit-identical model weights and optimizer state (moments and step counts) in two runs' dumps."""
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optim"].keys() == b["optim"].keys() and a["optim"]
    for i in a["optim"]:
        for k in a["optim"][i]:
            assert torch.equal(a["optim"][i][k], b["optim"][i][k]), (i, k)
