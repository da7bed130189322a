"""The storage-native decision store (fito.coord.object_store): races of real processes on the fence and on one
step's decision, the probe that refuses a store ignoring `If-None-Match`, and a log refused when damaged.
(The DecisionStore contract itself runs over this store in tests/coord/test_decision_contract.py.)"""
from __future__ import annotations

import json
import multiprocessing as mp
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fito.coord.base import Decision
from fito.coord.object_log import ConditionalWriteUnsupportedError, LocalObjects, S3Objects
from fito.coord.object_store import ObjectDecisionStore
from fito.errors import DecisionLogDamagedError, StaleFenceError


def _store(where: tuple) -> ObjectDecisionStore:
    if where[0] == "local":
        return ObjectDecisionStore(LocalObjects(where[1]))
    from fito.storage.s3 import S3Storage

    return ObjectDecisionStore.for_storage(S3Storage(where[1], storage_options=where[2]))


def _racer(where: tuple, me: int, rounds: int, barrier: Any, out: Any) -> None:
    store = _store(where)
    for r in range(rounds):
        barrier.wait()
        token = store.acquire_fence()
        barrier.wait()  # every racer holds a token: only the newest may commit step r
        try:
            store.publish(Decision(epoch=r, attempt=f"p{me}", outcome="commit", manifest=f"m{r}", manifest_hash="xxh3:00",
                                   decision_id=f"r{r}-p{me}"), token)
            out.put((r, me, token, "won"))
        except StaleFenceError:
            out.put((r, me, token, "fenced"))


def _where(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple:
    if kind == "local":
        return ("local", str(tmp_path / "decisions.d"))
    server = request.getfixturevalue("seaweed")
    return ("s3", server.new_url(), server.options())


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.parametrize("kind,racers,rounds", [("local", 4, 40), pytest.param("s3", 3, 25, marks=pytest.mark.s3)])
def test_racing_coordinators_exactly_one_commits_each_step(kind: str, racers: int, rounds: int, tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    where = _where(kind, tmp_path, request)
    ctx = mp.get_context("spawn")  # obstore's runtime must not be forked
    barrier, out = ctx.Barrier(racers), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(where, i, rounds, barrier, out)) for i in range(racers)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(racers * rounds)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    tokens = [t for _, _, t, _ in results]
    assert sorted(tokens) == list(range(1, racers * rounds + 1))  # unique and contiguous: no token handed out twice
    for r in range(rounds):
        this = [(t, res) for rr, _, t, res in results if rr == r]
        assert [res for _, res in this].count("won") == 1, f"round {r}: {this}"
        assert max(this)[1] == "won"  # the winner is the newest coordinator
    stored = _store(where).decisions()
    assert sorted(d.epoch for d in stored) == list(range(rounds))  # one decision per step, nothing lost or mixed
    winners = {(r, f"p{i}") for r, i, _, res in results if res == "won"}
    assert {(d.epoch, d.attempt) for d in stored} == winners


class _IgnoresCondition(S3Objects):
    """A client for a store that accepts `If-None-Match: *` and ignores it: every create overwrites."""

    def create(self, key: str, data: bytes) -> bool:
        import obstore

        obstore.put(self.store, self.prefix + key, data, use_multipart=False)  # the condition dropped on the way
        return True


@pytest.mark.s3
def test_a_store_that_ignores_if_none_match_is_refused_at_the_probe(seaweed) -> None:
    from fito.storage.s3 import S3Storage

    st = S3Storage(seaweed.new_url(), storage_options=seaweed.options())
    store = ObjectDecisionStore(_IgnoresCondition(st.store, "decisions.d", st.url))
    with pytest.raises(ConditionalWriteUnsupportedError, match=r"put-if-absent onto an existing object succeeded.*"
                                                              r"ignores `If-None-Match: \*`.*never falls back"):
        store.acquire_fence()
    assert st.list("decisions.d") == []  # nothing was recorded, and the probe object is gone
    assert ObjectDecisionStore.for_storage(st).acquire_fence() == 1  # the real conditional client passes it


def test_a_damaged_log_is_refused_and_a_stale_entry_changes_nothing(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path / "decisions.d")
    store = ObjectDecisionStore(objects)
    f1 = store.acquire_fence()
    # an entry appended past the tail by something that skipped the fence check: replay ignores it
    stale = {"op": "decision", "epoch": 9, "attempt": "z", "outcome": "commit", "manifest": "m", "manifest_hash": "h",
             "decision_id": "zombie", "fence": f1 - 1, "created": 0.0, "id": "x"}
    assert objects.create("log/00000000000000000003", json.dumps(stale).encode())
    assert ObjectDecisionStore(objects).decisions() == [] and ObjectDecisionStore(objects).current_fence() == f1
    assert objects.create("log/00000000000000000005", b"{}")  # a gap: slot 4 is missing
    with pytest.raises(DecisionLogDamagedError, match=r"log/: expected contiguous slots from 1, found slots \[1, 2, 3, 5\]"):
        ObjectDecisionStore(objects).decisions()
    objects.delete("log/00000000000000000005")
    assert objects.create("log/00000000000000000004", b"not json")
    with pytest.raises(DecisionLogDamagedError, match=r"00000000000000000004: expected a well-formed decision-log entry"):
        ObjectDecisionStore(objects).decisions()
    with pytest.raises(DecisionLogDamagedError):
        store.publish(Decision(epoch=1, attempt="a", outcome="commit"), f1)  # a writer refuses it too


def test_a_create_is_exclusive_and_never_shows_a_partial_object(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path)
    assert objects.create("log/a", b"first") and not objects.create("log/a", b"second")
    assert objects.get("log/a") == b"first" and objects.list("log/") == ["log/a"]  # no temporary files listed
    assert Counter(p.name.startswith(".tmp-") for p in (tmp_path / "log").iterdir()) == Counter({False: 1})


class _LosesFirstReplies(LocalObjects):
    """Every create lands, but the first reply of each is lost and the client's retry sees "exists" (412)."""

    def create(self, key: str, data: bytes) -> bool:
        created = super().create(key, data)
        if key.startswith("log/") and created:
            return False  # the retry's answer: the object is there (our own first try)
        return created


def test_an_append_whose_reply_was_lost_is_recognised_not_repeated(tmp_path: Path) -> None:
    store = ObjectDecisionStore(_LosesFirstReplies(tmp_path))
    assert store.acquire_fence() == 1 and store.acquire_fence() == 2  # not a second token for one call
    d = store.publish(Decision(epoch=3, attempt="a", outcome="commit", manifest="m", manifest_hash="h", decision_id="x"), 2)
    assert d.seq == 4 and [e.decision_id for e in store.decisions()] == ["x"]
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == [f"{i:020d}" for i in range(1, 5)]  # one entry each


class _CountsGets(LocalObjects):
    gets = 0

    def get(self, key: str) -> bytes | None:
        type(self).gets += 1
        return super().get(key)


def test_a_new_handle_starts_from_the_newest_snapshot(tmp_path: Path, monkeypatch) -> None:
    import fito.coord.object_store as object_store

    monkeypatch.setattr(object_store, "SNAPSHOT_EVERY", 4)
    writer = ObjectDecisionStore(LocalObjects(tmp_path))
    f = writer.acquire_fence()
    for e in range(9):
        writer.publish(Decision(epoch=e, attempt="a", outcome="commit", manifest="m", manifest_hash="h"), f)
    writer.retire(0, "a", f)  # slot 12: a snapshot holds a retirement too
    writer.publish(Decision(epoch=9, attempt="a", outcome="abort"), f)  # slot 13, after the newest snapshot
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == [f"{s:020d}" for s in (4, 8, 12)]
    reader = ObjectDecisionStore(_CountsGets(tmp_path))
    assert reader.decisions() == writer.decisions() and reader.current_fence() == f and reader.log_id() == writer.log_id()
    assert [d.epoch for d in reader.committed()] == list(range(1, 9))
    assert _CountsGets.gets == 2  # the snapshot of slot 12 and slot 13: not the 13 entries
    reader.publish(Decision(epoch=10, attempt="a", outcome="commit", manifest="m", manifest_hash="h"), f)
    assert [d.epoch for d in writer.committed()][-1] == 10


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_lost_log_beside_attempts_is_refused_not_restarted(kind: str, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    """The decision objects deleted, the attempts left: a new job must not start an empty log beside them (it
    would restart at fence 1 and report no checkpoint); the SQLite log refuses the same way."""
    import shutil

    import torch

    import fito
    from fito.errors import DecisionLogMissingError
    from fito.storage.localfs import LocalFS

    if kind == "local":
        root = tmp_path / "ckpt"
        root.mkdir()

        def storage() -> Any:
            return LocalFS(root)

        def lose_log() -> None:
            shutil.rmtree(root / "decisions.d")
    else:
        from obstore.store import S3Store

        from fito.storage.s3 import S3Storage
        server = request.getfixturevalue("seaweed")
        url, options = server.new_url(), server.options()

        def storage() -> Any:
            return S3Storage(url, storage_options=options)

        def lose_log() -> None:
            s = storage()
            for info in list(s.list("decisions.d")):
                s.delete(info.key)
            assert not list(s.list("decisions.d"))
    state = {"w": torch.arange(4.0)}
    with fito.Checkpointer(storage(), store=ObjectDecisionStore.for_storage(storage())) as ck:
        ck.save(1, state)
    lose_log()
    with pytest.raises(DecisionLogMissingError, match="decision log is missing.*recover-log"):
        ObjectDecisionStore.for_storage(storage())  # a writer's store: refused at open
    with pytest.raises(DecisionLogMissingError, match="recover-log"):  # a reader's: not "no checkpoint"
        fito.Checkpointer(storage(), store=ObjectDecisionStore.for_storage(storage(), readonly=True)).restore(
            {"w": torch.zeros(4)})
    assert not list(storage().list("decisions.d/log"))  # nothing was written
    # the explicit opt-in starts a new log beside them
    with fito.Checkpointer(storage(), store=ObjectDecisionStore.for_storage(storage(), replace_lost=True)) as ck:
        ck.save(3, state)
        assert ck.restore({"w": torch.zeros(4)}) == 3
