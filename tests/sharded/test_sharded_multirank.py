"""`fito.Checkpointer` on sharded state with real gloo ranks (separate processes): FSDP2 + AdamW, DDP, TP
DTensors and HF GPT-2 saved on 2 ranks and restored on 1, 2, 3 and 4; DDP writes one replica; rank-local
entries and their policies on a world-size change; one flipped bit refused by every rank. One save group (2
ranks) then one restore group per world size: process starts dominate the time."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fito.testing.scenarios import run_scenarios
from fito.protocol.layout import parse_object

HERE = Path(__file__).parent
pytestmark = [pytest.mark.multiproc, pytest.mark.slow]


def _run(group: str, tmp: Path, world: int) -> dict[str, dict[int, dict[str, Any]]]:
    return run_scenarios("sharded_ranks", group, tmp, world, here=HERE, env={"FITO_BLOCK_BYTES": "256", "HF_HUB_OFFLINE": "1"}, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("sharded")
    found = {"save": _run("save", tmp, 2)}
    for world in (1, 3, 4):
        found[f"restore{world}"] = _run("restore+gpt2" if world == 3 else "restore", tmp, world)
    return found


def _ranks(runs: dict[str, Any], group: str, scenario: str, world: int) -> list[dict[str, Any]]:
    got = runs[group].get(scenario, {})
    assert sorted(got) == list(range(world)), f"{scenario}: results from ranks {sorted(got)}; exits {runs[group]['_exit']}"
    return [got[r] for r in range(world)]


def test_fsdp2_adamw_save_commits_sync_and_async_with_rank_local_rng_and_data(runs):
    for r in _ranks(runs, "save", "fsdp_save", 2):
        assert r["committed"] == [3, 4] and r["local_types"] == ["DTensor"]
        values = r["values"]
        assert "__fito__/sched" in values and not any(v.endswith("/sched") and "__rank__" in v for v in values)  # once
        assert {f"__rank__/{k}/__fito__/{e}" for k in (0, 1) for e in ("rng", "data")} <= set(values)


def test_fsdp2_same_world_size_restores_exactly_and_continues_bit_exact(runs):
    for r in _ranks(runs, "save", "fsdp_restore_2", 2):
        assert r["step"] == 4 and r["mismatches"] == [] and r["compared"] > 12  # weights, moments, step counters
        assert r["rng_ok"] and r["sched"] == 4 and r["data"] == {"epoch": 0, "index": 16, "seed": 7}
        assert r["continued"] == []  # two more steps after the restore equal the uninterrupted run's, bit for bit
    for r in _ranks(runs, "save", "fsdp_restore_2_step3", 2):
        assert r["step"] == 3 and r["mismatches"] == []


@pytest.mark.parametrize("world", [1, 3, 4])
def test_fsdp2_saved_on_2_ranks_restores_exactly_on_another_world_size(runs, world):
    for r in _ranks(runs, f"restore{world}", f"fsdp_restore_{world}", world):
        refused = r["refused"]
        assert refused["raised"] == "StateMismatchError" and "saved by 2 ranks and is restored on" in refused["message"]
        assert "'rng'" in refused["message"] and "'data'" in refused["message"] and r["untouched"]
        assert r["step"] == 4 and r["mismatches"] == [] and r["rng_is_saved_rank"]
        assert r["sched"] == 4 and r["data"] == {"epoch": 0, "index": 16, "seed": 7}


@pytest.mark.parametrize("world", [1, 3, 4])
def test_fsdp2_checkpoint_restores_into_ddp_or_plain_and_ddp_into_fsdp2(runs, world):
    for r in _ranks(runs, f"restore{world}", f"fsdp_to_plain_{world}", world):
        assert r["mismatches"] == [] and r["rng_kept"] and r["data"] == {"epoch": 0, "index": 0, "seed": 7}
    for r in _ranks(runs, f"restore{world}", f"ddp_to_fsdp_{world}", world):
        assert r["mismatches"] == []


def test_ddp_writes_one_replica_per_save(runs):
    results = _ranks(runs, "save", "ddp_save", 2)
    r = results[0]
    assert r["replica"] <= r["written"] <= 1.05 * r["replica"], r
    objects = [size for name, size in r["files"].items() if parse_object(name.rsplit("/", 1)[-1]) is not None]
    assert len(objects) == 2 and min(objects) > 0.4 * sum(objects), r["files"]  # the replicas share the writing


@pytest.mark.parametrize("world", [1, 3, 4])
def test_tp_dtensors_shard0_shard1_replicate_uneven_restore_on_other_meshes_and_plain(runs, world):
    assert [r["local"] for r in _ranks(runs, "save", "tp_save", 2)] == [[[5, 6], [7, 3], [5, 3]], [[5, 6], [7, 2], [5, 3]]]
    for r in _ranks(runs, f"restore{world}", f"tp_restore_{world}", world):
        assert all(r["equal"].values()), r["equal"]


def test_rank_local_entries_are_found_by_hashing_or_declared_and_saved_per_rank(runs):
    r = _ranks(runs, "save", "rank_local_save", 2)[0]
    assert r["values"] == ["__fito__/sched", "__fito__/shared", "__rank__/0/__fito__/data", "__rank__/0/__fito__/seen",
                           "__rank__/1/__fito__/data", "__rank__/1/__fito__/seen"]
    assert r["tensors"] == ["__rank__/0/seen/ids", "__rank__/1/seen/ids", "shared"]


@pytest.mark.parametrize("world", [1, 3, 4])
def test_rank_local_entries_on_another_world_size_error_reset_or_map(runs, world):
    for rank, r in enumerate(_ranks(runs, f"restore{world}", f"rank_local_{world}", world)):
        assert "rank-local entries ['seen', 'data']" in r["error"] and "rank_local='reset'" in r["error"]
        assert r["untouched"]
        assert r["reset"] == {"data": {"epoch": -5, "index": -5 * rank, "seed": 0}, "seen": -5 * rank,
                              "shared": [1.0] * 4, "sched": 2}
        source = (rank + 1) % 2
        assert r["mapped"] == {"data": {"epoch": 1, "index": source, "seed": 0}, "seen": source, "ids": [float(source)] * 3}
        assert r["per_entry"] == {"data": {"epoch": -5, "index": -5 * rank, "seed": 0}, "seen": 0}


def test_one_flipped_bit_in_one_rank_object_every_rank_refuses_and_nothing_is_touched(runs):
    results = _ranks(runs, "save", "flipped_bit", 2)
    for r in results:
        assert r["raised"] == "CheckpointCorruptError" and r["fito"], r
        assert r["untouched"] and r["optimizer_fresh"]
    assert "rank-00001.fito" in results[1]["message"] and "block" in results[1]["message"]
    assert "rank 1:" in results[0]["message"]  # rank 0 verified its own bytes and names rank 1's failure


@pytest.mark.parametrize("world", [2, 3])
def test_hf_gpt2_with_tied_weights_under_fsdp2(runs, world):
    group = "save" if world == 2 else "restore3"
    for r in _ranks(runs, group, f"gpt2_{world}", world):
        assert r["tied"] and r["mismatches"] == []
