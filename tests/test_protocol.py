"""The sans-I/O machines on their own: order of durability steps, the commit point, presumed abort."""
from __future__ import annotations

from fito.protocol import (
    Begin, CollectGarbage, Coordinator, CoordinatorPhase, DecisionPublished, FsyncDir, FsyncFile, Fsynced,
    ManifestWritten, Notify, Participant, PublishDecision, PublishRejected, RankFailed, Ready, ReadyReceived,
    SendReady, ShardWritten, TimedOut, UnitEntry, WriteManifest, WriteShard, choose_epoch,
)
from fito.protocol.messages import Committed, shard_path


def _participant_to_ready(rank: int = 0) -> tuple[Participant, list]:
    p, trace = Participant(rank), []
    p, cmds = p.handle(Begin(7, "a1"))
    trace += cmds
    path = shard_path(7, "a1", rank)
    p, cmds = p.handle(ShardWritten(path, 128, (UnitEntry("w", 0, 128, "xxh3-128:00", 7),)))
    trace += cmds
    p, cmds = p.handle(Fsynced(path))
    trace += cmds
    p, cmds = p.handle(Fsynced("dir"))
    trace += cmds
    return p, trace


def test_participant_sends_ready_only_after_file_and_directory_fsync():
    p, trace = _participant_to_ready()
    kinds = [type(c) for c in trace]
    assert kinds == [WriteShard, FsyncFile, FsyncDir, SendReady]
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
    assert cmds == [FsyncFile("m.json")]
    c, cmds = c.handle(Fsynced("m.json"))
    assert isinstance(cmds[0], FsyncDir)
    c, cmds = c.handle(Fsynced("dir"))
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
    for event in (ReadyReceived(_ready(0)), ManifestWritten("m", "h"), Fsynced("m"), Fsynced("d")):
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
