"""`fito.dcp` with `checkpoint_id="s3://bucket/prefix"` (issue 17): DCP's own save and load, the root given as a
URL, the decision log chosen for the storage (the objects under decisions.d/)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

import fito
import fito.dcp
from fito.coord.object_store import ObjectDecisionStore
from fito.storage.s3 import S3Storage


@pytest.mark.slow
def test_dcp_save_and_load_with_an_s3_checkpoint_id(seaweed, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    url = seaweed.new_url()
    saved = {"w": torch.arange(256, dtype=torch.float32), "b": torch.ones(3)}
    dcp.save(saved, checkpoint_id=url, storage_writer=fito.dcp.Writer(step=7))
    storage = S3Storage(url)
    assert [d.epoch for d in ObjectDecisionStore.for_storage(storage, readonly=True).committed()] == [7]
    target = {"w": torch.zeros(256), "b": torch.zeros(3)}
    reader = fito.dcp.Reader()
    dcp.load(target, checkpoint_id=url + "/", storage_reader=reader)  # the same place, a trailing slash or not
    assert reader.loaded_step == 7 and torch.equal(target["w"], saved["w"]) and torch.equal(target["b"], saved["b"])
    with pytest.raises(Exception, match="names another place"):
        dcp.save(saved, checkpoint_id=url + "-other", storage_writer=fito.dcp.Writer(url, 8))
    assert list(tmp_path.iterdir()) == []  # nothing local: no SQLite log, no "s3:" directory
