"""fito.dcp in one process (torch.distributed not initialised: DCP runs without collectives): JSON values,
strict keys both ways, the planner guard, decisions and fencing at the decision-store seam."""
from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp

import fito.dcp
from fito.coord.sqlite import SqliteDecisionStore
from fito.errors import CheckpointCorruptError, FitoError, NoCommittedEpochError, SaveAbortedError, StateMismatchError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def state(fill: float | None = None) -> dict:
    def t(x: torch.Tensor) -> torch.Tensor:
        return x if fill is None else torch.full_like(x, fill)
    return {
        "model": {"w": t(torch.arange(12.0).reshape(3, 4)), "b": t(torch.ones(4, dtype=torch.bfloat16))},
        "step": t(torch.tensor(5)),
        "meta": {"epoch": 3 if fill is None else -1, "betas": (0.9, 0.999) if fill is None else None,
                 "by_int": {1: "a", 2: None} if fill is None else {1: None, 2: None},
                 "loss": math.inf if fill is None else 0.0, "names": ["x", "y"] if fill is None else []},
    }


def save(root, step: int, s: dict | None = None, **kw) -> None:
    dcp.save(s or state(), storage_writer=fito.dcp.Writer(root, step, **kw), planner=fito.dcp.SavePlanner())


def load(root, target: dict, step: int | None = None) -> fito.dcp.Reader:
    reader = fito.dcp.Reader(root, step=step)
    dcp.load(target, storage_reader=reader, planner=fito.dcp.LoadPlanner())
    return reader


def cause(info: pytest.ExceptionInfo) -> BaseException:
    """The error DCP carried (CheckpointException holds each rank's), or the exception itself."""
    failures = getattr(info.value, "failures", None)
    return next(iter(failures.values()))[0] if failures else info.value


def test_values_are_json_with_their_types_and_nothing_is_unpickled(tmp_path, monkeypatch):
    save(tmp_path, 1)

    def refuse(*a, **k):
        raise AssertionError("something was unpickled")
    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    target = state(fill=0.0)
    reader = load(tmp_path, target)
    assert reader.loaded_step == 1
    assert target["meta"] == state()["meta"]  # tuple, int keys, inf and lists come back as they were
    assert torch.equal(target["model"]["w"], state()["model"]["w"]) and target["model"]["b"].dtype == torch.bfloat16
    assert int(target["step"]) == 5


def test_newest_committed_step_or_the_one_asked_for(tmp_path):
    save(tmp_path, 1)
    s = state()
    s["model"]["w"] += 1
    save(tmp_path, 2, s)
    assert load(tmp_path, state(0.0)).loaded_step == 2
    old = state(0.0)
    assert load(tmp_path, old, step=1).loaded_step == 1 and torch.equal(old["model"]["w"], state()["model"]["w"])
    with pytest.raises(BaseException) as info:
        load(tmp_path, state(0.0), step=3)
    assert isinstance(cause(info), NoCommittedEpochError) and "step 3 is not committed" in str(cause(info))


@pytest.mark.parametrize("change, says", [
    (lambda t: t["model"].pop("b"), "in the checkpoint but not in the target: 'model.b'"),
    (lambda t: t["model"].update(extra=torch.zeros(2)), "in the target but not in the checkpoint: 'model.extra'"),
    (lambda t: t["meta"].update(more=1), "in the target but not in the checkpoint: 'meta.more'"),
    (lambda t: t["model"].update(w=torch.zeros(3, 4, dtype=torch.float64)), "model.w: checkpoint float32[3, 4], target float64[3, 4]"),
    (lambda t: t["model"].update(w=torch.zeros(4, 3)), "model.w: checkpoint float32[3, 4], target float32[4, 3]"),
    (lambda t: t.update(step=7), "step: a tensor in the checkpoint, a int in the target"),
])
def test_strict_keys_both_ways_shapes_and_dtypes_leave_the_target_untouched(tmp_path, change, says):
    save(tmp_path, 1)
    target = state(fill=-7.0)
    change(target)
    before = copy.deepcopy(target)
    with pytest.raises(BaseException) as info:
        load(tmp_path, target)
    assert isinstance(cause(info), StateMismatchError) and says in str(cause(info))
    assert same(target, before)


def same(a, b) -> bool:
    if torch.is_tensor(b):
        return torch.is_tensor(a) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
    return a == b


def test_plan_caching_cannot_be_turned_on():
    with pytest.raises(ValueError, match="attempt id"):
        fito.dcp.SavePlanner(enable_plan_caching=True)


def test_no_decision_log_means_nothing_committed(tmp_path):
    with pytest.raises(BaseException) as info:
        load(tmp_path, state(0.0))
    assert isinstance(cause(info), NoCommittedEpochError) and "no decision log" in str(cause(info))


class TakenOver(SqliteDecisionStore):
    """A decision store in which another coordinator takes the fence right after this one did."""

    def acquire_fence(self) -> int:
        mine = super().acquire_fence()
        super().acquire_fence()
        return mine


def test_a_fenced_out_coordinator_cannot_commit(tmp_path):
    save(tmp_path, 1)
    store = TakenOver(tmp_path / SqliteDecisionStore.FILENAME)
    with pytest.raises(BaseException) as info:
        save(tmp_path, 2, store=store)
    assert isinstance(cause(info), SaveAbortedError) and "fencing token" in str(cause(info))
    assert [d.epoch for d in store.committed()] == [1]
    store.close()
    assert load(tmp_path, state(0.0)).loaded_step == 1


def test_a_damaged_manifest_is_refused_before_anything_is_read(tmp_path):
    save(tmp_path, 1)
    manifest = next(tmp_path.rglob("manifest.json"))
    manifest.write_bytes(manifest.read_bytes().replace(b'"epoch":1', b'"epoch":2', 1))
    target = state(fill=-7.0)
    with pytest.raises(BaseException) as info:
        load(tmp_path, target)
    assert isinstance(cause(info), CheckpointCorruptError) and "manifest hash" in str(cause(info))
    assert isinstance(cause(info), FitoError) and target["meta"]["epoch"] == -1


def test_keep_retires_old_steps_and_undecided_attempts_are_collected(tmp_path):
    from fito.protocol.layout import attempt_name

    save(tmp_path, 1, keep=2)
    log_id = SqliteDecisionStore(tmp_path / SqliteDecisionStore.FILENAME).log_id()  # GC deletes only its own log's
    crashed = tmp_path / "epochs" / "000000000005" / attempt_name(1, log_id, 0x18C0000, "deadbeef")  # never decided
    crashed.mkdir(parents=True)
    (crashed / "rank-00000.fito").write_bytes(b"partial")
    for step in (2, 3):
        save(tmp_path, step, keep=2)
    store = SqliteDecisionStore(tmp_path / SqliteDecisionStore.FILENAME)
    assert [d.epoch for d in store.committed()] == [2, 3]
    store.close()
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["000000000002", "000000000003"]
