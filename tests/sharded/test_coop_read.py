"""Cooperative reads (issue 17, "read each stored byte once"): a DDP checkpoint (replicated state) restored
on 2 and 4 gloo ranks fetches each stored tensor byte from storage once across all ranks (it was once per
rank), every rank restores it exactly, the switch turns it off, and a byte flipped between an owner and a
receiver is refused by the receiver, with the same error class on every rank and nothing applied anywhere.
Counted with fito.testing.counting.CountingStorage (every read of every object)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fito.testing.scenarios import run_scenarios

HERE = Path(__file__).parent
pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
# small blocks, messages and units: several owners per tensor, several messages and windows per exchange
ENV = {"FITO_BLOCK_BYTES": "4096", "FITO_EXCHANGE_BYTES": "16384", "FITO_READ_RUN_BYTES": "65536"}


@pytest.fixture(scope="module", params=[2, 4])
def ranks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    world = request.param
    out = run_scenarios("coop_ranks", "coop", tmp_path_factory.mktemp(f"coop{world}"), world, here=HERE, env=ENV,
                        timeout=300)
    got = out.get("ddp_count", {})
    assert sorted(got) == list(range(world)), out["_exit"]
    return [got[r] for r in range(world)]


def test_replicated_state_is_fetched_once_across_ranks_and_restores_exactly(ranks):
    world = len(ranks)
    first = ranks[0]["on"]
    assert first["tensor_bytes"] > 500_000  # four 256x256 layers and their AdamW moments
    for r in ranks:
        assert r["restored"] == [], r["restored"]
    # every stored tensor byte was read from storage by exactly one rank (was: by every rank)
    assert sum(r["on"]["tensor_read"] for r in ranks) == first["tensor_bytes"]
    # the rest is what each rank still reads for itself: the manifest, the object headers, the entries' JSON
    # documents; below, an upper bound for those on every rank
    small = first["manifest"] + first["objects"] * first["header"] + first["value_bytes"]
    assert sum(r["on"]["total_read"] for r in ranks) <= first["stored"] + world * small
    # balanced by bytes: no rank fetched much more than its share
    assert max(r["on"]["tensor_read"] for r in ranks) < 1.5 * first["tensor_bytes"] / world


def test_the_switch_off_reads_every_replica_on_every_rank(ranks):
    world = len(ranks)
    tensor_bytes = ranks[0]["off"]["tensor_bytes"]
    for r in ranks:
        assert r["off"]["tensor_read"] == tensor_bytes  # FITO_COOPERATIVE_READ=0: each rank reads it all
    assert sum(r["off"]["tensor_read"] for r in ranks) == world * tensor_bytes


def test_a_byte_flipped_in_transit_is_refused_on_every_rank_and_nothing_is_applied(ranks):
    assert ranks[0]["flipped"], "rank 0 sent no message: the fault never fired"
    for r in ranks:
        assert r["raised"] is not None and r["raised"][0] == "CheckpointCorruptError", r["raised"]
        assert r["untouched"], f"rank {r['rank']} applied something"
    receivers = [r for r in ranks if "received from rank 0" in r["raised"][1]]
    assert receivers, [r["raised"] for r in ranks]  # a receiver named the byte it refused and who sent it


def test_a_rank_killed_during_the_exchange_is_named_by_its_peer_which_applies_nothing(tmp_path):
    out = run_scenarios("coop_ranks", "die", tmp_path, 2, here=HERE, env=ENV, timeout=300)
    assert out["_exit"][1]["code"] == -9, out["_exit"]  # SIGKILLed at its first send
    r = out.get("dies_in_exchange", {}).get(0)
    assert r is not None, out["_exit"]
    assert r["raised"] is not None and r["raised"][0] == "PeerLostError" and "rank 1" in r["raised"][1], r["raised"]
    assert r["untouched"]
