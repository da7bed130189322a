"""Partial restores (issue 21, defect 6): `Checkpointer.restore(state, strict=False)` and
`fito.dcp.LoadPlanner(strict=False)` load what the state and the checkpoint both hold -- the weights alone from
a model + optimizer checkpoint, a model that dropped or added a head -- and report what they left out; the
strict default still refuses, with a hint that names the option."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.distributed.checkpoint as dcp

import fito
import fito.dcp

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def trained(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"model": model, "optim": opt, "data": fito.DataPosition(index=4)}


def test_weights_only_from_a_model_and_optimizer_checkpoint(tmp_path, caplog):
    saved = trained()
    fito.Checkpointer(tmp_path).save(1, saved)
    fresh = trained(seed=1)["model"]
    ck = fito.Checkpointer(tmp_path)
    with pytest.raises(fito.StateMismatchError, match="pass strict=False to restore only the state's entries"):
        ck.restore({"model": fresh})
    assert not torch.equal(fresh[0].weight, saved["model"][0].weight)  # refused: untouched
    with caplog.at_level(logging.WARNING, logger="fito"):
        assert ck.restore({"model": fresh}, strict=False) == 1
    assert ck.left_out == ([], ["data", "optim"]) and ck.left_out.unexpected_keys == ["data", "optim"]
    assert "not applied) ['data', 'optim']" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), saved["model"].state_dict().values()))


def test_a_model_that_dropped_its_head_and_one_that_gained_one(tmp_path):
    saved = trained()
    fito.Checkpointer(tmp_path).save(1, {"model": saved["model"]})
    ck = fito.Checkpointer(tmp_path)
    body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    with pytest.raises(fito.StateMismatchError, match=r"module keys differ.*pass strict=False to load the keys both hold"):
        ck.restore({"model": body})
    ck.restore({"model": body}, strict=False)
    assert ck.left_out == ([], ["model/2.bias", "model/2.weight"])
    assert torch.equal(body[0].weight, saved["model"][0].weight)

    torch.manual_seed(5)
    bigger = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Linear(3, 2))
    new_head = bigger[3].weight.detach().clone()
    extra = torch.zeros(2)
    ck.restore({"model": bigger, "extra": extra}, strict=False)
    assert ck.left_out == (["extra", "model/3.bias", "model/3.weight"], [])
    assert torch.equal(bigger[2].weight, saved["model"][2].weight) and torch.equal(bigger[3].weight, new_head)


def test_keys_both_hold_stay_strict(tmp_path):
    fito.Checkpointer(tmp_path).save(1, {"model": torch.nn.Linear(4, 3)})
    wider = torch.nn.Linear(4, 5)
    before = wider.weight.detach().clone()
    with pytest.raises(fito.StateMismatchError, match="weight"):
        fito.Checkpointer(tmp_path).restore({"model": wider}, strict=False)
    assert torch.equal(wider.weight, before)


def test_dcp_partial_load_with_the_planner_option(tmp_path):
    torch.manual_seed(0)
    w, b, m = torch.randn(3, 4), torch.randn(3), torch.randn(3, 4)
    dcp.save({"model": {"w": w, "b": b}, "optim": {"m": m}}, storage_writer=fito.dcp.Writer(tmp_path, 1),
             planner=fito.dcp.SavePlanner())
    target = {"model": {"w": torch.zeros(3, 4), "head": torch.ones(2)}}
    with pytest.raises(BaseException) as info:  # CheckpointException carries the StateMismatchError
        with fito.dcp.Reader(tmp_path) as reader:
            dcp.load(target, storage_reader=reader, planner=fito.dcp.LoadPlanner())
    assert "LoadPlanner(strict=False)" in str(info.value) and "must hold exactly" not in str(info.value)
    assert torch.equal(target["model"]["w"], torch.zeros(3, 4))
    planner = fito.dcp.LoadPlanner(strict=False)
    with fito.dcp.Reader(tmp_path) as reader:
        dcp.load(target, storage_reader=reader, planner=planner)
    assert torch.equal(target["model"]["w"], w) and torch.equal(target["model"]["head"], torch.ones(2))
    assert planner.missing_keys == ["model.head"] and planner.unexpected_keys == ["model.b", "optim.m"]
