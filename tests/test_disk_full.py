"""A full disk and a read-only root on the save path (issue 9, items 11 and 12), simulated at the storage and
decision-store seams with fito.testing.faults (never by filling the real disk):
- a failed save says what happened (no space left on device / read-only file system, at which phase and
  object), never "not written by fito, or damaged";
- a failed save removes its own attempt, so retries on a full disk leak nothing (the space comes back);
- a restarted process constructs a Checkpointer and restores on a full disk (neither needs to write);
- once space is back, the next save succeeds without any intervention."""
from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

import fito
from fito.commit.failure import cause
from fito.storage import LocalFS, Storage
from fito.testing.faults import Fault, FaultPlan, FaultyStorage, open_faulty
from training_state import assert_same, make_state, snapshot, train_steps
from fito.protocol.layout import attempt_dir


def _files(root: Path) -> dict[str, int]:
    """Every file and directory under epochs/ with its size: what a save left on disk."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root / "epochs"):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p.stat().st_size if p.is_file() else -1
    return out


def _saved_root(root: Path) -> tuple[fito.Checkpointer, FaultPlan, dict, dict]:
    plan = FaultPlan(0)
    storage, store = open_faulty(root, plan)
    ck = fito.Checkpointer(storage, store=store, keep=2)
    state = make_state(0)
    train_steps(state, 2)
    ck.save(1, state)
    train_steps(state, 2)
    ck.save(2, state)
    return ck, plan, state, snapshot(state)


def _restores(ck: fito.Checkpointer, expected_step: int, expected: dict) -> None:
    target = make_state(5)
    assert ck.restore(target) == expected_step
    assert_same(expected, snapshot(target))


def test_retries_on_a_full_disk_leak_nothing_and_the_job_recovers_once_space_is_back(tmp_path):
    ck, plan, state, at2 = _saved_root(tmp_path)
    before = _files(tmp_path)
    plan.space = 3000  # less than one shard: the disk fills in the middle of the unit write
    train_steps(state, 1)
    for attempt in range(5):
        with pytest.raises(fito.SaveAbortedError) as info:
            ck.save(3, state)
        msg = str(info.value)
        assert "No space left on device" in msg and "unit write of epochs/000000000003/" in msg and "rank 0" in msg, msg
        assert "not written by fito" not in msg
        assert plan.space == 3000, f"retry {attempt}: the failed attempt kept {3000 - plan.space} bytes"
        assert _files(tmp_path) == before, f"retry {attempt} left {set(_files(tmp_path)) - set(before)}"
    assert ck.committed() == [1, 2]
    _restores(ck, 2, at2)

    plan.space = None  # an operator freed space: the job's next save just works
    ck.save(3, state)
    assert ck.committed() == [2, 3]
    _restores(ck, 3, snapshot(state))
    ck.close()


def test_a_full_disk_at_the_decision_log_is_reported_and_the_next_commit_collects_the_attempt(tmp_path):
    ck, plan, state, at2 = _saved_root(tmp_path)
    plan.arm(Fault("publish", "ENOSPC"))
    with pytest.raises(fito.SaveAbortedError, match=r"rank 0 \(coordinator\) failed: publish of step 3's decision: No space left"):
        ck.save(3, state)
    _restores(ck, 2, at2)
    ck.save(4, state)
    assert ck.committed() == [2, 4]
    live = {attempt_dir(d.epoch, d.attempt) for d in ck.store.committed()}
    left = {p for p in _files(tmp_path) if p.count("/") >= 2 and "/".join(p.split("/")[:3]) not in live}
    assert not left, f"the attempt of the failed publish outlived the next commit: {left}"
    ck.close()


def test_a_restarted_process_constructs_and_restores_on_a_full_disk_then_recovers(tmp_path):
    ck, _, state, at2 = _saved_root(tmp_path)
    ck.close()
    before = _files(tmp_path)

    plan = FaultPlan(0, space=0)  # the disk is full when the job restarts
    storage, store = open_faulty(tmp_path, plan)
    ck = fito.Checkpointer(storage, store=store, keep=2)  # must not need to write anything
    _restores(ck, 2, at2)
    with pytest.raises(fito.SaveAbortedError, match="No space left on device"):
        ck.save(3, state)  # still full: a clear error, and nothing left behind
    assert _files(tmp_path) == before
    plan.space = None
    ck.save(3, state)
    assert ck.committed() == [2, 3]
    _restores(ck, 3, snapshot(state))
    ck.close()


def test_a_read_only_root_is_reported_as_read_only(tmp_path):
    ck, plan, state, at2 = _saved_root(tmp_path)
    plan.read_only = True
    with pytest.raises(fito.SaveAbortedError) as info:
        ck.save(3, state)
    msg = str(info.value)
    assert "Read-only file system" in msg and "unit write" in msg and "not written by fito" not in msg, msg
    _restores(ck, 2, at2)  # reading needs no write access
    plan.read_only = False
    assert ck.save(3, state) == 3
    ck.close()


@pytest.mark.parametrize("exc,words", [
    (OSError(errno.ENOSPC, "No space left on device", "/x/rank-00000.fito"), "No space left on device (/x/rank-00000.fito) [ENOSPC]"),
    (OSError(errno.EROFS, "Read-only file system"), "Read-only file system [EROFS]: the checkpoint root is mounted read-only"),
    (OSError(errno.EIO, "Input/output error"), "Input/output error [EIO]"),
    (sqlite3.OperationalError("database or disk is full"), "No space left on device at the decision log"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "Read-only file system at the decision log"),
    (sqlite3.OperationalError("database is locked"), "locked by another process"),
    (RuntimeError("boom"), "RuntimeError: boom"),
])
def test_causes_are_named_in_plain_words(exc, words):
    assert words in cause(exc)


def test_the_checkpointer_takes_any_storage_and_localfs_is_one(tmp_path):
    assert isinstance(LocalFS(tmp_path / "a"), Storage)
    storage = FaultyStorage(LocalFS(tmp_path / "b"), FaultPlan(0))
    assert isinstance(storage, Storage)
    ck = fito.Checkpointer(storage)
    assert ck.storage is storage and ck.root == storage.url == str(storage.root)  # identity: the url
    ck.close()


class SeamOnly:
    """A Storage that answers only the methods of the Storage protocol (as an object store would): no
    fsync_file/fsync_dir, nothing POSIX, so a save that reaches past the seam fails with AttributeError."""

    SEAM = frozenset(n for n in vars(Storage) if not n.startswith("_")) | set(Storage.__annotations__) | {"root"}

    def __init__(self, inner: LocalFS) -> None:
        self._inner = inner
        self.root = inner.root

    def __getattr__(self, name: str):
        if name not in SeamOnly.SEAM:
            raise AttributeError(f"{name} is not part of the Storage seam")
        return getattr(self._inner, name)


def test_a_save_and_restore_use_only_the_storage_seam_and_persist_is_its_durability_verb(tmp_path):
    assert "persist" in SeamOnly.SEAM and not {"fsync_file", "fsync_dir"} & SeamOnly.SEAM
    storage = SeamOnly(LocalFS(tmp_path))
    assert isinstance(storage, Storage)
    state = make_state(0)
    train_steps(state, 2)
    expected = snapshot(state)
    ck = fito.Checkpointer(storage)
    assert ck.save(1, state) == 1
    target = make_state(5)
    assert ck.restore(target) == 1
    assert_same(expected, snapshot(target))
    ck.close()
