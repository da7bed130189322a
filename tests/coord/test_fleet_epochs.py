"""Fleet epoch transitions (§9.2) on SQLite and etcd: fencing of proposers, watch, fencing of nodes."""
from __future__ import annotations

import time

import pytest

from fito.coord.fleet_base import EpochCoordinator, EpochFollower
from fito.errors import EpochConflictError, EpochFencedError, StaleFenceError


def _wait(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_transitions_form_one_chain(fleet_store_factory) -> None:
    store = fleet_store_factory()
    assert store.current().epoch == 0 and store.history() == []
    coord = EpochCoordinator(store)
    d1 = coord.transition("firmware=1.1")
    d2 = coord.transition("firmware=1.2")
    assert (d1.epoch, d2.epoch) == (1, 2) and d2.revision > d1.revision
    other = fleet_store_factory()
    assert [(d.epoch, d.config) for d in other.history()] == [(1, "firmware=1.1"), (2, "firmware=1.2")]
    assert other.current() == d2


def test_conflicting_and_stale_proposals_are_refused(fleet_store_factory) -> None:
    a = EpochCoordinator(fleet_store_factory())
    a.transition("v1")
    with pytest.raises(EpochConflictError, match="at epoch 1"):
        a.store.propose(1, "again", a.fence, "dup-epoch")  # epoch 1 exists already
    with pytest.raises(EpochConflictError):
        a.store.propose(3, "skip", a.fence, "skip")  # cannot skip epoch 2
    b = EpochCoordinator(fleet_store_factory())  # newer coordinator: a is now a zombie
    with pytest.raises(StaleFenceError, match="stale"):
        a.transition("zombie")
    assert b.transition("v2").epoch == 2
    assert [d.config for d in b.store.history()] == ["v1", "v2"]


def test_propose_is_idempotent_on_decision_id(fleet_store_factory) -> None:
    c = EpochCoordinator(fleet_store_factory())
    d = c.store.propose(1, "v1", c.fence, "id-1")
    again = c.store.propose(1, "v1", c.fence, "id-1")  # the retry of a commit whose reply was lost
    assert again == d and len(c.store.history()) == 1


def test_nodes_switch_before_their_next_collective(fleet_store_factory) -> None:
    seen: dict[str, list[int]] = {"n0": [], "n1": []}
    nodes = [EpochFollower(fleet_store_factory(), n, on_switch=lambda d, n=n: seen[n].append(d.epoch))
             for n in ("n0", "n1")]
    try:
        assert [n.before_collective() for n in nodes] == [0, 0]
        EpochCoordinator(fleet_store_factory()).transition("protocol=v2")
        assert _wait(lambda: all(n.epoch == 1 for n in nodes)), [n.epoch for n in nodes]
        assert [n.before_collective() for n in nodes] == [1, 1]
        assert seen == {"n0": [1], "n1": [1]}
        assert nodes[0].store.participants(1) == ["n0", "n1"]
    finally:
        for n in nodes:
            n.close()


def test_node_that_has_not_observed_is_fenced_out(fleet_store_factory) -> None:
    blind = EpochFollower(fleet_store_factory(), "blind", watch=False)  # never watches: cannot observe
    try:
        assert blind.before_collective() == 0
        EpochCoordinator(fleet_store_factory()).transition("v1")
        with pytest.raises(EpochFencedError, match="committed epoch is 1"):
            blind.before_collective()
        assert blind.epoch == 0  # it did not silently run on
        blind.sync()  # catches up by a linearizable read, then is admitted
        assert blind.before_collective() == 1
        with pytest.raises(EpochFencedError):
            blind.store.ack(blind.lease, 0)  # cannot go back
    finally:
        blind.close()


def test_node_without_live_lease_is_fenced_out(fleet_store_factory) -> None:
    store = fleet_store_factory()
    node = EpochFollower(store, "gone", watch=False, ttl=1.0)
    store.revoke(node.lease)
    with pytest.raises(EpochFencedError, match="no live lease"):
        node.before_collective()
    assert store.participants(0) == []


def test_racing_proposers_commit_each_epoch_once(fleet_store_factory) -> None:
    """Two handles with the same (current) fence race for the same epochs: each epoch commits once,
    the loser of each race gets EpochConflictError, and the chain has no gap."""
    import threading

    from fito.coord.fleet_base import new_decision_id

    fence = fleet_store_factory().acquire_fence()
    wins: dict[str, list[int]] = {"a": [], "b": []}
    conflicts: dict[str, int] = {"a": 0, "b": 0}

    def racer(tag: str) -> None:
        store = fleet_store_factory()
        while True:
            target = store.current().epoch + 1
            if target > 8:
                return
            try:
                wins[tag].append(store.propose(target, tag, fence, new_decision_id()).epoch)
            except EpochConflictError:
                conflicts[tag] += 1

    threads = [threading.Thread(target=racer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hist = fleet_store_factory().history()
    assert [d.epoch for d in hist] == list(range(1, 9))
    assert sorted(wins["a"] + wins["b"]) == list(range(1, 9))
    assert [d.config for d in hist] == ["a" if e in wins["a"] else "b" for e in range(1, 9)]
