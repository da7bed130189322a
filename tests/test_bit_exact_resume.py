"""N steps straight vs. crash + restore at several points: every tensor and value identical."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import fito
from training_state import assert_same, make_state, snapshot, train_steps

TOTAL = 12


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _straight() -> dict:
    _seed_all(7)
    state = make_state(0)
    train_steps(state, TOTAL)
    return snapshot(state)


@pytest.mark.parametrize("crash_at", [1, 5, 11])
def test_resume_is_bit_exact(tmp_path, crash_at):
    expected = _straight()

    _seed_all(7)
    state = make_state(0)
    train_steps(state, crash_at)
    fito.Checkpointer(tmp_path).save(crash_at, state)
    train_steps(state, 1)  # progress after the save that the crash throws away
    del state

    _seed_all(12345)  # a new process: different RNG, fresh objects
    resumed = make_state(3)
    step = fito.Checkpointer(tmp_path).restore(resumed)
    assert step == crash_at
    train_steps(resumed, TOTAL - step)
    assert_same(expected, snapshot(resumed))


def test_a_missed_component_breaks_bit_exactness():
    """Control: the comparison is sharp enough to notice an RNG state that was not restored."""
    expected = _straight()
    _seed_all(7)
    state = make_state(0)
    train_steps(state, 5)
    saved = {k: v for k, v in state.items() if k != "rng"}
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        fito.Checkpointer(d).save(5, saved)
        _seed_all(999)
        resumed = make_state(3)
        fito.Checkpointer(d).restore({k: v for k, v in resumed.items() if k != "rng"})
        train_steps(resumed, TOTAL - 5)
    with pytest.raises(AssertionError):
        assert_same(expected, snapshot(resumed))
