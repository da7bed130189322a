"""Crashes on S3: a saving job SIGKILLed mid multipart upload, between the manifest and the decision, or after
the decision (in GC), round after round on one prefix; and the S3 server itself killed while a save uploads.
After every crash a fresh job restores exactly one committed step, and its bytes are what that step saved."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
from typing import Any

import pytest
import torch

import fito
from fito.coord.object_store import ObjectDecisionStore
from fito.storage.s3 import S3Storage
from fito.testing.faults import Fault, FaultPlan, FaultyDecisionStore, FaultyStorage

PART = 5 << 20  # S3's smallest part: the big tensor's object goes up as 3 parts (some in flight at the kill)
BIG = 3 << 20  # int32 elements: 12 MiB


def _state(step: int) -> dict[str, Any]:
    """What `step` saves: every value depends on the step, so bytes of another step (or a mix) would show."""
    torch.manual_seed(step)
    model = torch.nn.Linear(32, 16)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 32)).sum().backward()
    opt.step()
    return {"model": model, "optim": opt, "big": torch.arange(BIG, dtype=torch.int32) + step,
            "data": fito.DataPosition(seed=step)}


def _blank() -> dict[str, Any]:
    model = torch.nn.Linear(32, 16)
    return {"model": model, "optim": torch.optim.AdamW(model.parameters()),
            "big": torch.zeros(BIG, dtype=torch.int32), "data": fito.DataPosition(seed=0)}


def _same(got: dict[str, Any], step: int) -> bool:
    want = _state(step)
    return (torch.equal(got["big"], want["big"]) and got["data"].state_dict() == want["data"].state_dict()
            and all(torch.equal(a, b) for a, b in zip(got["model"].state_dict().values(),
                                                     want["model"].state_dict().values()))
            and all(torch.equal(a, b) for s, t in zip(got["optim"].state.values(), want["optim"].state.values())
                    for a, b in zip(s.values(), t.values())))


def _save_and_die(url: str, options: dict[str, str], step: int, fault: Fault | None) -> None:
    """One job: a new coordinator saves `step` on the prefix, and the fault kills it (SIGKILL) where armed."""
    plan = FaultPlan(rank=0)
    if fault is not None:
        plan.arm(fault)
    s3 = S3Storage(url, storage_options=options, part_bytes=PART)
    store = FaultyDecisionStore(ObjectDecisionStore.for_storage(s3), plan)
    ck = fito.Checkpointer(FaultyStorage(s3, plan), store=store, keep=2)
    ck.save(step, _state(step))
    ck.close()


def _kills(rng: random.Random) -> list[Fault | None]:
    return [Fault("unit write", "SIGKILL", after_bytes=rng.randrange(1, 4 * BIG)),  # mid multipart upload
            Fault("manifest write", "SIGKILL", after_bytes=rng.randrange(0, 1000)),
            Fault("publish", "SIGKILL"),  # the manifest is written, the decision is not
            Fault("post-commit GC", "SIGKILL"),  # the decision is written, the old step not yet retired
            None]


@pytest.mark.slow
@pytest.mark.multiproc
def test_sigkill_mid_upload_or_before_the_decision_a_fresh_job_restores_one_committed_step(seaweed) -> None:
    rounds = int(os.environ.get("FITO_S3_KILL_ROUNDS", "10"))  # a campaign: FITO_S3_KILL_ROUNDS=500
    rng = random.Random(int(os.environ.get("FITO_S3_KILL_SEED", "0")))
    url = seaweed.new_url()
    storage = S3Storage(url, storage_options=seaweed.options())
    ctx = mp.get_context("forkserver")  # children forked from a server that imported torch, not this process
    # what a save imports, imported once there (each job then starts in a fraction of a second)
    ctx.set_forkserver_preload(["torch", "torch.distributed.checkpoint", "fito", "fito.ckpt.sharded_save", "obstore",
                                __name__])
    committed: list[int] = []
    kinds: dict[str, int] = {}
    for step in range(1, rounds + 1):
        fault = _kills(rng)[step % 5 if rounds >= 5 else rng.randrange(5)]  # each kind in turn
        job = ctx.Process(target=_save_and_die, args=(url, seaweed.options(), step, fault))
        job.start()
        job.join(timeout=120)
        assert job.exitcode in (0, -9), f"step {step} ({fault}): the job exited {job.exitcode}"
        killed = job.exitcode == -9
        phase = fault.phase if fault is not None and killed else "none"
        kinds[phase] = kinds.get(phase, 0) + 1
        if not killed or phase == "post-commit GC":
            committed.append(step)  # the decision landed before the kill (or there was none)
        # a fresh job: exactly one committed step, the newest, with exactly that step's bytes
        ck = fito.Checkpointer(storage)
        assert ck.committed()[-1:] == committed[-1:], (step, phase, ck.committed(), committed)
        if committed:
            got = _blank()
            assert ck.restore(got) == committed[-1], (step, phase)
            assert _same(got, committed[-1]), f"step {step} killed in {phase}: restored bytes differ"
    # an upload killed midway is never visible: every rank object and manifest there is whole
    objects = storage.list("epochs")
    sizes = {o.size for o in objects if o.key.endswith(".fito")}
    assert len(sizes) == 1, f"rank objects of {sizes} bytes: a partial upload became visible"
    for o in objects:
        if o.key.endswith("manifest.json"):
            json.loads(storage.read_bytes(o.key, 1 << 20))
    if rounds >= 5:
        assert {"unit write", "manifest write", "publish", "post-commit GC"} <= set(kinds), kinds


@pytest.mark.s3
def test_an_injected_error_mid_upload_abandons_the_upload_through_the_faulty_storage(seaweed) -> None:
    """The fault-injecting storage over S3: an error midway must abandon the upload, never complete it with
    the bytes so far (a partial object would then be visible)."""
    s3 = S3Storage(seaweed.new_url(), storage_options=seaweed.options(), part_bytes=PART)
    plan = FaultPlan(rank=0, faults=[Fault("unit write", "EIO", after_bytes=PART + 1000)])  # one part went up
    with pytest.raises(OSError), FaultyStorage(s3, plan).create("a/rank-00000.fito") as f:
        f.write(bytes(2 * PART))
    assert plan.fired("unit write") and not s3.exists("a/rank-00000.fito") and s3.list("") == []


class _KillsTheServerMidUpload(S3Storage):
    """Kills the S3 server (SIGKILL, by PID) once `after` bytes of the armed step's rank object were handed to
    the multipart upload: some parts are up, some in flight, the rest not yet sent."""

    server: Any = None
    step_dir = ""
    after = PART + (1 << 20)

    def create(self, rel: str):  # type: ignore[no-untyped-def]
        f = super().create(rel)
        if self.server is None or self.step_dir not in rel or not rel.endswith(".fito"):
            return f
        storage, write = self, f.write

        def killing_write(b: Any) -> int:
            n = write(b)
            if storage.server is not None and f.uploaded >= storage.after:
                storage.server.kill()
                storage.server = None
            return n
        f.write = killing_write
        return f


@pytest.mark.slow
@pytest.mark.s3
def test_the_server_killed_mid_upload_a_bounded_clear_error_then_restore_and_the_next_save_work(tmp_path) -> None:
    from fito.testing.s3server import SeaweedS3

    with SeaweedS3() as server:  # its own server: this test kills it
        url = server.new_url()
        # bounded: 2 retries within 3 s per request (the defaults, 5 retries within 60 s, suit a real outage)
        storage = _KillsTheServerMidUpload(url, storage_options=server.options(), part_bytes=PART, max_retries=2,
                                           retry_timeout_s=3)
        ck = fito.Checkpointer(storage)
        ck.save(1, _state(1))
        storage.server, storage.step_dir = server, "/000000000002/"
        started = time.monotonic()
        with pytest.raises((fito.SaveAbortedError, OSError)) as caught:
            ck.save(2, _state(2))
        took = time.monotonic() - started
        assert not server.alive and storage.server is None, "the server was not killed mid-upload"
        message = str(caught.value)
        assert "step 2" in message and url in message, message
        assert "upload failed" in message or "S3 endpoint" in message, message
        assert took < 60, f"the failed save took {took:.0f}s: retries are not bounded"
        server.restart()  # the same data directory and ports
        fresh = fito.Checkpointer(S3Storage(url, storage_options=server.options()))
        got = _blank()
        assert fresh.restore(got) == 1 and _same(got, 1) and fresh.committed() == [1]
        assert ck.save(3, _state(3)) == 3  # the same job goes on: its next save commits
        got = _blank()
        assert fito.Checkpointer(S3Storage(url, storage_options=server.options())).restore(got) == 3 and _same(got, 3)
