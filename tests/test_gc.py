"""Retention on a real root: links under epochs/ are never followed (issue 9 item 2), a step saved twice
leaves no committed decision without files (item 3), a failing clean-up after a commit only warns and
`fito gc` never prints a traceback (item 13), and one undeletable attempt does not block the others."""
from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest
import torch

import fito
from fito.cli import main
from fito.coord.sqlite import SqliteDecisionStore
from fito.errors import UnsafeCheckpointError
from fito.storage.localfs import LocalFS


def state(step: int) -> dict:
    return {"w": torch.full((64,), float(step)), "meta": {"step": step}}


def assert_restores_whole(root: Path, step: int) -> None:
    into = {"w": torch.zeros(64), "meta": None}
    assert fito.Checkpointer(root).restore(into, step=step) == step
    assert torch.equal(into["w"], torch.full((64,), float(step))) and into["meta"] == {"step": step}


def assert_no_committed_decision_without_files(root: Path) -> None:
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME)
    try:
        live = [d for d in store.decisions() if d.outcome == "commit" and not d.retired]
    finally:
        store.close()
    for d in live:
        assert (root / d.manifest).is_file(), f"step {d.epoch} ({d.attempt}) is committed but {d.manifest} is gone"


def test_gc_never_follows_or_deletes_links_under_epochs(ckdir: Path) -> None:
    ck = fito.Checkpointer(ckdir, keep=None)
    for s in (1, 2, 3):
        ck.save(s, state(s))
    epochs = ckdir / "epochs"
    (epochs / "latest").symlink_to("000000000003")  # an operator's convenience link
    step2 = epochs / "000000000002"
    (step2 / "current").symlink_to(next(step2.iterdir()).name)  # and one inside an epoch directory
    links = {p: os.readlink(p) for p in (epochs / "latest", step2 / "current")}
    for s in (4, 5):
        ck.save(s, state(s))
    for s in (1, 2, 3, 4, 5):  # keep=None: every committed step restores whole
        assert_restores_whole(ckdir, s)
    assert fito.Checkpointer(ckdir).committed() == [1, 2, 3, 4, 5]
    assert main(["gc", str(ckdir), "--keep", "4", "--grace", "0"]) == 0
    ck = fito.Checkpointer(ckdir, keep=2)  # a new coordinator: older coordinators' leftovers are its garbage
    for s in (6, 7):
        ck.save(s, state(s))
    assert ck.committed() == [6, 7]
    for s in (6, 7):
        assert_restores_whole(ckdir, s)
    assert {p: os.readlink(p) for p in links} == links  # the links themselves are untouched
    assert step2.is_dir()  # not empty: it still holds the operator's link
    assert_no_committed_decision_without_files(ckdir)


def test_storage_refuses_to_delete_or_list_through_a_link(tmp_path: Path) -> None:
    fs = LocalFS(tmp_path)
    fs.makedirs("epochs/000000000003/f1-1-00000000")
    fs.write_bytes("epochs/000000000003/f1-1-00000000/manifest.json", b"{}")
    (tmp_path / "epochs" / "latest").symlink_to("000000000003")
    for rel in ("epochs/latest", "epochs/latest/f1-1-00000000"):
        with pytest.raises(UnsafeCheckpointError, match="through links"):
            fs.remove_tree(rel)
        with pytest.raises(UnsafeCheckpointError, match="through links"):
            fs.remove_dir(rel)
    with pytest.raises(UnsafeCheckpointError, match="through links"):
        fs.entries("epochs/latest")
    assert (tmp_path / "epochs/000000000003/f1-1-00000000/manifest.json").read_bytes() == b"{}"
    assert {(e.name, e.kind) for e in fs.entries("epochs")} == {("000000000003", "dir"), ("latest", "link")}
    assert not fs.remove_dir("epochs/000000000003")  # not empty: kept
    fs.remove_tree("epochs/000000000003/f1-1-00000000")
    fs.remove_tree("epochs/000000000003/f1-1-00000000")  # already gone: fine
    assert fs.remove_dir("epochs/000000000003") and not (tmp_path / "epochs/000000000003").exists()


def test_saving_a_step_twice_retires_the_first_commit_before_deleting_it(ckdir: Path) -> None:
    ck = fito.Checkpointer(ckdir, keep=None)
    ck.save(4, state(4))
    ck.save(5, state(5))
    ck.save(5, {"w": torch.full((64,), 50.0), "meta": {"step": 5}})  # the same step again (a re-run)
    assert ck.committed() == [4, 5]
    fives = [d for d in ck.store.decisions() if d.epoch == 5 and d.outcome == "commit"]
    assert [d.retired for d in fives] == [True, False]  # the older decision is retired, in the log
    assert not (ckdir / fives[0].manifest).parent.exists()  # and only then were its files deleted
    assert_no_committed_decision_without_files(ckdir)
    into = {"w": torch.zeros(64), "meta": None}
    assert ck.restore(into, step=5) == 5 and torch.equal(into["w"], torch.full((64,), 50.0))
    for s in ck.committed():
        assert main(["verify", str(ckdir), "--epoch", str(s)]) == 0
    # a job restarted from step 4 re-runs step 5: one copy of each step, the newest commit wins
    ck = fito.Checkpointer(ckdir, keep=None)
    ck.save(5, state(5))
    assert ck.committed() == [4, 5]
    assert_no_committed_decision_without_files(ckdir)
    assert_restores_whole(ckdir, 5)


class RetireFails(SqliteDecisionStore):
    """A decision log whose retire always fails (e.g. the log became read-only after the commit)."""

    def retire(self, epoch: int, attempt: str, fence: int | None) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")


def test_a_failing_clean_up_after_the_commit_warns_and_the_save_succeeds(ckdir: Path, caplog) -> None:
    ckdir.mkdir()
    ck = fito.Checkpointer(ckdir, keep=1, store=RetireFails(ckdir / SqliteDecisionStore.FILENAME))
    assert ck.save(1, state(1)) == 1
    with caplog.at_level(logging.WARNING, logger="fito"):
        assert ck.save(2, state(2)) == 2  # committed: the failed retention does not make it a failure
        handle = ck.save(3, state(3), blocking=False)
        assert handle.wait() == 3
    warnings = [r for r in caplog.records if r.name == "fito" and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "step 2 committed, but cleaning up" in warnings[0].getMessage()
    assert "readonly" in warnings[0].getMessage() and "fito gc" in warnings[0].getMessage()
    ck.close()
    for s in (1, 2, 3):  # nothing was retired, so nothing was deleted
        assert_restores_whole(ckdir, s)


def test_fito_gc_reports_a_failure_in_one_line_without_a_traceback(ckdir: Path, capsys) -> None:
    ck = fito.Checkpointer(ckdir)
    for s in (1, 2):
        ck.save(s, state(s))
    ck.close()
    db = sqlite3.connect(ckdir / SqliteDecisionStore.FILENAME)
    db.execute("INSERT INTO decisions (decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence, created)"
               " VALUES ('x', 'not a number', 'f1-1-00000000', 'commit', '', '', 1, 0)")
    db.commit()
    db.close()
    capsys.readouterr()
    assert main(["gc", str(ckdir), "--keep", "1", "--grace", "0"]) == 4  # README's exit codes: 4 failed
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("fito gc: error: ") and "Traceback" not in captured.err
    assert main(["gc", str(ckdir / "missing"), "--keep", "1"]) == 3  # 3: no checkpoint there
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


class RefusesOneDelete(LocalFS):
    """A storage on which one attempt directory cannot be deleted (say, a file in it is immutable)."""

    def __init__(self, root: Path, doomed: str) -> None:
        super().__init__(root)
        self.doomed = doomed

    def remove_tree(self, rel: str) -> None:
        if rel == self.doomed:
            raise PermissionError(13, "Operation not permitted", rel)
        super().remove_tree(rel)


def test_one_undeletable_attempt_does_not_stop_the_others_and_is_deleted_later(ckdir: Path) -> None:
    from fito.commit.retention import collect_garbage
    from fito.errors import GarbageCollectionError

    ck = fito.Checkpointer(ckdir)
    for s in (1, 2, 3, 4):
        ck.save(s, state(s))
    first = next(d for d in ck.store.decisions() if d.epoch == 1)
    stuck = first.manifest.rsplit("/", 1)[0]
    with pytest.raises(GarbageCollectionError, match="000000000001"):
        collect_garbage(RefusesOneDelete(ckdir, stuck), ck.store, None, keep=1)
    assert ck.committed() == [4]  # all three retired first, so the stuck files are no one's step any more
    assert (ckdir / stuck).is_dir() and not (ckdir / "epochs" / "000000000002").exists()
    assert collect_garbage(LocalFS(ckdir), ck.store, None, keep=1) == [stuck]  # retried: now it goes
    assert sorted(p.name for p in (ckdir / "epochs").iterdir()) == ["000000000004"]
    assert_restores_whole(ckdir, 4)
