"""Issue 20, "never lose": a locked, damaged or missing decision log never reads as "no checkpoint" (one
decision choice, fito.commit.decision, one class on every rank); a save below the newest committed step
never makes retention delete the higher steps unless the caller asked for a rollback; readers write nothing
(a hot journal is refused, not rolled back, by a read-only reader); `fito inspect` on a root with a link."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import fito
import fito.dcp
from fito.cli import main
from fito.coord.sqlite import SqliteDecisionStore
from fito.errors import DecisionLogDamagedError, DecisionLogLockedError, DecisionLogMissingError, DecisionLogReadOnlyError

LOG = SqliteDecisionStore.FILENAME
HELPERS = Path(__file__).parent / "helpers"
HOLD = ("import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN EXCLUSIVE')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
        "db.execute('ROLLBACK')\n")


def committed_root(root: Path, steps=(200, 300), *, dcp_root: bool = False) -> Path:
    if dcp_root:  # fito.dcp's own items (the Checkpointer wraps its entries in its own documents)
        for s in steps:
            dcp.save({"w": torch.full((4,), float(s))}, storage_writer=fito.dcp.Writer(root, s),
                     planner=fito.dcp.SavePlanner())
        return root
    with fito.Checkpointer(root) as ck:
        for s in steps:
            ck.save(s, {"w": torch.full((4,), float(s))})
    return root


def restorable(root: Path, step: int, *, dcp_root: bool = False) -> bool:
    """Whether `step` restores whole, through the API that wrote it (fito.dcp writes plain DCP items)."""
    target = {"w": torch.zeros(4)}
    if dcp_root:
        reader = fito.dcp.Reader(root, step=step)
        dcp.load(target, storage_reader=reader, planner=fito.dcp.LoadPlanner())
        return reader.loaded_step == step and bool((target["w"] == step).all())
    with fito.Checkpointer(root) as ck:
        return ck.restore(target, step=step) == step and bool((target["w"] == step).all())


def newest(root: Path) -> int:
    reader = fito.dcp.Reader(root)
    dcp.load({"w": torch.zeros(4)}, storage_reader=reader, planner=fito.dcp.LoadPlanner())
    assert reader.loaded_step is not None
    return reader.loaded_step


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def fito_cli(capsys: pytest.CaptureFixture, *args: str) -> Ran:
    """`fito ARGS` in this process (cli.main: the exit code, stdout and stderr a shell would see)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return Ran(code, out, err)


def dcp_load(root: Path, **kw) -> BaseException:
    """The error fito.dcp.Reader gives in one process (DCP wraps it in a CheckpointException)."""
    with pytest.raises((CheckpointException, fito.FitoError)) as info:
        dcp.load({"w": torch.zeros(4)}, storage_reader=fito.dcp.Reader(root, **kw), planner=fito.dcp.LoadPlanner())
    failures = getattr(info.value, "failures", None)
    return next(iter(failures.values()))[0] if failures else info.value


# ---------------------------------------------------------------- item 1: the restart-at-0 chain, end to end
@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.parametrize("via", ["checkpointer", "dcp"])
def test_a_locked_log_stops_a_restarting_job_and_never_restarts_it_at_step_0(tmp_path, via):
    from fito.testing.dist import run_ranks

    root, marks = committed_root(tmp_path / "ck", dcp_root=via == "dcp"), tmp_path / "marks"
    marks.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root / LOG)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"  # another process holds the lock, past the 0.5 s timeout

    def release_after_restores() -> None:  # the lock goes away once both ranks chose; a job that chose 0 then saves
        deadline = time.monotonic() + 120
        while not all((marks / f"restored-{r}").exists() for r in (0, 1)) and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.stdin.close()
        holder.wait(timeout=30)
        (marks / "released").touch()

    releaser = threading.Thread(target=release_after_restores)
    releaser.start()
    try:
        results = run_ranks("restart_job", [str(root), via, str(marks)], 2, timeout=180, path=[str(HELPERS)])
    finally:
        releaser.join()
        if holder.poll() is None:
            holder.kill()
    outcomes = []
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        outcomes.append(json.loads(r.stdout.splitlines()[-1]))
    for o in outcomes:  # a lock, said as a lock, of one class on both ranks: the job stops
        assert o.get("error") == "DecisionLogLockedError", outcomes
        assert "locked by another process" in o["message"] and LOG in o["message"], o["message"]
    with fito.Checkpointer(root) as ck:
        assert ck.committed() == [200, 300]
    assert restorable(root, 200, dcp_root=via == "dcp") and restorable(root, 300, dcp_root=via == "dcp")


def test_the_checkpointer_and_fito_dcp_raise_the_lock_as_a_lock(tmp_path):
    root = committed_root(tmp_path)
    holder = sqlite3.connect(root / LOG, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        ck = fito.Checkpointer(root, store=SqliteDecisionStore(root / LOG, timeout=0.2))
        with pytest.raises(DecisionLogLockedError, match="locked by another process"):
            ck.restore({"w": torch.zeros(4)})
        ck.close()
        err = dcp_load(root, store=SqliteDecisionStore(root / LOG, timeout=0.2))
        assert type(err) is DecisionLogLockedError and "locked by another process" in str(err)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# ---------------------------------------------------------------- item 1: retention below the newest step
SAVE_BELOW = """
import sys, torch, torch.distributed.checkpoint as dcp, fito, fito.dcp
a, b = sys.argv[1], sys.argv[2]
with fito.Checkpointer(a, keep=2) as ck:   # a job restarted without restoring saves step 10, then 20
    ck.save(10, {"w": torch.full((4,), 10.0)})
    ck.save(20, {"w": torch.full((4,), 20.0)})
for step in (10, 20):                        # the same through fito.dcp
    dcp.save({"w": torch.full((4,), float(step))}, storage_writer=fito.dcp.Writer(b, step, keep=2),
             planner=fito.dcp.SavePlanner())
"""


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_save_below_the_newest_committed_step_keeps_the_higher_steps(tmp_path):
    a, b = committed_root(tmp_path / "a"), committed_root(tmp_path / "b", dcp_root=True)
    proc = subprocess.run([sys.executable, "-c", SAVE_BELOW, str(a), str(b)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for root in (a, b):
        with fito.Checkpointer(root) as ck:
            assert ck.committed() == [200, 300, 10, 20]  # keep=2 counts 10 and 20; 200 and 300 are the run's future
        assert all(restorable(root, s, dcp_root=root == b) for s in (200, 300, 20))
    with fito.Checkpointer(a) as ck:  # newest by commit order: what the job saved last
        assert ck.restore({"w": torch.zeros(4)}) == 20
    assert newest(b) == 20
    assert "step 10 was saved below committed step 300 (did the job restart without restoring?)" in proc.stderr
    assert proc.stderr.count("saved below committed step 300") == 4


def test_rollback_true_lets_keep_delete_the_higher_steps(tmp_path):
    root = committed_root(tmp_path / "a", steps=(100, 200, 300))
    with fito.Checkpointer(root, keep=2) as ck:
        ck.save(110, {"w": torch.full((4,), 110.0)}, rollback=True)
        assert ck.committed() == [100, 110]  # the abandoned future (200, 300) went first
    assert sorted(os.listdir(root / "epochs")) == ["000000000100", "000000000110"]
    b = committed_root(tmp_path / "b", steps=(100, 200, 300), dcp_root=True)
    dcp.save({"w": torch.full((4,), 110.0)}, storage_writer=fito.dcp.Writer(b, 110, keep=2, rollback=True),
             planner=fito.dcp.SavePlanner())
    with fito.Checkpointer(b) as ck:
        assert ck.committed() == [100, 110]
    c = committed_root(tmp_path / "c", steps=(100, 200, 300))
    with fito.Checkpointer(c) as ck:  # keep=None keeps everything, rollback or not
        ck.save(110, {"w": torch.full((4,), 110.0)}, rollback=True)
        assert ck.committed() == [100, 200, 300, 110]


# ---------------------------------------------------------------- item 1: one choice, one class, one exit code
def test_a_damaged_log_is_damaged_through_every_reader(tmp_path, capsys):
    root = committed_root(tmp_path)
    (root / LOG).write_bytes(b"not a sqlite file" * 100)
    with pytest.raises(DecisionLogDamagedError):
        fito.Checkpointer(root).restore({"w": torch.zeros(4)})
    assert type(dcp_load(root)) is DecisionLogDamagedError  # main: NoCommittedEpochError ("start fresh")
    from fito.ckpt.inspect import describe, verify
    from fito.ckpt.recover import plan_recovery
    for read in (describe, verify, plan_recovery):  # one decision choice (fito.commit.decision) under each
        with pytest.raises(DecisionLogDamagedError):
            read(root)
    for cmd in ("verify", "inspect", "recover-log"):
        proc = fito_cli(capsys, cmd, str(root))
        assert proc.returncode == 4 and "not a database" in proc.stderr, (cmd, proc.stderr)


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_damaged_log_is_damaged_on_every_rank_and_never_restarts_the_job_at_0(tmp_path):
    """The README's restart pattern on 2 ranks of fito.dcp (the reader that said NoCommittedEpochError before
    issue 16) over a damaged log: both ranks get DecisionLogDamagedError (rank 1 never reads the log: rank 0's
    choice is broadcast with its class), so the job stops instead of saving step 10 from scratch. (The
    Checkpointer's ranks agree through the same fito.commit.decision.agree.)"""
    via = "dcp"
    from fito.testing.dist import run_ranks

    root, marks = committed_root(tmp_path / "ck", dcp_root=via == "dcp"), tmp_path / "marks"
    marks.mkdir()
    (marks / "released").touch()  # nothing to wait for: a rank that chose a step saves at once
    (root / LOG).write_bytes(b"not a sqlite file" * 100)
    results = run_ranks("restart_job", [str(root), via, str(marks)], 2, timeout=180, path=[str(HELPERS)])
    outcomes = []
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        outcomes.append(json.loads(r.stdout.splitlines()[-1]))
    assert [o.get("error") for o in outcomes] == ["DecisionLogDamagedError"] * 2, outcomes
    assert not (root / "epochs" / "000000000010").exists()  # nothing was saved from step 0


def test_a_missing_log_beside_attempts_is_missing_and_an_empty_root_is_nothing(tmp_path, capsys):
    root = committed_root(tmp_path / "a")
    (root / LOG).unlink()
    assert type(dcp_load(root)) is DecisionLogMissingError
    with pytest.raises(DecisionLogMissingError):
        fito.Checkpointer(root)
    assert fito_cli(capsys, "verify", str(root)).returncode == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    assert type(dcp_load(empty)) is fito.NoCommittedEpochError
    with pytest.raises(fito.NoCommittedEpochError):
        fito.Checkpointer(empty).restore({"w": torch.zeros(4)})
    assert fito_cli(capsys, "verify", str(empty)).returncode == 3


# ---------------------------------------------------------------- item 5: readers write nothing
def test_a_read_only_reader_refuses_a_hot_journal_and_writes_nothing(tmp_path, capsys):
    root = committed_root(tmp_path, steps=(1,))
    killer = (f"import os, sqlite3\ndb = sqlite3.connect({str(root / LOG)!r}, isolation_level=None)\n"
              "db.execute('PRAGMA cache_size=1')\ndb.execute('BEGIN IMMEDIATE')\n"
              "for i in range(3000):\n"
              "    db.execute(\"INSERT INTO decisions (decision_id, epoch, attempt, outcome, manifest, manifest_hash, fence,"
              " created) VALUES (?, 9, 'x', 'commit', 'm', 'h', 1, 0)\", (str(i) * 40,))\n"
              "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", killer], check=True)  # a writer killed mid-transaction: a hot journal
    journal = root / (LOG + "-journal")
    before = {p.name: p.read_bytes() for p in (root / LOG, journal)}
    err = dcp_load(root)
    assert type(err) is DecisionLogReadOnlyError and "interrupted" in str(err) and "fito gc" in str(err)
    proc = fito_cli(capsys, "verify", str(root))
    assert proc.returncode == 4 and "interrupted" in proc.stderr
    assert {p.name: p.read_bytes() for p in (root / LOG, journal)} == before  # main: the journal was rolled back
    with fito.Checkpointer(root) as ck:  # the job's own Checkpointer rolls it back (as its next save would)
        assert ck.restore({"w": torch.zeros(4)}) == 1
    assert not journal.exists()


def test_inspect_lists_a_root_with_an_epochs_link_and_says_the_link_is_not_followed(tmp_path, capsys):
    root = committed_root(tmp_path)
    (root / "epochs" / "latest").symlink_to("000000000300")
    proc = fito_cli(capsys, "inspect", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert sorted({a["epoch"] for a in doc["result"]}) == [200, 300]
    assert "epochs/latest" in proc.stderr and "not followed" in proc.stderr


# ---------------------------------------------------------------- item 2: a stalled discard beside a newer coordinator
@pytest.mark.slow
@pytest.mark.multiproc
def test_a_stalled_discard_never_deletes_a_newer_coordinators_step(tmp_path):
    """A coordinator whose save failed (disk full at the manifest) discards its attempt and stalls 5 s right
    before deleting the epoch directory; meanwhile a newer coordinator (another process) commits the same
    step there. The newer step must survive and restore (main deleted it recursively)."""
    root = tmp_path / "ck"
    root.mkdir()
    helper = [sys.executable, str(HELPERS / "two_coordinators.py")]
    newer = subprocess.Popen([*helper, "newer", str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stale = None
    try:
        assert newer.stdout.readline().strip() == "ready"
        stale = subprocess.Popen([*helper, "stale", str(root), "5"], stdout=subprocess.PIPE, text=True)
        epoch_dir = root / "epochs" / "000000000005"
        deadline = time.monotonic() + 120
        # the stale one stalls once its own attempt is gone and the epoch directory is empty
        while not (epoch_dir.is_dir() and not any(epoch_dir.iterdir())):
            assert stale.poll() is None and time.monotonic() < deadline, "the stale coordinator never reached its stall"
            time.sleep(0.01)
        newer.stdin.write("go\n")
        newer.stdin.flush()
        assert newer.stdout.readline().strip() == "saved"
        assert newer.wait(timeout=60) == 0
        out, _ = stale.communicate(timeout=120)
    finally:
        for p in (newer, stale):
            if p is not None and p.poll() is None:
                p.kill()
    said = json.loads(out.splitlines()[-1])
    assert said["error"] == "SaveAbortedError"
    assert ["post-commit GC", "pause", "epochs/000000000005"] in said["fired"]  # it did stall before that delete
    target = {"w": torch.zeros(4)}
    with fito.Checkpointer(root) as ck:
        assert ck.committed() == [5]
        assert ck.restore(target) == 5 and bool((target["w"] == 7.0).all())
