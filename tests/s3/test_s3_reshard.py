"""FSDP2 + AdamW + RNG + data position saved on 2 ranks to S3 with nothing local (an S3Storage object and the
storage-native decision store), restored bit-exact on 1 and on 4 ranks (resharded reads)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fito.testing.scenarios import run_scenarios

HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.multiproc
def test_fsdp2_saved_on_2_ranks_to_s3_restores_bit_exact_on_1_and_4_with_nothing_local(
        seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    oracle, cwd = tmp_path / "oracle", tmp_path / "cwd"  # the oracle is the test's, not fito's
    oracle.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the ranks start here: anything fito wrote "locally" would land in it
    env = {**seaweed.env(), "S3_URL": seaweed.new_url()}
    saved = run_scenarios("s3_reshard_ranks", "save", oracle, 2, here=HERE, env=env, timeout=300)
    assert [saved["save"][r]["committed"] for r in range(2)] == [[3, 4]] * 2
    assert saved["save"][0]["cwd"] == str(cwd)
    for world in (1, 4):
        got = run_scenarios("s3_reshard_ranks", "restore", oracle, world, here=HERE, env=env, timeout=300)
        events = got[f"restore_{world}"]
        assert sorted(events) == list(range(world)), got["_exit"]
        for r, e in events.items():
            assert e["step"] == 4 and e["committed"] == [3, 4], (world, r, e)
            assert e["mismatches"] == [] and e["compared"] > 8, (world, r, e["mismatches"])
            assert e["rng_ok"] and e["data_ok"], (world, r, e)  # rank r has saved rank r % 2's
    assert os.listdir(cwd) == [], f"written locally: {os.listdir(cwd)}"
    assert not list(tmp_path.rglob("decisions.sqlite")) and not list(tmp_path.rglob("s3:*"))
