"""Two writers on one root (issue 21, defect 5): the newer takes the fencing token and the older one's saves
abort. That stays (a root has one writer at a time), but the error the fenced-out writer gets says what
happened -- another coordinator took the root, and when it committed -- and what to do: a root of its own for
a second writer ("save best" beside a periodic manager)."""
from __future__ import annotations

import pytest
import torch

import fito
from fito.coord.base import Decision
from fito.coord.sqlite import SqliteDecisionStore


def test_a_fenced_out_writer_is_told_who_took_the_root_and_what_to_do(tmp_path):
    model = torch.nn.Linear(2, 2)
    periodic = fito.Checkpointer(tmp_path)
    periodic.save(1, {"m": model})
    best = fito.Checkpointer(tmp_path)  # "save best" on the same root: it takes the root's fencing token
    best.save(50, {"m": model})
    with pytest.raises(fito.SaveAbortedError) as info:
        periodic.save(2, {"m": model})
    text = str(info.value)
    assert "another coordinator took this root and committed step 50 at 20" in text and " UTC " in text
    assert "a root has one writer at a time" in text and "a root of its own, e.g. Checkpointer(root + '/best')" in text
    assert periodic.committed() == [1, 50]
    handle = periodic.save(3, {"m": model}, blocking=False)
    with pytest.raises(fito.SaveAbortedError, match="Give a second writer"):
        handle.wait()
    # a separate root for the second writer: both go on committing
    own = fito.Checkpointer(tmp_path / "best")
    own.save(7, {"m": model})
    assert own.committed() == [7]


def test_the_store_error_itself_names_the_fix(tmp_path):
    store = SqliteDecisionStore(tmp_path / "decisions.sqlite")
    old = store.acquire_fence()
    store.acquire_fence()
    with pytest.raises(fito.StaleFenceError, match=r"fencing token 1 is stale, current is 2: another coordinator took "
                                                   r"this root \(another Checkpointer.*a root of its own"):
        store.publish(Decision(4, "a", "commit", "m", "h"), old)
    store.close()
