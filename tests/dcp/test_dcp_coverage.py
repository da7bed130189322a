"""The coverage check and the abort on a failed rank run in the Coordinator machine: a global plan that names an
item no rank vouched for, or a rank whose READY never arrives, aborts the save with the reason named, the abort
is recorded, and nothing is committed."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import BytesStorageMetadata
from torch.futures import Future

import fito.dcp
from fito.coord.sqlite import SqliteDecisionStore
from fito.dcp.writer import READY_FQN
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


class ForgetfulWriter(fito.dcp.Writer):
    """A storage writer whose write results lose the rank's READY on the way to the coordinator."""

    def write_data(self, plan, planner):  # type: ignore[no-untyped-def]
        results = [r for r in super().write_data(plan, planner).wait() if r.index.fqn != READY_FQN]
        fut: Future = Future()
        fut.set_result(results)
        return fut


def test_a_rank_without_a_ready_is_a_failed_rank_for_the_machine(tmp_path: Path) -> None:
    with pytest.raises(BaseException) as info:
        dcp.save({"w": torch.arange(6.0)}, storage_writer=ForgetfulWriter(tmp_path, 1), planner=fito.dcp.SavePlanner())
    failures = getattr(info.value, "failures", None)
    error = next(iter(failures.values()))[0] if failures else info.value
    assert isinstance(error, SaveAbortedError)
    assert "aborted: rank 0 failed: its write results carry no READY of its own" in str(error)
    store = SqliteDecisionStore(tmp_path / SqliteDecisionStore.FILENAME)
    try:  # the machine's abort is recorded (before, the executor raised and recorded nothing)
        assert [d.outcome for d in store.decisions()] == ["abort"]
    finally:
        store.close()
