"""A value's bytes name their item (issue 20, found by the fito.dcp mutation fuzzer): a manifest re-vouched in
the decision log that points one value at another value's bytes (every hash true for them) is refused with
UnsafeCheckpointError naming both, instead of restoring the other value under this name; values saved
before the name was recorded (no "item") still load."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import fito
import fito.dcp
from fito.format.hashing import digest
from fito.plan.values import VALUE_FORMAT, decode_value


def _manifest(root: Path) -> tuple[Path, dict]:
    with sqlite3.connect(root / "decisions.sqlite") as db:
        (rel,) = db.execute("SELECT manifest FROM decisions WHERE outcome = 'commit'").fetchone()
    return root / rel, json.loads((root / rel).read_bytes())


def test_a_value_pointed_at_another_values_bytes_is_refused(tmp_path):
    dcp.save({"w": torch.ones(3), "a": False, "b": 0.25}, storage_writer=fito.dcp.Writer(tmp_path, 1),
             planner=fito.dcp.SavePlanner())
    path, m = _manifest(tmp_path)
    pieces = {v["fqn"]: v for v in m["values"]}
    pieces["a"].update({k: pieces["b"][k] for k in ("rank", "offset", "length", "blocks")})
    data = json.dumps(m).encode()
    path.write_bytes(data)
    with sqlite3.connect(tmp_path / "decisions.sqlite") as db:
        db.execute("UPDATE decisions SET manifest_hash = ? WHERE outcome = 'commit'", (digest("xxh3-128", data),))
    target = {"w": torch.zeros(3), "a": True, "b": 0.0}
    with pytest.raises(CheckpointException) as info:
        dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path), planner=fito.dcp.LoadPlanner())
    (cause,) = info.value.failures.values()
    cause = cause[0] if isinstance(cause, tuple) else cause
    assert isinstance(cause, fito.UnsafeCheckpointError), repr(cause)
    assert "'a'" in str(cause) and "'b'" in str(cause), str(cause)
    assert target == {"w": target["w"], "a": True, "b": 0.0} and torch.equal(target["w"], torch.zeros(3))


def test_a_value_without_its_name_still_decodes():
    old = json.dumps({"format": VALUE_FORMAT, "tree": {"v": 3}}).encode()  # as written before "item" existed
    assert decode_value(old, "x", "a") == 3
