"""A background save stalls the caller only to capture and copy its state to host memory (issue 19): the
rank-local vote (hashing every plain tensor, a gather and a broadcast among the ranks) runs in the background
on the staged copy, so one rank's save call does not wait for a late peer, and what is hashed and voted on is
what is written. A rank that fails to capture still fails every rank's save, and nothing commits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fito.testing.dist import run_ranks

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
HELPERS = Path(__file__).parent / "helpers"


def test_background_save_votes_after_the_stall_on_the_staged_copy(tmp_path: Path) -> None:
    results = run_ranks("async_vote_rank", [str(tmp_path / "ck")], 2, timeout=300, path=[str(HELPERS)])
    lines = []
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        lines.append(json.loads(r.stdout.strip().splitlines()[-1]))
    zero, one = lines
    # rank 1 calls 3 s late; with the vote in the call, rank 0's call would wait for it (about 3 s)
    assert zero["stall"] < 1.5, zero
    # rank 1 changed its live tensor right after the call: the staged copy (equal on both ranks) was written,
    # as a replicated entry, and both ranks restore it
    want = float(sum(range(1024)))
    assert zero["restored"] == want and one["restored"] == want, lines
    # a capture failing on rank 1: its own call raises its error; rank 0's background save fails, names it
    assert one["captured_error"].startswith("RuntimeError: rank 1 cannot capture this"), one
    assert "rank 1" in zero["captured_error"] and "cannot capture" in zero["captured_error"], zero
    assert zero["committed"] == one["committed"] == [1, 2], lines
