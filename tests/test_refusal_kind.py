"""When one rank refuses a restore, every rank raises the lowest failing rank's class (fito.errors.same_kind),
so the ranks' `except` clauses take the same branch; the 2-rank mutation fuzzer checks it end to end."""
from __future__ import annotations

import pytest

from fito import errors


@pytest.mark.parametrize("cls", [errors.CheckpointCorruptError, errors.UnsafeCheckpointError, errors.CheckpointUnreadableError,
                                 errors.DecisionLogDamagedError, errors.StateMismatchError, errors.RestoreFailedError])
def test_a_refusal_another_rank_can_summarise_keeps_its_class(cls):
    assert errors.same_kind(cls.__name__) is cls


@pytest.mark.parametrize("kind", ["ValueError", "SaveAbortedError", "FitoError", "same_kind", "", "os"])
def test_anything_else_is_summarised_as_corrupt(kind):
    assert errors.same_kind(kind) is errors.CheckpointCorruptError


def test_the_refusal_names_the_place_and_every_reason_in_that_class():
    unsafe = errors.refusal("UnsafeCheckpointError", "epochs/3/m.json", "rank 1: UnsafeCheckpointError: a forged path")
    assert type(unsafe) is errors.UnsafeCheckpointError and unsafe.path == "epochs/3/m.json"
    assert "rank 1: UnsafeCheckpointError: a forged path" in str(unsafe) and "nothing was restored on any rank" in str(unsafe)
    mismatch = errors.refusal("RestoreFailedError", "epochs/3/m.json", "rank 0: RestoreFailedError: refused", step=3)
    assert type(mismatch) is errors.RestoreFailedError
    assert str(mismatch) == "epochs/3/m.json (step 3): rank 0: RestoreFailedError: refused; nothing was restored on any rank"
    assert type(errors.refusal("KeyError", "m.json", "rank 1: KeyError: 'x'")) is errors.CheckpointCorruptError
