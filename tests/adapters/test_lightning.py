"""Lightning on fito (fito.adapters.lightning), with the real Lightning Trainer in real processes (one, or 2
ranks on gloo under DDP and under FSDP2): a run SIGKILLed in the middle of a checkpoint resumes with
ckpt_path="last" from the newest committed step and ends bit-identical (weights, optimizer moments and step counts, scheduler) to an uninterrupted run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning", reason="the test extra installs lightning")

from fito.testing.dist import run_ranks  # noqa: E402

HERE = Path(__file__).parent
pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def run(tmp: Path, name: str, world: int, *extra: str) -> list[int]:
    args = [str(tmp / name), str(tmp / f"{name}.pt"), *extra]
    if world == 1:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(HERE)) if p))
        p = subprocess.run([sys.executable, "-m", "lightning_worker", *args], env=env, capture_output=True,
                           text=True, timeout=240)
        if p.returncode not in (0, -9):
            raise AssertionError(p.stderr[-3000:])
        return [p.returncode]
    results = run_ranks("lightning_worker", args, world, path=[str(HERE)], timeout=240)
    codes = [r.returncode for r in results]
    for r in results:
        if r.returncode not in (0, -9):
            raise AssertionError(f"rank {r.rank} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return codes


def assert_same(a_path: Path, b_path: Path) -> None:
    a, b = torch.load(a_path), torch.load(b_path)
    assert a["global_step"] == b["global_step"] > 0
    assert a["started_at"] == 0 and b["started_at"] > 0  # it resumed (a fresh start would also match)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optim"].keys() == b["optim"].keys() and a["optim"]
    for i in a["optim"]:
        for k in a["optim"][i]:
            assert torch.equal(a["optim"][i][k], b["optim"][i][k]), (i, k)
    assert a["sched"] == b["sched"]


@pytest.mark.parametrize("world, strategy", [(1, []), (2, []), (2, ["--fsdp"])],
                         ids=["single", "ddp2-gloo", "fsdp2-gloo"])
def test_kill_mid_checkpoint_then_resume_last_is_bit_identical(tmp_path: Path, world: int, strategy: list[str]) -> None:
    """FSDP2: Lightning's ModelParallelStrategy with fully_shard over 2 gloo ranks (each saves its shards)."""
    run(tmp_path, "whole", world, *strategy)
    killed = run(tmp_path, "crash", world, *strategy, "--kill-at-epoch", "1")
    assert -9 in killed, f"the run was not killed mid-checkpoint: exit codes {killed}"
    assert not (tmp_path / "crash.pt").exists()
    from fito.ckpt.checkpointer import Checkpointer
    with Checkpointer(tmp_path / "crash") as ck:  # epoch 0's step committed, epoch 1's never did
        assert ck.committed() == [8 // world]
    run(tmp_path, "crash", world, *strategy)  # ckpt_path="last": resumes from the committed step
    assert_same(tmp_path / "whole.pt", tmp_path / "crash.pt")
