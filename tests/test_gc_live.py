"""`fito gc --keep 1 --grace 0`, run again and again while a live job saves (issue 9 item 4): two real
processes. The job's saves all succeed (the collector takes no fence), every step the job saw committed
that is not retired restores whole, and the newest committed step is intact after every commit."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import fito
from fito.coord.sqlite import SqliteDecisionStore
from fito.protocol.layout import attempt_name

RACE = Path(__file__).parent / "helpers" / "gc_race.py"
STEPS = 40


def test_fito_gc_beside_a_live_job_never_deletes_its_commits_nor_fails_its_saves(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    old = fito.Checkpointer(root)  # an earlier job: one commit and one attempt it never decided
    old.save(0, {"w": torch.zeros(4096), "meta": {"step": 0}})
    # named as this log's (fito.protocol.layout): GC never deletes an undecided attempt of another log
    leftover = root / "epochs" / "000000000001" / attempt_name(1, old.store.log_id(), 1, "00000000")
    leftover.mkdir(parents=True)
    (leftover / "rank-00000.fito").write_bytes(b"partial")
    old.close()

    stop, train_out, gc_out = tmp_path / "stop", tmp_path / "train.json", tmp_path / "gc.json"
    collector = subprocess.Popen([sys.executable, str(RACE), "gc", str(root), str(stop), str(gc_out)])
    try:
        trainer = subprocess.run([sys.executable, str(RACE), "train", str(root), str(STEPS), str(train_out)],
                                 capture_output=True, text=True, timeout=600)
    finally:
        stop.touch()
        collector.wait(timeout=600)
    assert trainer.returncode == 0, trainer.stderr[-3000:]
    assert "cleaning up older attempts failed" not in trainer.stderr  # the job's own retention did not trip either
    trained, collected = json.loads(train_out.read_text()), json.loads(gc_out.read_text())
    assert trained["errors"] == [] and trained["seen"] == list(range(1, STEPS + 1))
    assert collected["errors"] == [] and set(collected["codes"]) == {0} and len(collected["codes"]) >= 3

    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME)
    try:
        decisions = store.decisions()
        committed = [d.epoch for d in store.committed()]
    finally:
        store.close()
    assert committed[-1] == STEPS  # the newest is never retired
    assert sum(d.retired for d in decisions) >= 2  # the collector really retired steps during the run
    assert not leftover.exists()  # the earlier job's undecided attempt was garbage to the collector
    ck = fito.Checkpointer(root)
    for step in committed:
        into = {"w": torch.zeros(4096), "meta": None}
        assert ck.restore(into, step=step) == step
        assert torch.all(into["w"] == step) and into["meta"] == {"step": step}
    for d in decisions:  # nothing committed and not retired lost its files
        if d.outcome == "commit" and not d.retired:
            assert (root / d.manifest).is_file(), d
