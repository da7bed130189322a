"""etcd-specific behaviour: a lost reply to a commit, endpoint failover, a bounded error without quorum."""
from __future__ import annotations

import time

import pytest
from etcd3gw import exceptions as gw_exc

from fito.coord.base import Decision
from fito.coord.etcd import EtcdDecisionStore
from fito.coord.etcd_fleet import EtcdFleetStore
from fito.coord.etcd_transport import EtcdTransport
from fito.testing.etcd import free_ports
from fito.coord.fleet_base import EpochCoordinator
from fito.errors import CoordinationUnavailableError


def _dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def _lose_first_commit_reply(transport: EtcdTransport) -> list[dict]:
    """Let the first write transaction reach etcd, then drop its reply (a timeout after the commit landed).
    Returns the list that receives the lost reply."""
    client = transport._clients[0]
    real_post = client.post
    lost: list[dict] = []

    def post_then_lose_reply(url, *args, **kwargs):
        result = real_post(url, *args, **kwargs)
        if url.endswith("kv/txn") and not lost and '"request_put"' in kwargs.get("data", ""):
            lost.append(result)
            raise gw_exc.ConnectionTimeoutError("reply lost (injected)")
        return result

    client.post = post_then_lose_reply
    return lost


def test_gateway_prefix_is_v3(etcd1) -> None:
    t = EtcdTransport(etcd1.endpoints)
    r = t.call("status", "maintenance/status", {})
    assert r["version"].startswith(("3.4", "3.5"))  # Debian's 3.4.23 or the test extra's 3.5.1
    assert t._clients[0].get_url("kv/range").endswith("/v3/kv/range")


def test_commit_whose_reply_was_lost_is_not_doubled(etcd1, prefix: str) -> None:
    store = EtcdDecisionStore(etcd1.endpoints, prefix=prefix)
    fence = store.acquire_fence()
    lost = _lose_first_commit_reply(store.t)
    d = store.publish(Decision(epoch=3, attempt="a", outcome="commit", manifest="m", decision_id="only-once"), fence)
    assert lost and lost[0]["succeeded"] is True  # the first try did commit
    assert d.seq == 1
    assert [x.decision_id for x in store.decisions()] == ["only-once"]


def test_fails_over_past_a_dead_member(etcd1, prefix: str) -> None:
    store = EtcdDecisionStore([_dead_endpoint(), *etcd1.endpoints], prefix=prefix, request_timeout=0.5)
    fence = store.acquire_fence()
    store.publish(Decision(epoch=1, attempt="a", outcome="commit", decision_id="x"), fence)
    assert store.t.failovers >= 1
    assert [d.epoch for d in store.decisions()] == [1]


def test_no_member_reachable_is_a_bounded_clear_error(prefix: str) -> None:
    store = EtcdDecisionStore([_dead_endpoint(), _dead_endpoint()], prefix=prefix, request_timeout=0.3, deadline=1.0)
    t0 = time.monotonic()
    with pytest.raises(CoordinationUnavailableError, match="no etcd quorum answered within 1.0s"):
        store.acquire_fence()
    assert time.monotonic() - t0 < 1.0 + 0.3 + 0.5


def test_transition_whose_reply_was_lost_is_not_doubled(etcd1, prefix: str) -> None:
    store = EtcdFleetStore(etcd1.endpoints, prefix=prefix)
    coord = EpochCoordinator(store)
    lost = _lose_first_commit_reply(store.t)
    d = coord.transition("v1", decision_id="t-once")
    assert lost and lost[0]["succeeded"] is True
    assert d.epoch == 1 and [x.decision_id for x in store.history()] == ["t-once"]
