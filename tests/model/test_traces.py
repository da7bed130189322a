"""Trace model (§2-§4): Snap is about a clock time, Conv about a history; neither implies the other."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fito.model.lattice import EpochState
from fito.model.traces import (
    Event,
    Kind,
    Trace,
    conv,
    conv_trace,
    durable_epoch,
    durable_vector,
    examples,
    first_conv_prefix,
    retime,
    snap,
    snap_intervals,
)


def _by_name() -> dict[str, object]:
    return {ex.name: ex for ex in examples()}


def test_examples_separate_snap_from_conv_in_both_directions() -> None:
    got = {ex.name: (ex.snap_holds, ex.conv_holds) for ex in examples()}
    assert got == {
        "snap-without-conv": (True, False),
        "conv-without-snap": (False, True),
        "boundary-straddle": (False, True),
        "ack-before-fsync": (False, False),
    }


def test_conv_without_snap_has_no_instant_at_all() -> None:
    ex = _by_name()["conv-without-snap"]
    assert snap_intervals(ex.trace, 1) == []  # Snap(t, 1) is false for every t
    assert conv_trace(ex.trace, 1)


def test_snap_is_not_stable_in_time_but_conv_is_stable_in_prefixes() -> None:
    comps = ("c0", "c1")
    evs = [Event(float(i), c, k, 1) for c in comps for i, k in
           enumerate([Kind.BEGIN, Kind.WRITE, Kind.FLUSH, Kind.FSYNC, Kind.COMMIT])]
    evs += [Event(10.0, "c0", Kind.WRITE, 2), Event(11.0, "c0", Kind.FSYNC, 2)]
    trace = Trace.build(evs, comps, storage="in-place")
    assert snap(trace, 5.0, 1) and not snap(trace, 12.0, 1)  # true, then false again
    k = first_conv_prefix(trace, 1)
    assert k is not None
    assert all(conv(trace.prefix(j), comps, 1) for j in range(k, len(trace.events) + 1))
    assert not any(conv(trace.prefix(j), comps, 1) for j in range(k))


def test_durable_state_semantics_torn_in_place_vs_versioned() -> None:
    evs = [Event(0.0, "c0", Kind.BEGIN, 1), Event(1.0, "c0", Kind.WRITE, 1), Event(2.0, "c0", Kind.FLUSH, 1),
           Event(3.0, "c0", Kind.CRASH), Event(4.0, "c0", Kind.RECOVER)]
    torn = Trace.build(evs, ("c0",), storage="in-place")
    kept = Trace.build(evs, ("c0",), storage="versioned")
    assert durable_epoch(torn, "c0", 2.5) == 0  # before the crash the old epoch is what fsync guaranteed
    assert durable_epoch(torn, "c0", 4.0) is None and durable_vector(torn, 4.0, 1) == (EpochState.A,)
    assert durable_epoch(kept, "c0", 4.0) == 0 and durable_vector(kept, 4.0, 1) == (EpochState.R,)


def test_commit_before_fsync_is_not_stable() -> None:
    ex = _by_name()["ack-before-fsync"]
    assert all(any(ev.kind is Kind.COMMIT and ev.component == c for ev in ex.trace.events)
               for c in ex.trace.components)  # every component "committed"...
    assert not ex.conv_holds  # ...but c1's commit preceded its fsync
    assert durable_vector(ex.trace, 10.0, 1) == (EpochState.C, EpochState.A)


def test_retime_rejects_reordering_a_component() -> None:
    trace = _by_name()["boundary-straddle"].trace
    with pytest.raises(ValueError, match="reorders"):
        retime(trace, lambda ev: -ev.time)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["c0", "c1"]), st.tuples(st.floats(0.01, 10), st.floats(-20, 20)),
                       min_size=2, max_size=2))
def test_conv_is_invariant_under_admissible_retiming(speeds: dict[str, tuple[float, float]]) -> None:
    for ex in examples():
        new = retime(ex.trace, lambda ev: speeds[ev.component][0] * ev.time + speeds[ev.component][1])
        assert conv_trace(new, ex.epoch) == ex.conv_holds


def test_snap_at_a_fixed_time_changes_under_retiming() -> None:
    ex = _by_name()["boundary-straddle"]
    assert not snap(ex.trace, ex.at, 1)
    faster = retime(ex.trace, lambda ev: ev.time if ev.component == "c0" else (ev.time - 3.0) * 0.1)
    assert snap(faster, ex.at, 1)  # same history, same Conv, different answer for the "same" time
    assert conv_trace(faster, 1) == conv_trace(ex.trace, 1)
