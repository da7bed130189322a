"""The coverage check runs in the Coordinator machine, on the last READY: a global plan that names an item no
rank vouched for aborts the save with that item named, and nothing is committed."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import BytesStorageMetadata

import fito.dcp
from fito.coord.sqlite import SqliteDecisionStore
from fito.errors import SaveAbortedError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class PhantomPlanner(fito.dcp.SavePlanner):
    """A planner whose global metadata promises a value that no rank's plan writes (a planner bug)."""

    def create_global_plan(self, all_plans):  # type: ignore[no-untyped-def]
        plans, metadata = super().create_global_plan(all_plans)
        metadata.state_dict_metadata["phantom"] = BytesStorageMetadata()
        return plans, metadata


def test_an_item_of_the_plan_that_no_rank_vouched_for_aborts_the_save(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0)}
    with pytest.raises(BaseException) as info:
        dcp.save(state, storage_writer=fito.dcp.Writer(tmp_path, 1), planner=PhantomPlanner())
    failures = getattr(info.value, "failures", None)
    error = next(iter(failures.values()))[0] if failures else info.value
    assert isinstance(error, SaveAbortedError)
    # the machine's own reason, not a failure pinned on a rank that did nothing wrong
    assert "aborted: coverage check failed: 1 not vouched for by any rank: phantom" in str(error)
    assert "rank 0 failed" not in str(error)
    store = SqliteDecisionStore(tmp_path / SqliteDecisionStore.FILENAME)
    try:
        decisions = store.decisions()
        assert [d.outcome for d in decisions] == ["abort"]  # recorded as aborted, never committed
    finally:
        store.close()
    assert not list(tmp_path.glob("epochs/*/*/manifest.json"))  # no manifest was written
