"""A real 3-member etcd cluster: transitions survive the loss of the leader; losing two of three gives a
bounded, clear error, no decision the caller could act on, and nothing half-applied."""
from __future__ import annotations

import time

import pytest

from fito.coord.base import Decision
from fito.coord.etcd import EtcdDecisionStore
from fito.coord.etcd_fleet import EtcdFleetStore
from fito.coord.fleet_base import EpochCoordinator, EpochFollower
from fito.errors import CoordinationUnavailableError, EpochFencedError


def _restart_all(cluster) -> None:
    for i, m in enumerate(cluster.members):
        if not m.alive:
            cluster.restart(i)
    cluster.wait_healthy(timeout=20)


def test_leader_killed_transition_still_commits(etcd3, prefix: str) -> None:
    store = EtcdFleetStore(etcd3.endpoints, prefix=prefix, request_timeout=1.0, deadline=10.0)
    coord = EpochCoordinator(store)
    coord.transition("v1")
    leader = etcd3.leader()
    # followers talk to the leader first, so its death forces their watch and requests to fail over
    leader_first = [etcd3.endpoints[leader]] + [e for i, e in enumerate(etcd3.endpoints) if i != leader]
    nodes = [EpochFollower(EtcdFleetStore(leader_first, prefix=prefix, request_timeout=1.0), f"n{i}")
             for i in range(2)]
    try:
        etcd3.kill(leader)
        t0 = time.monotonic()
        d = coord.transition("v2")
        elapsed = time.monotonic() - t0
        assert d.epoch == 2 and elapsed < 10.0
        end = time.monotonic() + 10
        while time.monotonic() < end and not all(n.epoch == 2 for n in nodes):
            time.sleep(0.02)
        assert [n.before_collective() for n in nodes] == [2, 2]
        assert all(n.store.t.failovers >= 1 for n in nodes)
        # the checkpoint decision log on the same cluster keeps working too
        ck = EtcdDecisionStore(etcd3.endpoints, prefix=prefix + "ckpt/", request_timeout=1.0)
        f = ck.acquire_fence()
        ck.publish(Decision(epoch=1, attempt="a", outcome="commit", decision_id="after-kill"), f)
        assert [x.decision_id for x in ck.decisions()] == ["after-kill"]
    finally:
        for n in nodes:
            n.close()
        _restart_all(etcd3)


@pytest.mark.slow
def test_quorum_lost_is_bounded_error_and_nothing_half_applied(etcd3, prefix: str) -> None:
    store = EtcdFleetStore(etcd3.endpoints, prefix=prefix, request_timeout=1.0, deadline=3.0)
    coord = EpochCoordinator(store)
    coord.transition("v1")
    node = EpochFollower(EtcdFleetStore(etcd3.endpoints, prefix=prefix, request_timeout=1.0, deadline=3.0), "n0")
    assert node.before_collective() == 1
    survivors_leader = etcd3.leader()
    victims = [i for i in range(3) if i != survivors_leader]
    try:
        for i in victims:  # keep the leader alive so it can still append the entry to its own log
            etcd3.kill(i)
        t0 = time.monotonic()
        with pytest.raises(CoordinationUnavailableError, match="no etcd quorum answered within 3.0s"):
            coord.transition("v2", decision_id="during-outage")
        elapsed = time.monotonic() - t0
        assert elapsed < 3.0 + 1.0 + 1.0, elapsed
        with pytest.raises((CoordinationUnavailableError, EpochFencedError)):
            node.before_collective()  # no admission without quorum: no collective can run
        assert node.epoch == 1  # the node did not switch on an undecided transition
    finally:
        node.close()
        _restart_all(etcd3)
    # After recovery the outage proposal is either wholly there or wholly absent (one transaction) ...
    fresh = EtcdFleetStore(etcd3.endpoints, prefix=prefix, request_timeout=1.0, deadline=10.0)
    hist = fresh.history()
    ids = [d.decision_id for d in hist]
    cur = fresh.current()
    assert cur == hist[-1]
    landed = "during-outage" in ids
    assert (cur.epoch == 2) == landed
    kvs, _ = fresh.t.range("id", prefix + "id/during-outage")
    assert bool(kvs) == landed
    # ... and re-sending it with the same id resolves it exactly once.
    d = coord.store.propose(2, "v2", coord.fence, "during-outage")
    assert d.epoch == 2 and [x.decision_id for x in fresh.history()].count("during-outage") == 1
