"""The DecisionStore contract, run against the embedded SQLite log and a real etcd."""
from __future__ import annotations

import threading

import pytest

from fito.coord.base import Decision
from fito.errors import RetireRefusedError, StaleFenceError


def _d(epoch: int, attempt: str = "a0", outcome: str = "commit", did: str = "") -> Decision:
    return Decision(epoch=epoch, attempt=attempt, outcome=outcome, manifest=f"m{epoch}.json" if outcome == "commit"
                    else "", manifest_hash="xxh3:00" if outcome == "commit" else "", decision_id=did)


def test_fences_strictly_increase(decision_store_factory) -> None:
    a, b = decision_store_factory(), decision_store_factory()
    assert a.current_fence() == 0
    tokens = [a.acquire_fence(), b.acquire_fence(), a.acquire_fence()]
    assert tokens == sorted(set(tokens)) and tokens[0] >= 1
    assert b.current_fence() == tokens[-1]


def test_publish_orders_and_reads_back(decision_store_factory) -> None:
    s = decision_store_factory()
    f = s.acquire_fence()
    out = [s.publish(_d(e), f) for e in (1, 2)] + [s.publish(_d(3, outcome="abort"), f)]
    assert [d.seq for d in out] == sorted(d.seq for d in out) and len({d.seq for d in out}) == 3
    stored = decision_store_factory().decisions()  # a second handle sees the same log
    assert [(d.epoch, d.outcome, d.fence) for d in stored] == [(1, "commit", f), (2, "commit", f), (3, "abort", f)]
    assert stored[0].manifest == "m1.json" and stored[2].manifest == ""
    assert [d.epoch for d in s.committed()] == [1, 2]
    assert s.outcome_of(3, "a0") == "abort" and s.outcome_of(4, "a0") is None


def test_zombie_coordinator_cannot_commit(decision_store_factory) -> None:
    old, new = decision_store_factory(), decision_store_factory()
    f_old = old.acquire_fence()
    f_new = new.acquire_fence()
    with pytest.raises(StaleFenceError, match="stale"):
        old.publish(_d(5, did="zombie"), f_old)
    with pytest.raises(StaleFenceError):
        old.retire(5, "a0", f_old)
    new.publish(_d(5, attempt="a1", did="fresh"), f_new)
    assert [d.decision_id for d in old.decisions()] == ["fresh"]


def test_publish_is_idempotent_on_decision_id(decision_store_factory) -> None:
    s = decision_store_factory()
    f = s.acquire_fence()
    first = s.publish(_d(7, did="once"), f)
    again = s.publish(_d(7, did="once"), f)
    assert again.seq == first.seq and len(s.decisions()) == 1
    # the retry of a publish that landed succeeds even after a newer coordinator took over
    decision_store_factory().acquire_fence()
    assert s.publish(_d(7, did="once"), f).seq == first.seq
    with pytest.raises(StaleFenceError):
        s.publish(_d(8, did="other"), f)
    assert len(s.decisions()) == 1


def test_committed_later_wins_and_retire_hides(decision_store_factory) -> None:
    s = decision_store_factory()
    f = s.acquire_fence()
    s.publish(_d(1, "a0"), f)
    s.publish(_d(2, "a0"), f)
    s.publish(_d(1, "a1"), f)  # epoch 1 committed again by a later attempt
    assert [(d.epoch, d.attempt) for d in s.committed()] == [(2, "a0"), (1, "a1")]
    s.retire(2, "a0", f)
    assert [(d.epoch, d.attempt) for d in s.committed()] == [(1, "a1")]
    retired = [d for d in s.decisions() if d.retired]
    assert [(d.epoch, d.attempt) for d in retired] == [(2, "a0")]


def test_concurrent_publishers_get_distinct_seqs(decision_store_factory) -> None:
    fence = decision_store_factory().acquire_fence()
    errors: list[BaseException] = []

    def worker(tag: str) -> None:
        store = decision_store_factory()
        try:
            for e in range(6):
                store.publish(_d(e, attempt=tag, did=f"{tag}-{e}"), fence)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = [d.seq for d in decision_store_factory().decisions()]
    assert len(seqs) == 12 and len(set(seqs)) == 12


def test_a_log_has_one_identity_from_its_first_write(decision_store_factory) -> None:
    from fito.protocol.layout import valid_log_id

    a, b = decision_store_factory(), decision_store_factory()
    assert a.log_id() is None  # nothing written yet: reading takes nothing, creates nothing
    a.acquire_fence()
    assert valid_log_id(a.log_id()) and b.log_id() == a.log_id()  # every handle on the log sees the same id
    b.acquire_fence()
    assert decision_store_factory().log_id() == a.log_id()


def test_retire_never_retires_the_newest_commit_and_an_operator_needs_no_fence(decision_store_factory) -> None:
    """`fito gc` retires without a fence (it must not fence out a live job); one transaction refuses to
    retire the newest live commit, for an operator and a coordinator alike."""
    coordinator, operator = decision_store_factory(), decision_store_factory()
    f = coordinator.acquire_fence()
    coordinator.publish(_d(1, "a0"), f)
    coordinator.publish(_d(2, "a0"), f)
    with pytest.raises(RetireRefusedError):
        operator.retire(2, "a0", None)
    with pytest.raises(RetireRefusedError):
        coordinator.retire(2, "a0", f)
    operator.retire(1, "a0", None)
    assert [d.epoch for d in coordinator.committed()] == [2] and coordinator.current_fence() == f
    coordinator.publish(_d(3, "a0"), f)  # the live coordinator was not fenced out
    coordinator.retire(2, "a0", f)
    assert [d.epoch for d in operator.committed()] == [3]
