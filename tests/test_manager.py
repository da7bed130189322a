"""CheckpointManager and the example training script: resume-or-start, save cadence, keep K."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fito

EXAMPLE = Path(__file__).parent.parent / "examples" / "train_with_fito.py"


def test_manager_saves_every_n_steps_and_resumes(tmp_path):
    state = {"w": torch.zeros(3)}
    with fito.CheckpointManager(tmp_path, state, every_steps=4, keep=2) as mgr:
        assert mgr.resume() == 0
        saved = []
        for step in range(1, 11):
            state["w"] += 1
            if mgr.step(step) is not None:
                saved.append(step)
    assert saved == [4, 8]
    assert fito.Checkpointer(tmp_path).committed() == [4, 8]
    fresh = {"w": torch.zeros(3)}
    with fito.CheckpointManager(tmp_path, fresh, every_steps=4) as mgr:
        assert mgr.resume() == 8 and fresh["w"].eq(8).all()


def test_manager_time_based_saves(tmp_path):
    state = {"w": torch.zeros(1)}
    with fito.CheckpointManager(tmp_path, state, every_steps=None, every_seconds=0.0, blocking=True) as mgr:
        assert mgr.step(1) == 1 and mgr.step(2) == 2


@pytest.mark.slow
@pytest.mark.multiproc
def test_example_script_runs_and_resumes(tmp_path):
    first = subprocess.run([sys.executable, str(EXAMPLE), "--dir", str(tmp_path), "--steps", "100", "--every", "50"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "starting at step 0" in first.stdout and "committed steps: [50, 100]" in first.stdout
    again = subprocess.run([sys.executable, str(EXAMPLE), "--dir", str(tmp_path), "--steps", "150", "--every", "50"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "starting at step 100" in again.stdout and "committed steps: [50, 100, 150]" in again.stdout
