"""Crash states of a real 2-rank save (fito.testing.crashcuts): every combination of per-rank crash prefixes
within the stated bound, the real restore on each at world size 2 and 1."""
from __future__ import annotations

from pathlib import Path

import pytest

from fito.testing.crashcuts import check_recorded, crash_points, each_cut, merged, record_multirank_save
from fito.model.posix_crash import Op
from fito.testing.recording import Recording


def _rec(*timed: tuple[str, int, int]) -> Recording:
    rec = Recording()
    for kind, start, end in timed:
        rec.ops.append(Op(kind, kind))
        rec.spans.append((start, end))
    return rec


def test_cuts_combine_ranks_freely_except_across_a_decision() -> None:
    """Rank 1 writes (t=1..4) before rank 0's commit transaction (t=10..11) and cleans up after it (t=20):
    a cut with the commit holds all of rank 1's earlier work; a cut without it, none of the later."""
    r0 = _rec(("create", 0, 2), ("fsync_file", 3, 5), ("store", 10, 11), ("remove_tree", 12, 13))
    r1 = _rec(("create", 1, 2), ("fsync_file", 3, 4), ("unlink", 20, 21))
    cuts = set(each_cut([r0, r1]))
    free = {(a, b) for a in range(3) for b in range(3)}  # before the commit: every combination
    assert free <= cuts
    assert {(3, 2), (3, 3), (4, 2), (4, 3)} <= cuts  # with the commit, rank 1's first two ops always in
    assert not {c for c in cuts if c[0] >= 3 and c[1] < 2}  # a commit without rank 1's READY work: never
    assert not {c for c in cuts if c[0] < 3 and c[1] == 3}  # rank 1's cleanup without the commit: never
    assert len(cuts) == 9 + 4
    assert [op.kind for op in merged([r0, r1], (2, 2))] == ["create", "create", "fsync_file", "fsync_file"]
    assert crash_points(r0, "boundaries") == [0, 1, 2, 3, 4]  # every op here is next to a durability op
    assert crash_points(_rec(("create", 0, 1), ("write", 1, 2), ("write", 2, 3), ("fsync_file", 3, 4)),
                        "boundaries") == [0, 3, 4]


@pytest.mark.slow
@pytest.mark.multiproc
def test_every_crash_state_of_a_two_rank_save_restores_one_whole_step(tmp_path: Path) -> None:
    """The bounded configuration (prefixes at the durability boundaries, one torn prefix + the zero tail per
    un-fsynced file): zero mixed, zero lost acknowledged steps, the previous step restorable until the new one
    commits -- at world size 2 and 1. Then a planted bug (rank 1's persist skips the file fsync) is caught."""
    initial, store, recs = record_multirank_save(tmp_path)
    assert len(recs) == 2 and len(store) == 1  # step 1 committed before the recording
    for rank, rec in enumerate(recs):  # each rank wrote and persisted its own object of step 2
        obj = next(op.path for op in rec.ops if op.kind == "create" and op.path.endswith(f"rank-{rank:05d}.fito"))
        assert Op("fsync_file", obj) in rec.ops
    report = check_recorded(tmp_path, initial, store, recs)
    assert report.violations == [], report.violations[:3]
    assert report.cuts >= 30 and report.states >= 40, report.to_json()
    for ws in (2, 1):  # both sides of the commit point were reached, and nothing was refused
        out = report.outcomes[ws]
        assert out["restored new"] > 0 and out["restored previous"] > 0, out
        assert out["nothing committed"] == out["refused"] == 0 and sum(out.values()) == report.states, out

    # The planted bug: rank 1's storage never fsyncs its object (its directory still is). The commit then
    # names bytes a crash can lose: a crash state with the commit durable and rank 1's object empty or torn.
    skipped = Recording()
    for op, span in zip(recs[1].ops, recs[1].spans):
        if op.kind != "fsync_file":
            skipped.ops.append(op)
            skipped.spans.append(span)
    planted = check_recorded(tmp_path, initial, store, [recs[0], skipped], world_sizes=(1,))
    assert any("(lost)" in v and "rank-00001.fito" in v for v in planted.violations), planted.to_json()
