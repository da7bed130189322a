"""`fito export` and `fito.load_tensors` on a checkpoint that 2 gloo ranks saved sharded (FSDP2 with uneven
shards, a TP DTensor in column blocks, AdamW moments and step counters, a rank-local RNG entry): the exported
safetensors, re-read with the safetensors library, equal the full tensors exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fito
from fito.cli import main
from fito.testing.scenarios import run_scenarios

HERE = Path(__file__).parent
pytestmark = [pytest.mark.multiproc, pytest.mark.slow]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("export2")
    found = run_scenarios("export_ranks", "save", tmp, 2, here=HERE, env={"FITO_BLOCK_BYTES": "256"}, timeout=300)
    assert [found["save"][r]["local"] for r in (0, 1)] == [[[9, 8], [9], [3, 18], [3]], [[9, 8], [9], [2, 18], [2]]]
    return tmp


def _mismatches(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> list[str]:
    if set(got) != set(want):
        return [f"names: extra {sorted(set(got) - set(want))[:5]}, missing {sorted(set(want) - set(got))[:5]}"]
    return [k for k in want if got[k].dtype != want[k].dtype or got[k].shape != want[k].shape or not torch.equal(got[k], want[k])]


def test_two_rank_sharded_export_rereads_with_safetensors_exactly(saved: Path, tmp_path: Path, capsys) -> None:
    want = torch.load(saved / "oracle.pt", weights_only=True)
    assert main(["export", str(saved / "ck"), str(tmp_path / "out"), "--max-shard-size", "600", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "ok" and doc["result"]["step"] == 2 and doc["result"]["tensors"] == len(want)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files == sorted(f for f in doc["result"]["files"] if f.endswith(".safetensors"))
    got: dict[str, torch.Tensor] = {}
    for f in files:
        part = load_file(tmp_path / "out" / f)
        assert all(index["weight_map"][k] == f for k in part)
        got |= part
    assert _mismatches(got, want) == []  # rank-local rng is not exported: no "rng.*" name
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in want.values())


def test_two_rank_sharded_load_tensors_and_only_model(saved: Path, tmp_path: Path) -> None:
    want = torch.load(saved / "oracle.pt", weights_only=True)
    assert _mismatches(fito.load_tensors(saved / "ck"), want) == []
    weights = {k: v for k, v in want.items() if k.startswith("model.")}
    assert _mismatches(fito.load_tensors(saved / "ck", ["model"]), weights) == []
    assert main(["export", str(saved / "ck"), str(tmp_path / "m"), "--only", "model"]) == 0
    assert _mismatches(load_file(tmp_path / "m" / "model.safetensors"),
                       {k.removeprefix("model."): v for k, v in weights.items()}) == []
