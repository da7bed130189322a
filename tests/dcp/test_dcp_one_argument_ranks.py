"""fito.dcp with DCP's own planners on real gloo ranks (issue 21): FSDP2 + AdamW and a replicated plain
model saved and loaded on 2 ranks and loaded on 1, bit-exact; replicas that differ and a flipped byte
refused; a ShardedTensor target; loads on a 2-rank subgroup of 4 ranks with a Reader built without it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

import fito.dcp
from fito.errors import CheckpointCorruptError, StateMismatchError
from fito.testing.compare import diff
from fito.testing.scenarios import run_scenarios

HERE = Path(__file__).parent
pytestmark = [pytest.mark.multiproc, pytest.mark.slow, pytest.mark.filterwarnings("ignore:torch.distributed is disabled")]


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("beside")
    return tmp, run_scenarios("beside_ranks", "two", tmp, 2, here=HERE, env={"FITO_BLOCK_BYTES": "64"}, timeout=240)


def ranks(runs: dict[str, Any], scenario: str, world: int = 2) -> list[dict[str, Any]]:
    got = runs.get(scenario, {})
    assert sorted(got) == list(range(world)), f"{scenario}: results from ranks {sorted(got)}; exits {runs['_exit']}"
    return [got[r] for r in range(world)]


def test_fsdp2_adamw_with_only_the_storage_swapped_is_bit_exact_on_2_ranks_and_on_1(two):
    tmp, runs = two
    for r in ranks(runs, "fsdp_one_argument"):
        assert r["mismatches"] == [] and r["compared"] > 8 and r["loaded_step"] == 1, r
    torch.manual_seed(0)  # the same module, unsharded, in this process (no process group: 1 rank)
    model = torch.nn.Sequential(torch.nn.Linear(8, 18), torch.nn.ReLU(), torch.nn.Linear(18, 5))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    msd, osd = get_state_dict(model, opt)
    dcp.load({"model": msd, "optim": osd}, storage_reader=fito.dcp.Reader(tmp / "fsdp"))
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd)
    want = torch.load(tmp / "fsdp_oracle.pt", weights_only=True)
    got_msd, got_osd = get_state_dict(model, opt)
    assert diff({"model": got_msd, "optim": got_osd}, want) == []


def test_a_plain_replicated_model_with_only_the_storage_swapped(two):
    for r in ranks(two[1], "plain_one_argument"):
        assert r["same"] is True and r["epoch"] == 7


def test_replicas_that_differ_are_refused_at_the_commit_with_dcps_planner(two):
    for r in ranks(two[1], "replicas_differ"):
        assert r["raised"] == "CheckpointException" and "'per_rank'" in r["message"] and "differ between ranks" in r["message"], r
        assert r["committed"] == [] and r["files"] == []  # nothing decided, the objects removed


def test_a_flipped_byte_is_refused_on_every_rank_with_dcps_planner(two):
    for r in ranks(two[1], "flipped_byte"):
        assert r["raised"] == "CheckpointException" and r["fito_cause_ranks"] == [0, 1], r
        assert "CheckpointCorruptError" in r["message"] and r["untouched"] is True


def test_a_sharded_tensor_target_loads_a_checkpoint_saved_by_one_rank(two):
    for r in ranks(two[1], "sharded_tensor_target"):
        assert r["equal"] == {"dcp": True, "fito": True}, r


def test_loads_on_a_subgroup_with_a_reader_built_without_it(tmp_path):
    runs = run_scenarios("beside_ranks", "four", tmp_path, 4, here=HERE, timeout=240)
    for rank, r in enumerate(ranks(runs, "subgroups", 4)):
        assert r["same"] is True and r["step"] == rank // 2 and r["loaded_step"] == 1, r
