"""Hugging Face Trainer on fito (fito.adapters.hf.FitoTrainer), with the real transformers + accelerate in real
processes (one, or 2 DDP ranks on gloo): a run SIGKILLed in the middle of a checkpoint resumes with resume_from_checkpoint=True from the
newest committed step (mid-epoch: the data position matters) and ends bit-identical (weights, optimizer
moments and step counts, scheduler, the RNG stream after training) to an uninterrupted run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the test extra installs transformers")
pytest.importorskip("accelerate", reason="the test extra installs accelerate")

from kill_resume import assert_same_weights_and_optimizer, run_worker  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def run(out: Path, result: Path, *extra: str, world: int = 1) -> list[int]:
    return run_worker("hf_worker", [str(out), str(result), *extra], world, timeout=300, env={"OMP_NUM_THREADS": "1"})


# One process: 6 steps an epoch, 18 in all, saves at 5, 10, 15 (killed), resumed from 10 (mid-epoch 1).
# 2 ranks: 3 steps an epoch, 9 in all, saves at 5 and 9 (killed), resumed from 5 (mid-epoch 1).
@pytest.mark.parametrize("world, kill, committed, total", [(1, 15, [5, 10], 18), (2, 9, [5], 9)],
                         ids=["single", "ddp2-gloo"])
def test_kill_mid_checkpoint_then_resume_is_bit_identical(tmp_path: Path, world: int, kill: int,
                                                          committed: list[int], total: int) -> None:
    assert set(run(tmp_path / "whole", tmp_path / "whole.pt", world=world)) == {0}
    assert -9 in run(tmp_path / "crash", tmp_path / "crash.pt", "--kill-at-step", str(kill), world=world)
    assert not (tmp_path / "crash.pt").exists()
    from fito.ckpt.checkpointer import Checkpointer
    with Checkpointer(tmp_path / "crash" / "fito") as ck:  # the killed step never committed
        assert ck.committed() == committed
    assert set(run(tmp_path / "crash", tmp_path / "crash.pt", world=world)) == {0}
    a, b = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "crash.pt")
    assert a["started_at"] == 0 and b["started_at"] == committed[-1]  # it resumed (a fresh start would also match)
    assert a["global_step"] == b["global_step"] == total
    assert_same_weights_and_optimizer(a, b)
    assert a["sched"] == b["sched"]
    assert torch.equal(a["rng"], b["rng"])
