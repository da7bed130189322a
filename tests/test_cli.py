"""The command line: help, inspect, verify (exit codes), gc, and the README's main job `fito demo`."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch

import fito
from fito.cli import main

README = Path(__file__).parent.parent / "README.md"


def _saved(root: Path) -> None:
    ck = fito.Checkpointer(root)
    for step in (1, 2, 3):
        ck.save(step, {"w": torch.full((1000,), float(step))})


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "inspect", "verify", "gc"):
        assert command in out


def test_inspect_json_shows_decisions_and_lattice(tmp_path, capsys):
    _saved(tmp_path)
    (tmp_path / "epochs" / "000000000004" / "a-undecided").mkdir(parents=True)
    (tmp_path / "epochs" / "000000000004" / "a-undecided" / "rank-00000.fito").write_bytes(b"partial")
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["epoch"], r["status"], r["lattice"]) for r in rows] == [
        (1, "committed", "C"), (2, "committed", "C"), (3, "committed", "C"), (4, "undecided", "A")]


def test_verify_exit_codes(tmp_path, capsys):
    _saved(tmp_path)
    assert main(["verify", str(tmp_path)]) == 0
    assert "epoch 3 is whole" in capsys.readouterr().out
    shard = next((tmp_path / "epochs" / "000000000002").glob("*/rank-00000.fito"))
    tensors = json.loads((shard.parent / "manifest.json").read_bytes())["tensors"]
    w = next(t["chunks"][0] for t in tensors if t["fqn"] == "w")
    data = bytearray(shard.read_bytes())
    data[w["offset"] + 100] ^= 1  # inside the bytes of item "w"
    shard.write_bytes(bytes(data))
    assert main(["verify", str(tmp_path)]) == 0  # the newest epoch is still whole
    capsys.readouterr()
    assert main(["verify", str(tmp_path), "--epoch", "2", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["whole"] is False and "'w block 0'" in report["errors"][0] and "expected xxh3-128:" in report["errors"][0]
    assert main(["verify", str(tmp_path), "--epoch", "7"]) == 2
    assert main(["verify", str(tmp_path / "nope")]) == 2


def test_gc_keeps_newest_k(tmp_path, capsys):
    _saved(tmp_path)
    assert main(["gc", str(tmp_path), "--keep", "1", "--grace", "0"]) == 0
    assert fito.Checkpointer(tmp_path).committed() == [3]
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["000000000003"]
    assert main(["gc", str(tmp_path), "--keep", "0"]) == 2


def test_readme_first_command_runs_the_demo(tmp_path):
    """The README's first line is the set-up + main job; run its `fito demo` part for real."""
    first = README.read_text().split("```")[1]
    assert "fito demo" in first and "pip install" in first
    proc = subprocess.run([sys.executable, "-m", "fito", "demo", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "bit-identical" in proc.stdout
    assert re.search(r"-9", proc.stdout)  # the killed rank died by SIGKILL
    assert fito.Checkpointer(tmp_path / "crashed").committed() == [30, 35, 40]
