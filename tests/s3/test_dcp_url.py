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


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_ranks_dcp_save_and_load_with_an_s3_checkpoint_id(seaweed) -> None:
    import json

    from fito.testing.dist import run_ranks

    helpers = str(Path(__file__).resolve().parents[1] / "helpers")
    url = seaweed.new_url()
    results = run_ranks("dcp_url_ranks", [url], 2, env=seaweed.env(), path=[helpers], timeout=180)
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    out = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    assert [(o["step"], o["shared"], o["mine"]) for o in out] == [(5, 2016.0, [0.0] * 8), (5, 2016.0, [1.0] * 8)]
    storage = S3Storage(url, storage_options=seaweed.options())
    assert [d.epoch for d in ObjectDecisionStore.for_storage(storage, readonly=True).committed()] == [5]
