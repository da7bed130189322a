"""`fito inspect` shows the tensor index of fito-manifest/2 steps: per tensor dtype, global shape, chunks (box in
the global tensor, the rank whose object holds it), bytes; rank-local entries per saving rank; a summary by
default, the index with --tensors, the whole index inside the JSON envelope with --json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fito
from fito.cli import main
from fito.testing.dist import run_ranks
from fito.testing.v1_format import save_v1

HELPERS = Path(__file__).parent / "helpers"


def _result(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    assert main(["inspect", *argv, "--json"]) == 0
    env = json.loads(capsys.readouterr().out)  # the whole of stdout is one envelope
    assert set(env) == {"command", "version", "verdict", "exit_code", "result"} and env["verdict"] == "ok"
    return env["result"]


def test_single_process_index_has_global_shapes_dtypes_and_owners(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = torch.nn.Linear(4, 3)
    with fito.Checkpointer(tmp_path) as ck:
        ck.save(1, {"model": model, "w": torch.zeros(10, dtype=torch.float16), "rng": fito.RNGState()})
    (row,) = _result(capsys, str(tmp_path))
    index = row["index"]
    tensors = {t["fqn"]: t for t in index["tensors"]}
    assert tensors["model/weight"]["dtype"] == "float32" and tensors["model/weight"]["shape"] == [3, 4]
    assert tensors["w"]["dtype"] == "float16" and tensors["w"]["bytes"] == 20
    assert tensors["model/weight"]["chunks"] == [
        {"offsets": [0, 0], "sizes": [3, 4], "rank": 0, "offset": tensors["model/weight"]["chunks"][0]["offset"],
         "bytes": 48, "blocks": 1}]
    assert index["summary"]["writers"] == [0] and index["world_size"] == 1
    assert index["entries"] == {"replicated": ["model", "w"], "rank_local": {"rng": [0]}}
    assert any(t["fqn"].startswith("__rank__/0/rng/") and t["saved_by"] == 0 for t in index["tensors"])
    assert main(["inspect", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "step 1 (fito-manifest/2):" in text and "rank-local entries: rng (ranks 0)" in text
    assert "model/weight" not in text  # the default stays a summary
    assert main(["inspect", str(tmp_path), "--tensors"]) == 0
    text = capsys.readouterr().out
    assert "model/weight" in text and "[0:3, 0:4] r0" in text


def test_v1_rows_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with fito.Checkpointer(tmp_path) as ck:
        save_v1(ck, 1, {"w": torch.ones(3)})  # the per-rank format (fito-manifest/1)
    (row,) = _result(capsys, str(tmp_path))
    assert set(row) == {"epoch", "attempt", "status", "seq", "shards", "bytes", "lattice"}


@pytest.mark.multiproc
def test_two_rank_ddp_index_shows_one_replica_per_tensor_and_per_rank_entries(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ck"
    results = run_ranks("inspect_ranks", [str(root)], 2, timeout=240, path=[str(HELPERS)])
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    (row,) = _result(capsys, str(root))
    index = row["index"]
    assert index["world_size"] == 2 and row["lattice"] == "CC"
    tensors = {t["fqn"]: t for t in index["tensors"]}
    shapes = {"model/weight": [8, 16], "model/bias": [8], "optim/state/weight/exp_avg": [8, 16],
              "optim/state/bias/exp_avg_sq": [8]}
    for fqn, shape in shapes.items():  # DDP's `module.` prefix gone; one whole chunk, one replica written
        t = tensors[fqn]
        assert t["dtype"] == "float32" and t["shape"] == shape and t["saved_by"] is None
        assert len(t["chunks"]) == 1 and t["chunks"][0]["offsets"] == [0] * len(shape) and t["chunks"][0]["sizes"] == shape
    owners = {c["rank"] for t in index["tensors"] if t["saved_by"] is None for c in t["chunks"]}
    assert owners == {0, 1}  # dedup balances the replicated writes over both ranks
    assert index["summary"]["writers"] == [0, 1]
    assert index["entries"]["rank_local"] == {"rng": [0, 1]}
    for r in (0, 1):  # each rank's own copy of its RNG lives in its own object
        own = [t for t in index["tensors"] if t["fqn"].startswith(f"__rank__/{r}/rng/")]
        assert own and all(c["rank"] == r for t in own for c in t["chunks"])
    per_rank = {o["rank"]: o["bytes"] for o in index["objects"]}
    assert sum(per_rank.values()) == sum(t["bytes"] for t in index["tensors"]) + sum(v["bytes"] for v in index["values"])
