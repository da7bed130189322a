"""fito.dcp with DCP's own planners: only the storage writer or reader swapped (issue 21, "DCP in one
argument"), in one process. What the storage layer still checks (every byte hashed, vote before touch, JSON
values never unpickled, coverage) and what it leaves to DCP's planner (which keys, dtype casts)."""
from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

import fito.dcp
from fito.errors import CheckpointCorruptError, StateMismatchError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def model_state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 6)).sum().backward()
    opt.step()
    losses = io.BytesIO()
    torch.save([0.5, 0.25], losses)  # as PyTorch's e2e train state and torchtitan keep them
    return {"model": model.state_dict(), "optim": opt.state_dict(), "losses": losses, "note": b"\x00raw"}


def blank(s: dict) -> dict:
    out = {"model": {k: torch.full_like(v, -7.0) for k, v in s["model"].items()}, "losses": None, "note": None}
    out["optim"] = {"state": {i: {k: torch.full_like(v, -7.0) for k, v in st.items()} for i, st in s["optim"]["state"].items()},
                    "param_groups": [dict(g, lr=0.0) for g in s["optim"]["param_groups"]]}
    return out


def cause(info: pytest.ExceptionInfo) -> BaseException:
    failures = getattr(info.value, "failures", None)
    return next(iter(failures.values()))[0] if failures else info.value


def same(a, b) -> bool:
    if torch.is_tensor(b):
        return torch.is_tensor(a) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(b, io.BytesIO):
        return isinstance(a, io.BytesIO) and a.getvalue() == b.getvalue()
    return a == b


def test_only_the_storage_swapped_round_trips_bit_exact_and_nothing_is_unpickled(tmp_path, monkeypatch):
    saved = model_state(0)
    dcp.save(saved, storage_writer=fito.dcp.Writer(tmp_path, 1))  # DCP's DefaultSavePlanner

    def refuse(*a, **k):
        raise AssertionError("something was unpickled")
    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    target = blank(saved)
    reader = fito.dcp.Reader(tmp_path)
    dcp.load(target, storage_reader=reader)  # DCP's DefaultLoadPlanner
    assert reader.loaded_step == 1
    assert same(target, saved)  # tensors bit-exact, param groups, the BytesIO and the bytes as they were
    assert type(target["losses"]) is io.BytesIO and type(target["note"]) is bytes


def test_a_flipped_byte_is_refused_with_the_default_planner_and_nothing_is_touched(tmp_path):
    saved = model_state(0)
    dcp.save(saved, storage_writer=fito.dcp.Writer(tmp_path, 1))
    obj = next(tmp_path.rglob("rank-00000.fito"))
    data = bytearray(obj.read_bytes())
    data[200] ^= 0x01  # inside the first tensor's bytes (the 64-byte header, then items)
    obj.write_bytes(bytes(data))
    target = blank(saved)
    before = {k: v.clone() for k, v in target["model"].items()}
    with pytest.raises(BaseException) as info:
        dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path))
    assert isinstance(cause(info), CheckpointCorruptError), cause(info)
    assert same(target["model"], before) and target["losses"] is None


def test_checkpoint_id_names_the_root_the_dcp_way(tmp_path):
    saved = model_state(0)
    dcp.save(saved, checkpoint_id=tmp_path, storage_writer=fito.dcp.Writer(step=3))
    target = blank(saved)
    reader = fito.dcp.Reader()
    dcp.load(target, checkpoint_id=tmp_path, storage_reader=reader)
    assert reader.loaded_step == 3 and same(target, saved)
    with pytest.raises(BaseException) as info:
        dcp.save(saved, storage_writer=fito.dcp.Writer(step=4))
    assert isinstance(cause(info), ValueError) and "checkpoint_id=root" in str(cause(info))
    with pytest.raises(BaseException) as info:
        dcp.save(saved, checkpoint_id=tmp_path / "elsewhere", storage_writer=fito.dcp.Writer(tmp_path, 4))
    assert isinstance(cause(info), ValueError) and "names another place" in str(cause(info))


def test_dcp_planner_key_rules_and_casts_fito_planner_stays_strict(tmp_path):
    saved = model_state(0)
    dcp.save(saved, storage_writer=fito.dcp.Writer(tmp_path, 1))
    weights_only = {"model": {k: torch.zeros_like(v, dtype=torch.float64) for k, v in saved["model"].items()}}
    dcp.load(weights_only, storage_reader=fito.dcp.Reader(tmp_path))  # DCP: other keys left, dtypes cast
    assert all(torch.equal(weights_only["model"][k], v.double()) for k, v in saved["model"].items())
    with pytest.raises(BaseException) as info:
        dcp.load(weights_only, storage_reader=fito.dcp.Reader(tmp_path), planner=fito.dcp.LoadPlanner())
    assert isinstance(cause(info), StateMismatchError) and "in the checkpoint but not in the target" in str(cause(info))


def rows_target(rows: slice, shape: tuple[int, int]) -> torch.Tensor:
    """A target of the global shape that holds only `rows` (`__create_chunk_list__`, `__get_tensor_shard__`:
    DCP's protocol for objects that describe their own part of a tensor, as DTensor does)."""
    t = torch.full(shape, -7.0)
    box = ChunkStorageMetadata(torch.Size([rows.start, 0]), torch.Size([rows.stop - rows.start, shape[1]]))
    t.__create_chunk_list__ = lambda: [box]
    t.__get_tensor_shard__ = lambda index: t[rows]
    return t


@pytest.mark.parametrize("planner", [None, fito.dcp.LoadPlanner], ids=["dcp-planner", "fito-planner"])
def test_a_target_that_describes_its_own_chunks_loads_its_rows(tmp_path, planner):
    full = torch.arange(24.0).reshape(4, 6)
    dcp.save({"w": full}, storage_writer=fito.dcp.Writer(tmp_path, 1), planner=fito.dcp.SavePlanner())
    target = {"w": rows_target(slice(1, 3), (4, 6))}
    dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path), planner=planner and planner())
    assert torch.equal(target["w"][1:3], full[1:3])
    assert bool((target["w"][0] == -7).all() and (target["w"][3] == -7).all())  # rows it does not hold: untouched


def test_plan_caching_of_dcps_planner_is_refused_before_anything_is_written(tmp_path):
    from torch.distributed.checkpoint import DefaultSavePlanner

    dcp.save({"w": torch.ones(3)}, storage_writer=fito.dcp.Writer(tmp_path, 1))
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "decisions" not in p.name)
    with pytest.raises(BaseException) as info:
        dcp.save({"w": torch.zeros(3)}, storage_writer=fito.dcp.Writer(tmp_path, 2), planner=DefaultSavePlanner(enable_plan_caching=True))
    assert isinstance(cause(info), StateMismatchError) and "enable_plan_caching=False" in str(cause(info))
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and "decisions" not in p.name) == files
    target = {"w": torch.zeros(3)}
    dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path))
    assert torch.equal(target["w"], torch.ones(3))
