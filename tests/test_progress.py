"""Progress on saves and restores of the sharded core: fito.dcp.Writer and Reader report every byte they write
and read to their `progress` callback, and `Checkpointer(progress=True)` shows the byte bar (rich) on v2
saves and restores."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

import fito
import fito.dcp


def _payload(root: Path) -> int:
    """Payload bytes of the committed step's items, as its manifest lists them."""
    (manifest,) = root.glob("epochs/*/*/manifest.json")
    doc = json.loads(manifest.read_bytes())
    return sum(c["length"] for t in doc["tensors"] for c in t["chunks"]) + sum(v["length"] for v in doc["values"])


def test_writer_and_reader_report_every_byte(tmp_path: Path) -> None:
    state = {"a": torch.arange(1000, dtype=torch.float32), "b": torch.ones(7, 3, dtype=torch.float64), "n": 5}
    written: list[int] = []
    dcp.save(state, storage_writer=fito.dcp.Writer(tmp_path, 1, progress=written.append), planner=fito.dcp.SavePlanner())
    assert sum(written) == _payload(tmp_path) >= 4000 + 168
    read: list[int] = []
    target = {"a": torch.zeros(1000), "b": torch.zeros(7, 3, dtype=torch.float64), "n": 0}
    reader = fito.dcp.Reader(tmp_path, progress=read.append)
    dcp.load(target, storage_reader=reader, planner=fito.dcp.LoadPlanner())
    assert torch.equal(target["a"], state["a"]) and sum(read) == reader.bytes_read == _payload(tmp_path)


SCRIPT = """
import sys, torch, fito
state = {"w": torch.arange(300_000, dtype=torch.float32)}
with fito.Checkpointer(sys.argv[1], progress=True) as ck:
    ck.save(1, state)
    ck.restore({"w": torch.zeros(300_000)})
"""


def test_checkpointer_progress_true_shows_the_bar_on_v2_save_and_restore(tmp_path: Path) -> None:
    # TTY_COMPATIBLE=1 makes rich render its live bar into the pipe as it would on a terminal
    env = {**__import__("os").environ, "TTY_COMPATIBLE": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ck")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "save step 1" in out and "restore step 1" in out
    assert "1.2/1.2 MB" in out  # the whole 1.2 MB tensor counted, on the way out and back in
