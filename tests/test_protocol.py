"""The sans-I/O machines on their own: order of durability steps, the commit point, presumed abort."""
from __future__ import annotations

from fito.protocol import (
    Begin, CollectGarbage, Coordinator, CoordinatorPhase, DecisionPublished, ManifestWritten, Notify,
    Participant, Persist, Persisted, PublishDecision, PublishRejected, RankFailed, Ready, ReadyReceived,
    SendReady, ShardWritten, TimedOut, UnitEntry, WriteManifest, WriteShard, choose_epoch,
)
from fito.protocol.messages import Committed, Discard, GlobalPlan, shard_path


def _participant_to_ready(rank: int = 0) -> tuple[Participant, list]:
    p, trace = Participant(rank), []
    p, cmds = p.handle(Begin(7, "a1"))
    trace += cmds
    path = shard_path(7, "a1", rank)
    p, cmds = p.handle(ShardWritten(path, 128, (UnitEntry("w", 0, 128, "xxh3-128:00", 7),)))
    trace += cmds
    p, cmds = p.handle(Persisted(path))
    trace += cmds
    return p, trace


def test_participant_sends_ready_only_after_its_object_is_persisted():
    p, trace = _participant_to_ready()
    kinds = [type(c) for c in trace]
    assert kinds == [WriteShard, Persist, SendReady]
    assert trace[1] == Persist(trace[0].path)  # the object itself: its directory is the storage's business
    ready = trace[-1].ready
    assert ready.units[0].hash == "xxh3-128:00" and ready.units[0].epoch == 7
    assert trace[0].path == "epochs/000000000007/a1/rank-00000.fito"


def test_participant_ignores_a_commit_for_another_attempt():
    p, _ = _participant_to_ready()
    p2, cmds = p.handle(Committed(7, "other"))
    assert p2 == p and cmds == []


def _ready(rank: int) -> Ready:
    return Ready(7, "a1", rank, shard_path(7, "a1", rank), 64, ())


def test_coordinator_publishes_only_after_all_readies_and_durable_manifest():
    c, cmds = Coordinator(2).handle(Begin(7, "a1"))
    c, cmds = c.handle(ReadyReceived(_ready(1)))
    assert cmds == [] and c.phase is CoordinatorPhase.COLLECTING
    c, cmds = c.handle(ReadyReceived(_ready(1)))  # duplicate READY counts once
    assert cmds == []
    c, cmds = c.handle(ReadyReceived(_ready(0)))
    assert isinstance(cmds[0], WriteManifest) and [r.rank for r in cmds[0].readies] == [0, 1]
    c, cmds = c.handle(ManifestWritten("m.json", "xxh3-128:ab"))
    assert cmds == [Persist("m.json")] and c.phase is CoordinatorPhase.PERSISTING
    c, cmds = c.handle(Persisted("m.json"))
    assert cmds == [PublishDecision(7, "a1", "commit", "m.json", "xxh3-128:ab")]
    c, cmds = c.handle(DecisionPublished("commit"))
    assert cmds == [Notify(7, "a1", "commit"), CollectGarbage(7, "a1")]  # tell, then collect: never before


def test_rank_failure_or_timeout_before_publish_aborts():
    for failure in (RankFailed(1, "disk full"), TimedOut()):
        c, _ = Coordinator(2).handle(Begin(7, "a1"))
        c, _ = c.handle(ReadyReceived(_ready(0)))
        c, cmds = c.handle(failure)
        assert cmds == [PublishDecision(7, "a1", "abort")]
        c, cmds = c.handle(DecisionPublished("abort"))
        assert cmds[0].outcome == "abort" and c.phase is CoordinatorPhase.ABORTED


def _publishing_coordinator() -> Coordinator:
    """A 1-rank coordinator that has just emitted PublishDecision(commit)."""
    c, _ = Coordinator(1).handle(Begin(7, "a1"))
    for event in (ReadyReceived(_ready(0)), ManifestWritten("m", "h"), Persisted("m")):
        c, _ = c.handle(event)
    assert c.phase is CoordinatorPhase.PUBLISHING
    return c


def test_fenced_out_publish_is_an_abort():
    c, cmds = _publishing_coordinator().handle(PublishRejected("stale fence 1 < 2"))
    assert cmds == [Notify(7, "a1", "abort", "decision refused: stale fence 1 < 2")]


def test_a_failure_after_the_commit_point_does_not_undo_it():
    c, _ = _publishing_coordinator().handle(DecisionPublished("commit"))
    c2, cmds = c.handle(RankFailed(0, "late"))
    assert c2.phase is CoordinatorPhase.COMMITTED and cmds == []


def test_a_discarding_coordinator_discards_once_no_commit_can_land():
    """Coordinator(discard=True), the library's: Discard follows the abort's Notify when no commit was sent
    (the abort recorded or not) or the store refused the commit for good; never after a commit whose outcome
    is unknown (the store stopped answering: it may still land)."""
    for answer in (DecisionPublished("abort"), PublishRejected("log full", definite=False)):
        c, _ = Coordinator(2, discard=True).handle(Begin(7, "a1"))
        c, cmds = c.handle(RankFailed(1, "EIO"))
        assert cmds == [PublishDecision(7, "a1", "abort")]
        c, cmds = c.handle(answer)
        assert cmds[1:] == [Discard(7, "a1")] and cmds[0].outcome == "abort"
    c = _publishing_coordinator()
    c = Coordinator(1, discard=True, **{k: getattr(c, k) for k in ("phase", "epoch", "attempt", "readies")})
    _, cmds = c.handle(PublishRejected("stale fence 1 < 2"))
    assert cmds[1:] == [Discard(7, "a1")]
    _, cmds = c.handle(PublishRejected("unreachable", definite=False))
    assert len(cmds) == 1 and cmds[0].outcome == "abort"  # no Discard: GC decides once the store answers
    _, cmds = _publishing_coordinator().handle(PublishRejected("stale fence 1 < 2"))
    assert not any(isinstance(c, Discard) for c in cmds)  # discard=False (the checker's plain coordinator)


def test_the_global_plan_may_come_after_begin_and_is_what_coverage_checks():
    c, _ = Coordinator(1).handle(Begin(7, "a1", expected=()))
    c, cmds = c.handle(GlobalPlan(((("w", None), None),)))
    assert cmds == []
    c, cmds = c.handle(ReadyReceived(_ready(0)))  # vouches for nothing: "w" is missing
    assert cmds == [PublishDecision(7, "a1", "abort")] and "not vouched for by any rank: w" in c.reason


def test_recovery_walks_back_only_with_fallback():
    bad = ValueError("corrupt")
    verify = {1: None, 2: bad}.get
    assert choose_epoch([1, 2], verify, fallback=True) == (1, [(2, bad)])
    try:
        choose_epoch([1, 2], verify, fallback=False)
    except ValueError as exc:
        assert exc is bad
    else:
        raise AssertionError("expected the newest epoch's error")


# ---- the rules that moved into the machines (issue 10: one place for commit rules) ----
PLAN = ((("w", (0,)), 40), (("w", (10,)), 40), (("meta", None), None))


def _vouching(rank: int, *units: UnitEntry) -> Ready:
    return Ready(7, "a1", rank, shard_path(7, "a1", rank), 128, units)


def _chunk(offset: int, length: int = 40, tag: int = 7) -> UnitEntry:
    return UnitEntry("w", 64, length, "", tag, blocks=("b0", "b1"), chunk=(offset,))


def test_coordinator_checks_coverage_of_the_global_plan_on_the_last_ready():
    c, _ = Coordinator(2).handle(Begin(7, "a1", 3, PLAN))
    c, cmds = c.handle(ReadyReceived(_vouching(0, _chunk(0), UnitEntry("meta", 200, 9, "", 7))))
    assert cmds == []
    c, cmds = c.handle(ReadyReceived(_vouching(1, _chunk(10))))
    assert isinstance(cmds[0], WriteManifest)  # covered: every item once, right size, right tag
    assert cmds[0].readies[0].units[0].blocks == ("b0", "b1")  # READY vouches for the blocks themselves


def test_a_coverage_gap_aborts_with_the_items_named():
    cases = [
        ((_chunk(0),), (_chunk(10), _chunk(0)), "1 vouched for twice: w@[0] (ranks 0 and 1)"),
        ((_chunk(0),), (), "1 not vouched for by any rank: w@[10]"),
        ((_chunk(0),), (_chunk(10, tag=6),), "w@[10]: epoch tag 6, expected 7 (rank 1)"),
        ((_chunk(0),), (_chunk(10, length=39),), "w@[10]: 39 bytes, expected 40 (rank 1)"),
    ]
    for units0, units1, says in cases:
        c, _ = Coordinator(2).handle(Begin(7, "a1", 3, PLAN))
        c, _ = c.handle(ReadyReceived(_vouching(0, *units0, UnitEntry("meta", 200, 9, "", 7))))
        c, cmds = c.handle(ReadyReceived(_vouching(1, *units1)))
        assert cmds == [PublishDecision(7, "a1", "abort", fence=3)], says  # no manifest is written
        c, cmds = c.handle(DecisionPublished("abort"))
        assert cmds[0].outcome == "abort" and cmds[0].reason.startswith("coverage check failed: ")
        assert says in cmds[0].reason


def test_without_a_global_plan_nothing_is_checked():
    c, _ = Coordinator(1).handle(Begin(7, "a1", 3))  # v1: each rank saves its own units
    c, cmds = c.handle(ReadyReceived(_vouching(0, _chunk(0), _chunk(0))))
    assert isinstance(cmds[0], WriteManifest)


def test_the_coordinator_carries_its_fence_into_every_publish_and_gc():
    c, _ = Coordinator(1).handle(Begin(7, "a1", fence=5))
    for event in (ReadyReceived(_ready(0)), ManifestWritten("m", "h")):
        c, _ = c.handle(event)
    c, cmds = c.handle(Persisted("m"))
    assert cmds == [PublishDecision(7, "a1", "commit", "m", "h", fence=5)]
    c, cmds = c.handle(DecisionPublished("commit"))
    assert cmds[1] == CollectGarbage(7, "a1", fence=5)
    c, _ = Coordinator(2).handle(Begin(7, "a1", fence=5))
    c, cmds = c.handle(RankFailed(1, "disk full"))
    assert cmds == [PublishDecision(7, "a1", "abort", fence=5)]
    c, _ = c.handle(DecisionPublished("abort"))
    c, _ = c.handle(Begin(8, "a2", fence=6))  # a new attempt takes the fence it is begun with
    assert c.fence == 6


def test_drive_is_feed_then_step_and_recording_sees_every_command():
    from fito.protocol.drive import drive, feed, recording, step

    def execute(cmd):
        return Persisted(cmd.path) if isinstance(cmd, Persist) else (
            ShardWritten(cmd.path, 1, ()) if isinstance(cmd, WriteShard) else None)

    seen: list = []
    p, outbox = drive(Participant(0), Begin(7, "a1"), recording(execute, "rank0", lambda who, c: seen.append((who, c))))
    assert [type(c) for _, c in seen] == [WriteShard, Persist, SendReady] and {w for w, _ in seen} == {"rank0"}
    assert [type(c) for c in outbox] == [SendReady]
    q, pending = feed(Participant(0), Begin(7, "a1"))
    sent = []
    while pending:
        q, pending, out = step(q, pending, execute)
        sent += [out] if out is not None else []
    assert q == p and sent == outbox
