"""Damaged, foreign and hostile checkpoints are rejected before any caller object is touched."""
from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import torch

import fito
from training_state import assert_same, make_state, snapshot, train_steps
from fito.ckpt.inspect import open_store
from fito.protocol.layout import attempt_dir


def _saved(root: Path, steps=(2, 4)) -> dict:
    state = make_state(0)
    ck = fito.Checkpointer(root)
    done = 0
    for s in steps:
        train_steps(state, s - done)
        done = s
        ck.save(s, state)
    return state


def _attempt_dir(root: Path, step: int) -> Path:
    storage, store = open_store(root)
    d = [d for d in store.committed() if d.epoch == step][-1]
    store.close()
    return root / attempt_dir(step, d.attempt)


def _shard(root: Path, step: int) -> Path:
    return _attempt_dir(root, step) / "rank-00000.fito"


def _expect_rejected(root: Path, error: type, match: str) -> None:
    target = make_state(9)
    before = snapshot(target)
    with pytest.raises(error, match=match):
        fito.Checkpointer(root).restore(target)
    assert_same(before, snapshot(target))  # nothing was copied in


def _unit_offset(root: Path, step: int, name_part: str) -> tuple[str, int, int]:
    """(item name, offset, length) of the first item of rank 0's object whose name contains `name_part`."""
    manifest = json.loads((_attempt_dir(root, step) / "manifest.json").read_bytes())
    pieces = [(t["fqn"], c) for t in manifest["tensors"] for c in t["chunks"]] + [(v["fqn"], v) for v in manifest["values"]]
    for name, piece in pieces:
        if name_part in name and piece["rank"] == 0:
            return name, piece["offset"], piece["length"]
    raise AssertionError(name_part)


def test_bit_flip_is_rejected_naming_the_unit(tmp_path):
    _saved(tmp_path)
    name, offset, length = _unit_offset(tmp_path, 4, "optim/__pack__/")  # the moments, packed (fito.ckpt.packs)
    shard = _shard(tmp_path, 4)
    data = bytearray(shard.read_bytes())
    data[offset + length - 3] ^= 0x10
    shard.write_bytes(bytes(data))
    _expect_rejected(tmp_path, fito.CheckpointCorruptError, rf"unit '{re.escape(name)} block 0'.*expected xxh3-128:")


def test_truncation_is_rejected(tmp_path):
    _saved(tmp_path)
    shard = _shard(tmp_path, 4)
    shard.write_bytes(shard.read_bytes()[:-100])
    _expect_rejected(tmp_path, fito.CheckpointCorruptError, "truncated")


def test_deleted_unit_file_is_rejected(tmp_path):
    _saved(tmp_path)
    _shard(tmp_path, 4).unlink()
    _expect_rejected(tmp_path, fito.CheckpointCorruptError, "no such file")


def test_shard_swapped_in_from_another_epoch_is_rejected(tmp_path):
    _saved(tmp_path)
    old, new = _shard(tmp_path, 2), _shard(tmp_path, 4)
    new.write_bytes(old.read_bytes())  # same layout, other step's bytes
    _expect_rejected(tmp_path, fito.CheckpointCorruptError, "epoch tag 4.*found epoch tag 2")


def test_fallback_moves_to_the_previous_committed_epoch(tmp_path):
    _saved(tmp_path)
    _shard(tmp_path, 4).write_bytes(b"garbage")
    target = make_state(9)
    assert fito.Checkpointer(tmp_path).restore(target, fallback=True) == 2
    assert target["meta"]["n"] == 2


def test_manifest_with_parent_paths_is_rejected(tmp_path):
    _saved(tmp_path)
    mpath = _attempt_dir(tmp_path, 4) / "manifest.json"
    doc = json.loads(mpath.read_bytes())
    doc["objects"][0]["file"] = "../../../../etc/passwd"
    raw = json.dumps(doc).encode()
    mpath.write_bytes(raw)
    # Even with a decision vouching for these exact bytes, the path is refused.
    from fito.format.hashing import digest
    with sqlite3.connect(tmp_path / "decisions.sqlite") as db:
        db.execute("UPDATE decisions SET manifest_hash = ? WHERE epoch = 4", (digest("xxh3-128", raw),))
    _expect_rejected(tmp_path, fito.UnsafeCheckpointError, r"\.\./")


def test_decision_naming_a_path_outside_the_root_is_rejected(tmp_path):
    _saved(tmp_path)
    with sqlite3.connect(tmp_path / "decisions.sqlite") as db:
        db.execute("UPDATE decisions SET manifest = '/etc/passwd' WHERE epoch = 4")
    _expect_rejected(tmp_path, fito.UnsafeCheckpointError, "relative path inside the checkpoint root")


def test_tampered_manifest_is_rejected_by_the_decision_hash(tmp_path):
    _saved(tmp_path)
    mpath = _attempt_dir(tmp_path, 4) / "manifest.json"
    mpath.write_bytes(mpath.read_bytes().replace(b'"world_size":1', b'"world_size":1 '))
    _expect_rejected(tmp_path, fito.CheckpointCorruptError, "expected manifest hash")


def test_symlink_escaping_the_root_is_rejected(tmp_path):
    _saved(tmp_path)
    outside = tmp_path.parent / "outside.fito"
    shard = _shard(tmp_path, 4)
    outside.write_bytes(shard.read_bytes())
    shard.unlink()
    shard.symlink_to(outside)
    _expect_rejected(tmp_path, fito.UnsafeCheckpointError, "symbolic link to")


def test_foreign_directory_and_damaged_decision_log_are_clear_errors(tmp_path):
    (tmp_path / "decisions.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(fito.UnsafeCheckpointError, match="decisions.sqlite.*fito SQLite decision log"):
        fito.Checkpointer(tmp_path).restore({"w": torch.zeros(1)})


def test_pickle_payload_is_never_executed(tmp_path):
    """Structure is JSON data (an entry's document): a planted pickle is just bytes that fail the hash."""
    _saved(tmp_path)
    import pickle
    import os
    evil = pickle.dumps(type("E", (), {"__reduce__": lambda self: (os.system, ("touch pwned",))})())
    name, offset, length = _unit_offset(tmp_path, 4, "__fito__/meta")
    shard = _shard(tmp_path, 4)
    data = bytearray(shard.read_bytes())
    data[offset: offset + min(len(evil), length)] = evil[:length]
    shard.write_bytes(bytes(data))
    _expect_rejected(tmp_path, fito.CheckpointCorruptError, "__fito__/meta")
    assert not Path("pwned").exists()
