"""Several real ranks (torch.distributed, gloo): background saves during DDP training stay bit-exact."""
from __future__ import annotations

import json

import pytest

import fito
from fito.testing.dist import run_ranks

pytestmark = pytest.mark.multiproc


def _final_digests(results) -> dict[int, dict[str, str]]:
    out = {}
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        for line in r.stdout.splitlines():
            event = json.loads(line)
            if event["event"] == "final":
                out[event["rank"]] = event["digest"]
    return out


@pytest.mark.slow
def test_async_saves_during_ddp_training_commit_the_values_at_the_call(tmp_path):
    sync_run = run_ranks("fito.demo.worker", [str(tmp_path / "sync"), "--steps", "20", "--every", "5"], 2)
    async_run = run_ranks("fito.demo.worker", [str(tmp_path / "async"), "--steps", "20", "--every", "5", "--async-save"], 2)
    assert _final_digests(sync_run) == _final_digests(async_run)
    assert fito.Checkpointer(tmp_path / "async").committed() == [10, 15, 20]
    # Every committed epoch of the async run equals the sync run's, item for item.
    from fito.ckpt.inspect import verify
    for step in (10, 15, 20):
        assert verify(tmp_path / "async", step).whole
        a = _unit_hashes(tmp_path / "sync", step)
        b = _unit_hashes(tmp_path / "async", step)
        assert a == b


def _unit_hashes(root, step):
    """Every item's block hashes (tensor chunks and JSON values) of a committed step."""
    from fito.ckpt.inspect import open_store
    from fito.commit.manifests import load_sharded_manifest
    storage, store = open_store(root)
    d = [d for d in store.committed() if d.epoch == step][-1]
    store.close()
    m = load_sharded_manifest(storage, d)
    hashes = {fqn: [(c.offsets, c.piece.blocks) for c in t.chunks] for fqn, t in m.tensors.items()}
    return hashes | {fqn: p.blocks for fqn, p in m.values.items()}
