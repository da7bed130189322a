"""Lightning on fito (fito.adapters.lightning), with the real Lightning Trainer in real processes (one, or 2
ranks on gloo under DDP and under FSDP2): a run SIGKILLed in the middle of a checkpoint resumes with
ckpt_path="last" from the newest committed step and ends bit-identical (weights, optimizer moments and step counts, scheduler) to an uninterrupted run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning", reason="the test extra installs lightning")

from kill_resume import assert_same_weights_and_optimizer, run_worker  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def run(tmp: Path, name: str, world: int, *extra: str) -> list[int]:
    return run_worker("lightning_worker", [str(tmp / name), str(tmp / f"{name}.pt"), *extra], world, timeout=240)


def assert_same(a_path: Path, b_path: Path) -> None:
    a, b = torch.load(a_path), torch.load(b_path)
    assert a["global_step"] == b["global_step"] > 0
    assert a["started_at"] == 0 and b["started_at"] > 0  # it resumed (a fresh start would also match)
    assert_same_weights_and_optimizer(a, b)
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
