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
