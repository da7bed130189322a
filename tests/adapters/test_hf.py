"""Hugging Face Trainer on fito (fito.adapters.hf.FitoTrainer), with the real transformers + accelerate in real
processes (one, or 2 DDP ranks on gloo): a run SIGKILLed in the middle of a checkpoint resumes with resume_from_checkpoint=True from the
newest committed step (mid-epoch: the data position matters) and ends bit-identical (weights, optimizer
moments and step counts, scheduler, the RNG stream after training) to an uninterrupted run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the test extra installs transformers")
pytest.importorskip("accelerate", reason="the test extra installs accelerate")

from fito.testing.dist import run_ranks  # noqa: E402

HERE = Path(__file__).parent
pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def run(out: Path, result: Path, *extra: str, world: int = 1) -> int:
    if world > 1:  # DDP through accelerate, on gloo
        results = run_ranks("hf_worker", [str(out), str(result), *extra], world, path=[str(HERE)], timeout=300)
        for r in results:
            if r.returncode not in (0, -9):
                raise AssertionError(f"rank {r.rank} exited {r.returncode}:\n{r.stderr[-3000:]}")
        codes = {r.returncode for r in results}
        return -9 if -9 in codes else max(codes)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(HERE)) if p),
               OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "hf_worker", str(out), str(result), *extra], env=env,
                       capture_output=True, text=True, timeout=300)
    if p.returncode not in (0, -9):
        raise AssertionError(p.stderr[-3000:])
    return p.returncode


# One process: 6 steps an epoch, 18 in all, saves at 5, 10, 15 (killed), resumed from 10 (mid-epoch 1).
# 2 ranks: 3 steps an epoch, 9 in all, saves at 5 and 9 (killed), resumed from 5 (mid-epoch 1).
@pytest.mark.parametrize("world, kill, committed, total", [(1, 15, [5, 10], 18), (2, 9, [5], 9)],
                         ids=["single", "ddp2-gloo"])
def test_kill_mid_checkpoint_then_resume_is_bit_identical(tmp_path: Path, world: int, kill: int,
                                                          committed: list[int], total: int) -> None:
    assert run(tmp_path / "whole", tmp_path / "whole.pt", world=world) == 0
    assert run(tmp_path / "crash", tmp_path / "crash.pt", "--kill-at-step", str(kill), world=world) == -9
    assert not (tmp_path / "crash.pt").exists()
    from fito.ckpt.checkpointer import Checkpointer
    with Checkpointer(tmp_path / "crash" / "fito") as ck:  # the killed step never committed
        assert ck.committed() == committed
    assert run(tmp_path / "crash", tmp_path / "crash.pt", world=world) == 0
    a, b = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "crash.pt")
    assert a["started_at"] == 0 and b["started_at"] == committed[-1]  # it resumed (a fresh start would also match)
    assert a["global_step"] == b["global_step"] == total
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optim"].keys() == b["optim"].keys() and a["optim"]
    for i in a["optim"]:
        for k in a["optim"][i]:
            assert torch.equal(a["optim"][i][k], b["optim"][i][k]), (i, k)
    assert a["sched"] == b["sched"]
    assert torch.equal(a["rng"], b["rng"])
