"""Two "machines" racing coordinators on one S3 prefix: two processes, each in its own empty local directory,
each restarting its job every round (a new Checkpointer: a new coordinator) and saving the same step. Nothing is
shared but the prefix: the decision log is the storage-native one beside the objects (the default for S3)."""
from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import fito
from fito.coord.object_store import ObjectDecisionStore
from fito.storage.s3 import S3Storage

ROUNDS = 12


def _state(step: int, machine: int) -> dict[str, Any]:
    """What machine `machine` saves as `step`: different bytes on each machine, so a mix would show."""
    torch.manual_seed(100 * step + machine)
    return {"model": torch.nn.Linear(16, 8), "w": torch.full((4096,), float(10 * step + machine))}


class _BothHoldTokens(S3Storage):
    """Waits at the save's first data object until the other machine reaches its own: by then both
    coordinators hold a fencing token (taken before the first write), so each round is a real race."""

    barrier: Any = None

    def create(self, rel: str):  # type: ignore[no-untyped-def]
        if self.barrier is not None:
            self.barrier.wait(timeout=120)
            self.barrier = None
        return super().create(rel)


def _machine(url: str, options: dict[str, str], me: int, home: str, barrier: Any, out: Any) -> None:
    os.chdir(home)  # this machine's own (empty) local directory: anything written locally lands here
    for step in range(1, ROUNDS + 1):
        storage = _BothHoldTokens(url, storage_options=options)
        storage.barrier = barrier
        ck = fito.Checkpointer(storage)  # the default store for an S3 root: beside the objects, nothing local
        try:
            ck.save(step, _state(step, me))
            out.put((step, me, "won", ""))
        except fito.SaveAbortedError as exc:
            out.put((step, me, "fenced", str(exc)))
        ck.close()


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_machines_race_one_commits_each_step_the_stale_one_is_fenced(seaweed, tmp_path: Path) -> None:
    url = seaweed.new_url()
    homes = [tmp_path / f"machine{i}" for i in range(2)]
    for h in homes:
        h.mkdir()
    ctx = mp.get_context("spawn")  # obstore's runtime must not be forked
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_machine, args=(url, seaweed.options(), i, str(homes[i]), barrier, out))
             for i in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in range(2 * ROUNDS)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    storage = S3Storage(url, storage_options=seaweed.options())
    decisions = {d.epoch: d for d in ObjectDecisionStore.for_storage(storage, readonly=True).committed()}
    assert sorted(decisions) == list(range(1, ROUNDS + 1))  # nothing lost: every step committed, once
    for step in range(1, ROUNDS + 1):
        this = sorted((res, me, msg) for s, me, res, msg in results if s == step)
        assert [res for res, _, _ in this] == ["fenced", "won"], f"step {step}: {this}"
        (_, loser, message), (_, winner, _) = this
        # each round both coordinators took one token: 2*step - 1 and 2*step; the newer one commits
        assert decisions[step].fence == 2 * step, (step, decisions[step])
        assert f"step {step}" in message and f"fencing token {2 * step - 1} is stale, current is {2 * step}" in message
        assert "nothing was committed" in message
        # nothing mixed: a fresh job restores the winner's bytes for every object of that step
        got = {"model": torch.nn.Linear(16, 8), "w": torch.zeros(4096)}
        assert fito.Checkpointer(storage).restore(got, step=step) == step
        want = _state(step, winner)
        assert torch.equal(got["w"], want["w"]) and all(
            torch.equal(a, b) for a, b in zip(got["model"].state_dict().values(), want["model"].state_dict().values()))
    for h in homes:
        assert os.listdir(h) == [], f"{h}: a machine wrote locally: {os.listdir(h)}"
    assert not list(tmp_path.rglob("decisions.sqlite"))
