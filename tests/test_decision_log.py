"""The decision log (issue 9, items 1, 5, 11, 15): never silently (re)created, refused when damaged or linked,
self-contained after each write, with an identity attempt names carry; readers take no fence and write nothing;
a lock or a read-only log is reported as what it is."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import fito
from fito.coord.sqlite import SqliteDecisionStore
from fito.errors import (
    DecisionLogDamagedError, DecisionLogLockedError, DecisionLogMissingError, DecisionLogReadOnlyError, FitoError,
)
from fito.protocol.layout import parse_attempt

LOG = SqliteDecisionStore.FILENAME


def state(step: int) -> dict:
    return {"w": torch.full((8,), float(step)), "step": step}


def committed_root(root: Path, steps=(1, 2), keep=None) -> Path:
    with fito.Checkpointer(root, keep=keep) as ck:
        for s in steps:
            ck.save(s, state(s))
    return root


def attempts(root: Path) -> set[str]:
    return {f"{e.name}/{a.name}" for e in (root / "epochs").iterdir() for a in e.iterdir()}


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every name under root with its size and mtime: a restore must change none of it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[p.relative_to(root).as_posix()] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


# ---------------------------------------------------------------- item 1: a lost log is never re-created
def test_a_lost_log_beside_attempts_is_refused_and_nothing_is_created(ckdir):
    committed_root(ckdir)
    before = attempts(ckdir)
    (ckdir / LOG).unlink()
    with pytest.raises(DecisionLogMissingError, match="decision log is missing.*recover-log") as info:
        fito.Checkpointer(ckdir)
    assert str(ckdir / LOG) in str(info.value) and "replace_lost=True" in str(info.value)
    assert not isinstance(info.value, fito.NoCommittedEpochError)  # the README's "start from 0" must not catch it
    assert not (ckdir / LOG).exists() and attempts(ckdir) == before


def test_a_new_root_and_an_empty_epochs_dir_just_work(tmp_path):
    committed_root(tmp_path / "new", steps=(1,))
    (tmp_path / "empty" / "epochs").mkdir(parents=True)
    assert committed_root(tmp_path / "empty", steps=(3,)) and fito.Checkpointer(tmp_path / "empty").committed() == [3]


def test_a_log_started_over_on_purpose_never_deletes_the_lost_logs_attempts(ckdir):
    """Identity: the old attempts carry the lost log's id, so the new log's retention leaves them alone."""
    committed_root(ckdir, steps=(1, 2))
    old = attempts(ckdir)
    (ckdir / LOG).unlink()
    with fito.Checkpointer(ckdir, keep=1, store=SqliteDecisionStore(ckdir / LOG, replace_lost=True)) as ck:
        ck.save(1, state(10))  # fence 1 again, same step numbers as the lost log's
        ck.save(2, state(20))
        assert ck.committed() == [2]
    assert old <= attempts(ckdir)  # on main, the keep=1 save deleted all of them as an older coordinator's garbage


# ---------------------------------------------------------------- item 15: damaged or linked logs are refused
def _drop_fence_row(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM fence")


def _extra_table(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE other (x)")


def _bad_row(db: sqlite3.Connection) -> None:
    db.execute("UPDATE decisions SET epoch = 'two' WHERE seq = 2")


def _fence_below_decisions(db: sqlite3.Connection) -> None:
    db.execute("UPDATE fence SET token = 0")


def _no_decisions_table(db: sqlite3.Connection) -> None:
    db.execute("DROP TABLE decisions")


@pytest.mark.parametrize("damage", [_drop_fence_row, _extra_table, _bad_row, _fence_below_decisions, _no_decisions_table])
def test_a_damaged_log_is_refused_and_left_as_it_is(ckdir, damage):
    committed_root(ckdir)
    db = sqlite3.connect(ckdir / LOG, isolation_level=None)
    damage(db)
    db.close()
    before = (ckdir / LOG).read_bytes()
    ck = fito.Checkpointer(ckdir)
    with pytest.raises(fito.SaveAbortedError, match="could not take the fencing token.*never repairs") as info:
        ck.save(3, state(3))  # on main: the fence row was re-inserted at 0 (a reset fence), or the table re-created
    assert isinstance(info.value.__cause__, DecisionLogDamagedError) and "recover-log" in str(info.value)
    with pytest.raises(DecisionLogDamagedError):
        ck.restore(state(0))
    assert (ckdir / LOG).read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100])
def test_a_log_that_is_not_sqlite_is_refused(ckdir, content):
    committed_root(ckdir)
    (ckdir / LOG).write_bytes(content)
    with pytest.raises(DecisionLogDamagedError):
        fito.Checkpointer(ckdir).restore(state(0))  # on main an empty file became a fresh log: "no checkpoint"
    assert (ckdir / LOG).read_bytes() == content


@pytest.mark.parametrize("linked", ["", "-journal"])
def test_a_symlinked_log_or_journal_is_refused(tmp_path, linked):
    root = committed_root(tmp_path / "ckpt")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = root / (LOG + linked)
    if linked:
        target.symlink_to(outside / "journal")
    else:
        shutil.move(root / LOG, outside / LOG)
        target.symlink_to(outside / LOG)
    before = sorted(os.listdir(outside))
    with pytest.raises(DecisionLogDamagedError, match="symlink"):
        fito.Checkpointer(root).restore(state(0))
    assert sorted(os.listdir(outside)) == before  # on main, restore created the journal files next to the target


# ---------------------------------------------------------------- item 1: a copy of the main file is a backup
def test_a_plain_copy_of_the_log_alone_holds_every_decision(ckdir, tmp_path):
    ck = fito.Checkpointer(ckdir, keep=2)
    for s in (1, 2, 3):  # step 3's commit retires step 1
        ck.save(s, state(s))
        shutil.copyfile(ckdir / LOG, tmp_path / f"copy-{s}.sqlite")  # while the job runs, without any -wal
    try:
        for s, expected in ((1, [1]), (2, [1, 2]), (3, [2, 3])):
            copy = SqliteDecisionStore(tmp_path / f"copy-{s}.sqlite", create=False, readonly=True)
            assert [d.epoch for d in copy.committed()] == expected  # on main (WAL) the copies held no decision
            copy.close()
        assert not list(ckdir.glob(LOG + "-*"))  # no side file holds a decision
    finally:
        ck.close()


# ---------------------------------------------------------------- a v1 log (WAL, no identity) still works
def test_a_v1_wal_log_opens_read_only_unchanged_and_is_migrated_when_written(ckdir):
    committed_root(ckdir, steps=(1,))
    db = sqlite3.connect(ckdir / LOG, isolation_level=None)
    db.execute("DROP TABLE meta")  # a fito v1 log: no identity, WAL mode
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.close()
    v1_leftover = ckdir / "epochs" / "000000000001" / "f1-18c1a2b3c4d-9f8e7d6c"  # a v1-named undecided attempt
    v1_leftover.mkdir()
    reader = fito.Checkpointer(ckdir)
    assert reader.restore(state(0)) == 1 and reader.store.log_id() is None
    reader.close()
    with fito.Checkpointer(ckdir, keep=1) as ck:
        ck.save(2, state(2))
        log_id = ck.store.log_id()
        assert log_id is not None
        name = next((ckdir / "epochs" / "000000000002").iterdir()).name
        assert parse_attempt(name).log_id == log_id
    db = sqlite3.connect(f"file:{ckdir / LOG}?mode=ro", uri=True)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert dict(db.execute("SELECT key, value FROM meta"))["origin"] == "v1"
    db.close()
    assert v1_leftover.exists()  # a v1 name cannot prove which log made it: never deleted by name
    assert fito.Checkpointer(ckdir).restore(state(0)) == 2


# ---------------------------------------------------------------- item 5: readers take no fence, write nothing
def test_restore_list_inspect_verify_take_no_fence_and_change_nothing(ckdir):
    from fito.ckpt.inspect import describe, verify

    trainer = fito.Checkpointer(ckdir, keep=None)
    assert trainer.store.current_fence() == 0  # constructing it took nothing either
    trainer.save(1, state(1))
    before = tree(ckdir)
    evaluator = fito.Checkpointer(ckdir)
    into = state(0)
    assert evaluator.restore(into) == 1 and evaluator.committed() == [1] and torch.equal(into["w"], state(1)["w"])
    assert [i.status for i in describe(ckdir)] == ["committed"] and verify(ckdir).whole
    evaluator.close()
    assert tree(ckdir) == before
    assert trainer.store.current_fence() == 1
    trainer.save(2, state(2))  # on main: "fencing token 1 is stale", the evaluator had taken the fence
    assert trainer.committed() == [1, 2]
    trainer.close()


def test_an_evaluator_restoring_between_saves_never_fails_the_trainer(ckdir):
    committed_root(ckdir, steps=(0,))
    evaluator = textwrap.dedent(f"""
        import os, time, torch, fito
        restored, errors = 0, 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not os.path.exists({str(ckdir.parent / "stop")!r}):
            try:
                fito.Checkpointer({str(ckdir)!r}).restore({{"w": torch.zeros(8), "step": 0}}, fallback=True)
                restored += 1
                open({str(ckdir.parent / "restored")!r}, "w").close()
            except fito.FitoError:  # a step retired while being read: allowed, the trainer is what matters
                errors += 1
        print(restored, errors)
    """)
    proc = subprocess.Popen([sys.executable, "-c", evaluator], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not (ckdir.parent / "restored").exists() and proc.poll() is None:
            time.sleep(0.05)  # the evaluator is up and has restored once: now it runs beside every save
        with fito.Checkpointer(ckdir, keep=2) as trainer:
            for s in range(1, 13):
                assert trainer.save(s, state(s)) == s
    finally:
        (ckdir.parent / "stop").touch()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    restored, _errors = map(int, out.split())
    assert restored >= 1
    assert fito.Checkpointer(ckdir).committed() == [11, 12]


def test_a_reader_rolls_back_a_writer_killed_inside_a_transaction(ckdir):
    committed_root(ckdir, steps=(1,))
    killer = textwrap.dedent(f"""
        import os, sqlite3
        db = sqlite3.connect({str(ckdir / LOG)!r}, isolation_level=None)
        db.execute("PRAGMA cache_size=1")
        db.execute("BEGIN IMMEDIATE")
        for i in range(3000):
            db.execute("INSERT INTO decisions (decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence,"
                       " created) VALUES (?, 9, 'x', 'commit', 'm', 'h', 1, 0)", (str(i) * 40,))
        os._exit(0)  # killed mid-transaction: half of it may be in the main file, the journal is hot
    """)
    subprocess.run([sys.executable, "-c", killer], check=True)
    assert (ckdir / (LOG + "-journal")).exists()
    assert fito.Checkpointer(ckdir).restore(state(0)) == 1


# ---------------------------------------------------------------- item 11: locked and read-only, said so
def test_a_lock_held_by_another_process_is_reported_as_a_lock(ckdir):
    committed_root(ckdir, steps=(1,))
    holder = sqlite3.connect(ckdir / LOG, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        ck = fito.Checkpointer(ckdir, store=SqliteDecisionStore(ckdir / LOG, timeout=0.2))
        with pytest.raises(DecisionLogLockedError, match=r"locked by another process \(pid \d+ .*0.2s") as info:
            ck.committed()
        assert "damaged" not in str(info.value)
        with pytest.raises(fito.SaveAbortedError, match="locked by another process"):
            ck.save(2, state(2))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    ck.save(2, state(2))  # once the lock is gone the same Checkpointer saves
    assert ck.committed() == [1, 2]


def test_a_read_only_log_is_reported_as_read_only(ckdir):
    committed_root(ckdir, steps=(1,))
    before = (ckdir / LOG).read_bytes()
    store = SqliteDecisionStore(ckdir / LOG, readonly=True)
    assert [d.epoch for d in store.committed()] == [1]
    with pytest.raises(DecisionLogReadOnlyError, match="read-only") as info:
        store.acquire_fence()  # refused by SQLite itself: the connection is mode=ro
    assert "damaged" not in str(info.value)
    store.close()
    assert (ckdir / LOG).read_bytes() == before


def test_with_two_real_ranks_a_locked_log_fails_every_rank_and_none_hangs(ckdir):
    from fito.testing.dist import run_ranks

    committed_root(ckdir, steps=(1,))
    helpers = Path(__file__).parent / "helpers"
    holder = sqlite3.connect(ckdir / LOG, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        results = run_ranks("locked_log", [str(ckdir)], 2, timeout=120,
                            env={"PYTHONPATH": os.pathsep.join([str(helpers), os.environ.get("PYTHONPATH", "")])})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        save, restore = (json.loads(line) for line in r.stdout.splitlines())
        assert save["error"] == "SaveAbortedError" and "locked by another process" in save["message"]
        assert restore["error"] is not None and "locked by another process" in restore["message"]
