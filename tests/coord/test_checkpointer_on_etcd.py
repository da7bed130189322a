"""Checkpoint decisions published through a real etcd (multi-machine deployments)."""
from __future__ import annotations

import pytest
import torch

import fito
from fito.coord.etcd import EtcdDecisionStore


def test_checkpointer_commits_restores_and_fences_through_etcd(tmp_path, etcd1, prefix):
    old = fito.Checkpointer(tmp_path, store=EtcdDecisionStore(etcd1.endpoints, prefix=prefix), keep=2)
    for step in (1, 2, 3):
        old.save(step, {"w": torch.full((8,), float(step))})
    assert old.committed() == [2, 3]
    assert not (tmp_path / "decisions.sqlite").exists()  # the decision log is etcd, not a local file

    new = fito.Checkpointer(tmp_path, store=EtcdDecisionStore(etcd1.endpoints, prefix=prefix))
    out = {"w": torch.zeros(8)}
    assert new.restore(out) == 3 and out["w"].eq(3).all()
    new.save(4, {"w": torch.full((8,), 4.0)})  # a newer coordinator takes the fence
    with pytest.raises(fito.SaveAbortedError, match="stale"):
        old.save(5, {"w": torch.full((8,), 5.0)})  # the zombie cannot commit
    assert new.committed()[-1] == 4
