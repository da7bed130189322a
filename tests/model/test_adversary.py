"""Theorem 4.2's adversary: wins against every temporal boundary, loses against the bilateral protocol."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fito.cli import main
from fito.model.adversary import Timing, TemporalBoundary, crash_search, straddle
from fito.model.adversary_machines import MachineBilateral as Bilateral, MachineExecution, kind_of
from fito.model.explorer import happy_path
from fito.model.lattice import EpochState
from fito.model.traces import Kind

C, A, R = EpochState.C, EpochState.A, EpochState.R


@settings(max_examples=40, deadline=None)
@given(boundary=st.floats(-1e6, 1e6, allow_nan=False), n=st.integers(2, 6),
       storage=st.sampled_from(["in-place", "versioned"]))
def test_every_proposed_boundary_is_straddled_into_a_mixed_state(boundary: float, n: int, storage: str) -> None:
    res = straddle(TemporalBoundary(storage), n, boundary)  # type: ignore[arg-type]
    victim_state = A if storage == "in-place" else R
    assert res.durable_at_boundary == (C,) * (n - 1) + (victim_state,)
    assert res.recovered_class.kind == "mixed"
    # the schedule really straddles T: the victim began before T and had not fsynced at T
    vev = res.execution.trace.of(res.victim)
    assert any(ev.kind is Kind.WRITE and ev.time < boundary for ev in vev)
    assert not any(ev.kind is Kind.FSYNC for ev in vev)
    assert any(ev.kind is Kind.CRASH and ev.time == boundary for ev in vev)


@settings(max_examples=40, deadline=None)
@given(boundary=st.floats(-1e6, 1e6, allow_nan=False), n=st.integers(2, 6))
def test_same_adversary_cannot_mix_the_recovered_state_of_bilateral(boundary: float, n: int) -> None:
    res = straddle(Bilateral(), n, boundary)
    assert res.durable_class.kind == "mixed"  # Theorem 4.2 about the instant still holds...
    assert res.recovered == (R,) * n  # ...but recovery reads the decision: presumed abort
    # the coordinator's machine never commits: after its timeout it publishes an abort and tells the ranks
    coord = [ev.kind for ev in res.execution.trace.events if ev.component == "coord"]
    assert coord == [Kind.ABORT, Kind.NOTIFY]


def test_victim_choice_and_validation() -> None:
    res = straddle(TemporalBoundary(), 4, 3.0, victim="c1")
    assert res.durable_at_boundary == (C, A, C, C)
    assert res.recovered_class.ambiguous_positions == (1,)
    with pytest.raises(ValueError):
        straddle(TemporalBoundary(), 1, 3.0)
    with pytest.raises(ValueError):
        straddle(TemporalBoundary(), 3, 3.0, victim="c9")


def test_crash_search_bilateral_never_recovers_mixed_and_reaches_both_outcomes() -> None:
    res = crash_search(Bilateral(), 3, max_crashes=2)
    assert res.runs > 5000 and res.mixed_recovered == 0
    assert res.recovered_kinds.get("atomic-top", 0) > 0 and res.recovered_kinds.get("atomic-bottom", 0) > 0


def test_crash_search_temporal_finds_mixed_states() -> None:
    res = crash_search(TemporalBoundary(), 3, max_crashes=1)
    assert res.mixed_recovered > 0 and res.first_mixed is not None


def test_bilateral_clean_run_commits_and_crash_after_decision_still_commits() -> None:
    res = crash_search(Bilateral(), 2, max_crashes=1)
    assert res.mixed_recovered == 0
    p = Bilateral()
    base = Timing(start={"c0": 0.0, "c1": 0.0}, step={"c0": 1.0, "c1": 1.0})
    assert p.recover(p.execute(2, 1, base), 1) == (C, C)
    # coordinator dies right after the decision is durable, before telling anyone: still committed
    fsync_t = next(ev.time for ev in p.execute(2, 1, base).trace.events if ev.component == "coord"
                   and ev.kind is Kind.COMMIT)
    late = Timing(start=base.start, step=base.step, crashes={"coord": fsync_t + 1e-3})
    assert p.recover(p.execute(2, 1, late), 1) == (C, C)
    early = Timing(start=base.start, step=base.step, crashes={"coord": fsync_t - 1e-3})
    assert p.recover(p.execute(2, 1, early), 1) == (R, R)


def test_cli_adversary_exit_codes_and_json(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["adversary", "--protocol", "temporal", "--boundary", "7", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)["result"]
    assert out["durable_at_boundary"] == "CCA" and out["recovered_class"] == "mixed"
    assert main(["adversary", "--protocol", "bilateral", "--boundary", "7", "--n", "2"]) == 0
    text = capsys.readouterr().out
    assert "ATOMIC-BOTTOM" in text and "presumed abort" in text


def test_correction_5_p_mixed_is_the_abort_rate_under_bilateral() -> None:
    from fito.model.adversary import attempt_outcomes
    from fito.model.failure_spec import FailureSpec
    from fito.model.lattice_closed_form import closed_form

    n, q, k = 10, 0.05, 1500
    cf = closed_form(n, FailureSpec.binary(1 - q))
    se = (cf.mixed * (1 - cf.mixed) / k) ** 0.5
    bil = attempt_outcomes(Bilateral(), n, q, k, seed=7)
    assert abs(bil.rate(bil.durable, "mixed") - cf.mixed) < 5 * se  # the lattice describes the attempt...
    assert bil.recovered.get("mixed", 0) == 0  # ...but no recovery is ever mixed
    assert bil.recovered["atomic-bottom"] == bil.durable["mixed"]  # every mixed attempt falls back
    assert abs(bil.rate(bil.recovered, "atomic-bottom") - (1 - cf.all_c)) < 5 * se
    tmp = attempt_outcomes(TemporalBoundary(), n, q, k, seed=7)
    assert tmp.recovered.get("mixed", 0) == tmp.durable["mixed"] > 0  # no protocol: resumes the mix


_COMMANDS = {Kind.WRITE, Kind.FSYNC, Kind.ACK, Kind.COMMIT, Kind.ABORT, Kind.NOTIFY, Kind.GC}


def _seeded_timing(n: int, seed: int, crash: bool) -> Timing:
    import random
    rng = random.Random(seed)
    names = [f"c{i}" for i in range(n)]
    start = {c: rng.uniform(0, 3) for c in names}
    crashes = {rng.choice(names + ["coord"]): rng.uniform(0, 12)} if crash else {}
    return Timing(start=start, step={c: rng.uniform(0.2, 2) for c in names}, crashes=crashes,
                  coord_step=rng.uniform(0.1, 1))


@pytest.mark.parametrize("seed", range(8))
def test_bilateral_trace_is_the_machines_command_order(seed: int) -> None:
    """The adversary's bilateral trace is generated from the machines: its command events are, in order,
    the commands the checker's simulated executor ran for this seed's schedule, and with no crash each
    process runs exactly the commands of the checker's happy path (which the differential test pins to a
    real fito.dcp save), whatever the interleaving."""
    n = 2 + seed % 2
    for crash in (False, True):
        ex = Bilateral().execute(n, 1, _seeded_timing(n, seed, crash))
        assert isinstance(ex, MachineExecution)
        times = [ev.time for ev in ex.trace.events]
        assert times == sorted(times)
        events = [(ev.component, ev.kind) for ev in ex.trace.events
                  if ev.kind in _COMMANDS and not (ev.component != "coord" and ev.kind is Kind.COMMIT)]
        names = {f"rank{i}": f"c{i}" for i in range(n)} | {"coord": "coord"}
        assert events == [(names[who], kind_of(cmd)) for who, cmd in ex.commands]
        if not crash:
            log, _ = happy_path("bilateral", n)
            for who in names:
                assert [c for w, c in ex.commands if w == who] == [c for w, c in log if w == who], who
            assert Bilateral().recover(ex, 1) == (C,) * n
