"""Epoch-tagged collectives over real torch.distributed (gloo, CPU, 2 processes): an epoch change in the
middle of a run is detected and aborted on every rank; untagged, the same step silently mixes."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fito.coord.collectives import EpochTaggedCollectives
from fito.testing.etcd import free_ports
from fito.coord.fleet_base import EpochCoordinator, EpochFollower
from fito.coord.sqlite_fleet import SqliteFleetStore
from fito.errors import EpochFencedError, EpochMismatchError

pytestmark = pytest.mark.multiproc

WORLD = 2


def _payload(rank: int, epoch: int) -> torch.Tensor:
    """What a rank contributes under protocol epoch `epoch` (the epoch changes the encoding: a scale)."""
    return torch.full((4,), float(rank + 1) * (10.0 ** epoch))


def _pure(epoch: int) -> list[float]:
    return [sum(float(r + 1) * 10.0 ** epoch for r in range(WORLD))] * 4


def _worker(rank: int, port: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    out: dict[str, object] = {}
    store = SqliteFleetStore(Path(tmp) / "fleet.sqlite")
    node = EpochFollower(store, f"rank{rank}", watch=False)  # epochs observed only when the test says so
    tagged = EpochTaggedCollectives(lambda: node.epoch)
    try:
        t = _payload(rank, node.epoch)
        out["e0_epoch"] = tagged.all_reduce(t)
        out["e0_result"] = t.tolist()

        dist.barrier()
        if rank == 0:  # the coordinator moves the fleet and observes at once; rank 1 has not observed yet
            EpochCoordinator(SqliteFleetStore(Path(tmp) / "fleet.sqlite")).transition("protocol=v1")
            node.sync()
        dist.barrier()
        out["epochs_mid"] = node.epoch

        t = _payload(rank, node.epoch)
        before = t.clone()
        try:
            tagged.all_reduce(t)
            out["tagged_mid"] = "completed"
        except EpochMismatchError as exc:
            out["tagged_mid"] = "aborted"
            out["tagged_msg"] = str(exc)
        out["payload_untouched"] = bool(torch.equal(t, before))

        try:  # the consensus fence: a node that has not observed the decision is refused admission
            node.before_collective()
            out["admitted_mid"] = True
        except EpochFencedError:
            out["admitted_mid"] = False

        fenced = EpochTaggedCollectives(lambda: node.epoch, admit=node.before_collective)
        t = _payload(rank, node.epoch)
        try:  # the refused rank still joins the tag exchange, so its peer aborts at once (no hang)
            fenced.all_reduce(t)
            out["fenced_mid"] = "completed"
        except EpochFencedError:
            out["fenced_mid"] = "fenced"
        except EpochMismatchError as exc:
            out["fenced_mid"] = "aborted"
            out["fenced_msg"] = str(exc)

        naive = _payload(rank, node.epoch)
        dist.all_reduce(naive)  # what happens without tags: it "works"
        out["naive_mid"] = naive.tolist()

        node.sync()  # rank 1 observes the decision; rank 0 is already there
        t = _payload(rank, node.epoch)
        out["after_epoch"] = tagged.all_reduce(t)
        out["after_result"] = t.tolist()
        out["stats"] = [tagged.stats.completed, tagged.stats.aborted]
    finally:
        node.close()
        Path(tmp, f"rank{rank}.json").write_text(json.dumps(out))
        dist.destroy_process_group()


def test_epoch_change_mid_run_is_aborted_never_mixed(tmp_path: Path, monkeypatch) -> None:
    port = free_ports(1)[0]
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(WORLD)]
    assert [x["e0_epoch"] for x in r] == [0, 0] and r[0]["e0_result"] == _pure(0)
    assert [x["epochs_mid"] for x in r] == [1, 0]  # mixed view of the fleet
    assert [x["tagged_mid"] for x in r] == ["aborted", "aborted"]  # every rank aborts, none combines
    assert all(x["payload_untouched"] for x in r)
    assert "rank 0: epoch 1" in r[0]["tagged_msg"] and "rank 1: epoch 0" in r[0]["tagged_msg"]
    assert [x["admitted_mid"] for x in r] == [True, False]
    assert [x["fenced_mid"] for x in r] == ["aborted", "fenced"] and "rank 1: fenced out" in r[0]["fenced_msg"]
    # untagged, the same step returns a number that belongs to neither epoch: silent corruption
    mixed = r[0]["naive_mid"]
    assert mixed == r[1]["naive_mid"] and mixed not in (_pure(0), _pure(1))
    assert [x["after_epoch"] for x in r] == [1, 1] and r[0]["after_result"] == _pure(1)
    assert [x["stats"] for x in r] == [[2, 1], [2, 1]]
