"""torchtitan 0.3.0 on fito (fito.adapters.torchtitan.FitoCheckpointManager), with torchtitan's own optimizer
and scheduler containers and ModelWrapper in a plain loop (torchtitan's Trainer is not run: see the adapter's
docstring): a run SIGKILLed in the middle of a checkpoint resumes with manager.load() from the newest committed
step and ends bit-identical to an uninterrupted run.

torchtitan is not in the test extra (its PyPI dependencies pull wandb, tensorboard and datasets); install it
beside torch with `pip install --no-deps torchtitan==0.3.0 torch_checkpointing spmd_types==0.2.3 tyro einops
torchdata docstring_parser typeguard shtab` to run this test. Without it the test is reported as skipped."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("torchtitan.components.checkpointer.base",
                    reason="torchtitan 0.3.0 is not installed (see this module's docstring)")

from kill_resume import assert_same_weights_and_optimizer, run_worker  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def run(dump: Path, result: Path, *extra: str) -> list[int]:
    return run_worker("torchtitan_worker", [str(dump), str(result), *extra], 1, timeout=300,
                      env={"OMP_NUM_THREADS": "1"})


def test_kill_mid_checkpoint_then_load_is_bit_identical(tmp_path: Path) -> None:
    assert run(tmp_path / "whole", tmp_path / "whole.pt") == [0]
    assert run(tmp_path / "crash", tmp_path / "crash.pt", "--kill-at-step", "8") == [-9]
    from fito.ckpt.checkpointer import Checkpointer
    with Checkpointer(tmp_path / "crash" / "checkpoint") as ck:  # step 8 never committed
        assert ck.committed() == [4]
    assert run(tmp_path / "crash", tmp_path / "crash.pt") == [0]
    a, b = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "crash.pt")
    assert a["started_at"] == 0 and b["started_at"] == 4  # it resumed (a fresh start would also match)
    assert_same_weights_and_optimizer(a, b)
    assert a["sched"] == b["sched"] and a["lr"] == b["lr"]
    assert torch.equal(a["rng"], b["rng"])


def test_unsupported_options_are_refused(tmp_path: Path) -> None:
    from fito.adapters.torchtitan import FitoCheckpointManager
    cfg = FitoCheckpointManager.Config(enable=True, exclude_from_loading=["dataloader"])
    with pytest.raises(ValueError, match="exclude_from_loading"):
        FitoCheckpointManager(cfg, dataloader=None, model_parts=[torch.nn.Linear(2, 2)], optimizers=None,
                              lr_schedulers=None, states={}, base_folder=str(tmp_path))
