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


def _state(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 32)).square().sum().backward()
    opt.step()
    return model, opt


@pytest.mark.slow
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


class _DiesAtFirstUpload(S3Storage):
    """The server is SIGKILLed when the save reaches its first data object (the fence is taken, the attempt
    started): a crash of the store mid-save, at a deterministic point."""

    server = None

    def create(self, rel: str):  # type: ignore[no-untyped-def]
        if self.server is not None and self.server.alive and "/000000000002/" in f"/{rel}":
            self.server.kill()
        return super().create(rel)


@pytest.mark.slow
@pytest.mark.s3
def test_the_server_killed_mid_save_is_a_bounded_clear_error_and_the_previous_step_survives(tmp_path: Path) -> None:
    import time

    from fito.testing.s3server import SeaweedS3

    with SeaweedS3() as server:  # its own server: this test kills it
        url = server.new_url()
        storage = _DiesAtFirstUpload(url, storage_options=server.options(), max_retries=2, retry_timeout_s=3)
        ck = fito.Checkpointer(storage, store=ObjectDecisionStore.for_storage(storage))
        model, opt = _state(0)
        ck.save(1, {"model": model, "optim": opt})
        storage.server = server
        started = time.monotonic()
        with pytest.raises((fito.SaveAbortedError, OSError), match=r"s3://fito/.*(upload failed|S3 endpoint)"):
            ck.save(2, {"model": model, "optim": opt})
        assert time.monotonic() - started < 30  # bounded retries, not a hang
        assert not server.alive
        server.restart()
        fresh = fito.Checkpointer(S3Storage(url, storage_options=server.options()))
        restored, restored_opt = _state(1)
        assert fresh.restore({"model": restored, "optim": restored_opt}) == 1 and fresh.committed() == [1]
        assert torch.equal(restored[0].weight, model[0].weight)


def test_a_posix_root_shared_by_machines_commits_through_exclusive_create(tmp_path: Path) -> None:
    """The storage-native store over a directory: decisions are link(2)-created files, no SQLite anywhere."""
    from fito.storage import LocalFS

    storage = LocalFS(tmp_path / "ckpt")
    ck = fito.Checkpointer(storage, store=ObjectDecisionStore.for_storage(storage), keep=1)
    ck.save(1, {"w": torch.full((8,), 1.0)})
    ck.save(2, {"w": torch.full((8,), 2.0)})
    other = fito.Checkpointer(tmp_path / "ckpt", store=ObjectDecisionStore.for_storage(LocalFS(tmp_path / "ckpt")))
    out = {"w": torch.zeros(8)}
    assert other.restore(out) == 2 and out["w"].eq(2).all() and other.committed() == [2]
    assert not (tmp_path / "ckpt" / "decisions.sqlite").exists()
    assert sorted(p.name for p in (tmp_path / "ckpt" / "decisions.d" / "log").iterdir())[0] == "00000000000000000001"


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_ranks_save_to_an_s3_url_and_a_fresh_job_restores(seaweed, tmp_path: Path) -> None:
    import json

    from fito.testing.dist import run_ranks

    helpers = str(Path(__file__).resolve().parents[1] / "helpers")
    url = seaweed.new_url()
    out = {}
    for mode in ("save", "restore"):
        results = run_ranks("s3_ranks", [url, mode], 2, env=seaweed.env(), path=[helpers], timeout=180)
        for r in results:
            assert r.returncode == 0, r.stderr[-3000:]
        out[mode] = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    assert [(o["step"], o["mine"], o["committed"]) for o in out["restore"]] == [
        (2, [20.0] * 4, [2]), (2, [21.0] * 4, [2])]  # each rank its own tensor back; keep=1 retired step 1
    assert {o["weight_sum"] for o in out["restore"]} == {o["weight_sum"] for o in out["save"]}
    storage = S3Storage(url, storage_options=seaweed.options())
    assert {o.key.split("/")[1] for o in storage.list("epochs")} == {"000000000002"}
