"""Checkpointer save and restore through S3 (SeaweedFS) with nothing local: the storage and the decision log
are both objects under one prefix."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import fito
from fito.coord.object_store import ObjectDecisionStore
from fito.storage import open_storage
from fito.storage.s3 import S3Storage

pytestmark = pytest.mark.s3


def _state(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 32)).square().sum().backward()
    opt.step()
    return model, opt


def test_save_restore_and_fencing_through_s3_with_nothing_local(seaweed, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything written "locally" would land here
    url = seaweed.new_url()
    storage = S3Storage(url, storage_options=seaweed.options())
    model, opt = _state(0)
    old = fito.Checkpointer(storage, store=ObjectDecisionStore.for_storage(storage), keep=2)
    for step in (1, 2, 3):
        for p in model.parameters():
            p.data.add_(1.0)
        old.save(step, {"model": model, "optim": opt})
    assert old.committed() == [2, 3]
    assert sorted({o.key.split("/")[1] for o in storage.list("epochs")}) == ["000000000002", "000000000003"]  # keep=2

    # another machine: the same URL, no local state at all, its default store chosen from the storage
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    new = fito.Checkpointer(url)
    assert isinstance(new.storage, S3Storage) and isinstance(new.store, ObjectDecisionStore)
    restored, restored_opt = _state(1)
    assert new.restore({"model": restored, "optim": restored_opt}) == 3
    for a, b in zip(model.state_dict().values(), restored.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], restored_opt.state_dict()["state"][0]["exp_avg"])

    new.save(4, {"model": restored, "optim": restored_opt})  # the new coordinator takes the fence
    with pytest.raises(fito.SaveAbortedError, match="stale"):
        old.save(5, {"model": model, "optim": opt})  # the zombie cannot commit
    assert fito.Checkpointer(open_storage(url)).committed()[-1] == 4
    assert os.listdir(tmp_path) == []  # nothing local: no SQLite log, no "s3:" directory
