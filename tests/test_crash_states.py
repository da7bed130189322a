"""Crash-state exploration of the real storage path: record a real `Checkpointer.save` over a committed
step, generate every post-crash disk POSIX allows at every point of it, run the real `restore` on each."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import fito
import fito.dcp
from fito.cli import main
from fito.coord.sqlite import SqliteDecisionStore
from fito.testing.crashstates import check_fito_crash_states, materialise, record_fito_save
from fito.model.posix_crash import DIR, LogicalFS, Op, each_crash_state
from fito.storage.localfs import LocalFS
from fito.testing.recording import Recording, RecordingStorage, RecordingStore
from fito.protocol.layout import MANIFEST, parse_object


def test_every_crash_state_of_a_real_save_restores_one_whole_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--crash-states", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["result"]  # the CLI's JSON envelope
    assert report["violations"] == 0 and report["crash_points_with_violation"] == 0
    assert report["crash_points"] == report["ops"] + 1 and report["crash_states"] >= 40
    # both sides of the commit point were reached: before it step 1 comes back, after it step 2
    outcomes = report["outcomes"]
    assert outcomes.get("restored step 1", 0) > 0 and outcomes.get("restored step 2", 0) > 0
    assert set(outcomes) == {"restored step 1", "restored step 2"}  # never a loud failure either


def test_the_recording_sees_the_protocol_order(tmp_path: Path) -> None:
    _, log, initial_store = record_fito_save(tmp_path)
    kinds = [op.kind for op in log]
    first_store = kinds.index("store")
    shard = next(op.path for op in log if op.kind == "create" and parse_object(op.path.rsplit("/", 1)[-1]) is not None)
    manifest = next(op.path for op in log if op.kind == "create" and op.path.rsplit("/", 1)[-1] == MANIFEST)
    # fsync of shard and manifest (and their directory) come before the decision; deletion after it
    assert kinds.index("fsync_file") < first_store and Op("fsync_file", manifest) in log[:first_store]
    assert Op("fsync_file", shard) in log[:first_store]
    assert kinds.index("remove_tree") > first_store
    assert len(initial_store) == 1


class ForgetfulFS(RecordingStorage):
    """A storage layer whose persist never fsyncs the file: the commit then points at bytes a crash can lose."""

    def persist(self, rel: str) -> None:
        self.inner.fsync_dir(rel.rsplit("/", 1)[0])
        self.rec.add(0, Op("fsync_dir", rel.rsplit("/", 1)[0]))


class NoDirSyncFS(RecordingStorage):
    """fsyncs files but never the directory that names them."""

    def persist(self, rel: str) -> None:
        self.inner.fsync_file(rel)
        self.rec.add(0, Op("fsync_file", rel))


def test_crash_states_catch_a_missing_file_fsync(tmp_path: Path) -> None:
    report = check_fito_crash_states(tmp_path, fs_factory=ForgetfulFS, max_violations=1)
    assert report.violations and report.violating_points, report.outcomes
    assert any("step 2 is durably committed" in v for v in report.violations)


def test_crash_states_catch_a_missing_directory_fsync(tmp_path: Path) -> None:
    report = check_fito_crash_states(tmp_path, fs_factory=NoDirSyncFS, max_violations=1)
    assert any("entry change lost (absent)" in v for v in report.violations), report.violations[:3]


def test_logical_fs_posix_rules() -> None:
    fs = LogicalFS({"d": DIR, "d/old": b"OLD"})
    for op in [Op("create", "d/new"), Op("write", "d/new", (0, b"abcd")), Op("fsync_file", "d/new"),
               Op("rename", "d/new", "d/old")]:
        fs.apply(op)
    states = {s.files for s in fs.crash_states(4)}
    # the rename is not durable until d is fsynced: old content, or new content, or both names
    assert (("d", DIR), ("d/old", b"OLD")) in states
    assert (("d", DIR), ("d/old", b"abcd")) in states
    fs.apply(Op("fsync_dir", "d"))
    assert {s.files for s in fs.crash_states(5)} == {(("d", DIR), ("d/old", b"abcd"))}
    fs.apply(Op("write", "d/old", (4, b"efgh")))
    contents = {dict(s.files)["d/old"] for s in fs.crash_states(6)}
    assert contents == {b"abcd", b"abcdefgh", b"abcdef", b"abcd\0\0\0\0"}


def test_each_crash_state_is_deduplicated_and_ordered() -> None:
    log = [Op("mkdir", "d"), Op("fsync_dir", ""), Op("create", "d/f")]
    states = list(each_crash_state({}, log))
    assert [s.op_index for s in states] == sorted(s.op_index for s in states)
    assert len({s.files for s in states}) == len(states)


def test_materialised_decision_log_matches_what_was_durable(tmp_path: Path) -> None:
    rows = ((1, "x", "commit", "epochs/000000000001/x/manifest.json", "xxh3-128:00", True, "1:x:commit"),
            (2, "y", "commit", "epochs/000000000002/y/manifest.json", "xxh3-128:11", False, "2:y:commit"))
    state = next(each_crash_state({}, [], rows))
    materialise(state, tmp_path / "c")
    assert fito.Checkpointer(tmp_path / "c").committed() == [2]


def test_with_keep_2_the_older_kept_step_stays_restorable_by_number(tmp_path: Path) -> None:
    report = check_fito_crash_states(tmp_path, keep=2, steps=(1, 2, 3))
    assert report.violations == []
    assert set(report.outcomes) == {"restored step 2", "restored step 3"}


def test_recording_storage_logs_localfs_primitives(tmp_path: Path) -> None:
    """The recording wraps a real LocalFS (no private member patched) and logs its documented primitives."""
    rec = Recording()
    fs = RecordingStorage(LocalFS(tmp_path / "r"), rec)
    fs.makedirs("d/e")
    fs.write_bytes("d/e/f", b"x")
    fs.write_bytes("g", b"y")
    fs.persist("d/e/f")
    fs.persist("g")
    fs.remove("g")
    fs.remove("missing")  # nothing was there: nothing changed, nothing logged
    fs.makedirs("d")  # there already: only the replayable makedirs
    assert rec.ops == [Op("mkdir", "d"), Op("fsync_dir", ""), Op("mkdir", "d/e"), Op("fsync_dir", "d"),
                       Op("makedirs", "d/e"), Op("create", "d/e/f"), Op("write", "d/e/f", (0, b"x")),
                       Op("create", "g"), Op("write", "g", (0, b"y")), Op("fsync_file", "d/e/f"),
                       Op("fsync_dir", "d/e"), Op("fsync_file", "g"), Op("fsync_dir", ""),
                       Op("unlink", "g"), Op("fsync_dir", ""), Op("makedirs", "d")]
    assert (tmp_path / "r/d/e/f").read_bytes() == b"x" and not (tmp_path / "r/g").exists()
    assert all(s <= e for s, e in rec.spans) and Recording.from_json(rec.to_json()).ops == rec.ops


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_bare_dcp_writer_is_recorded_through_its_public_arguments(tmp_path: Path) -> None:
    """fito.dcp.Writer takes the same recording storage and store (storage=..., store=...): its object, the
    manifest and the commit are logged in protocol order, and every crash state of it restores whole."""
    rec = Recording()
    store = SqliteDecisionStore(tmp_path / "decisions.sqlite")
    try:
        writer = fito.dcp.Writer(RecordingStorage(LocalFS(tmp_path / "r"), rec), 1, store=RecordingStore(store, rec))
        dcp.save({"w": torch.arange(8.0)}, storage_writer=writer, planner=fito.dcp.SavePlanner())
    finally:
        store.close()
    kinds = [op.kind for op in rec.ops]
    commit = kinds.index("store")
    obj = next(op.path for op in rec.ops if op.kind == "create" and op.path.endswith(".fito"))
    manifest = next(op.path for op in rec.ops if op.kind == "create" and op.path.endswith("manifest.json"))
    assert rec.ops.index(Op("fsync_file", obj)) < rec.ops.index(Op("fsync_file", manifest)) < commit
    assert rec.ops[commit].arg[0][2] == "commit"
    restored = []
    for i, state in enumerate(each_crash_state({}, rec.ops)):
        materialise(state, tmp_path / f"c{i}")
        target = {"w": torch.zeros(8)}
        try:
            dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path / f"c{i}"), planner=fito.dcp.LoadPlanner())
            restored.append(torch.equal(target["w"], torch.arange(8.0)))
        except CheckpointException as exc:  # DCP wraps the reader's error: nothing committed, nothing touched
            assert "NoCommittedEpochError" in str(exc) and state.store == () and torch.equal(target["w"], torch.zeros(8))
    assert restored and all(restored)
