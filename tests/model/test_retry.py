"""Pinned results of the retry-amplification model (§8): the naive loop runs away after a short capacity
dip and stays there; bounded policies (budget, fall back one epoch, backoff with jitter) recover."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fito.cli import main
from fito.model.retry import (
    RetryParams,
    critical_backlog,
    fail_probability,
    phase_map,
    runaway_threshold,
    simulate,
)

P = RetryParams(steps=200)


def test_fail_probability_shape() -> None:
    assert fail_probability(50, 100, 0.01) == pytest.approx(0.01)
    assert fail_probability(200, 100, 0.01) == pytest.approx(0.01 + 0.99 * 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dip_makes_naive_run_away_and_bounded_policies_recover(seed: int) -> None:
    naive = simulate("naive", P, seed=seed)
    assert naive.runaway and naive.tail_fail_fraction() > 0.9
    assert naive.load[-1] > naive.load[P.dip_start + P.dip_steps] > P.capacity  # still growing after the dip
    assert naive.recovery_steps() is None
    for policy in ("budget", "fito"):
        t = simulate(policy, P, seed=seed)
        assert not t.runaway and t.tail_fail_fraction() < 0.03
        assert t.recovery_steps() is not None and t.recovery_steps() <= 10
        assert t.fallbacks.sum() > 0  # the price: some checkpoints were given up (previous epoch kept)
        assert (t.load / t.capacity).max() < 2.0


def test_backoff_alone_does_not_prevent_runaway() -> None:
    assert simulate("backoff", P, seed=0).runaway  # delays retries but never sheds them


def test_without_a_trigger_everything_is_stable() -> None:
    calm = replace(P, dip=1.0)
    for policy in ("naive", "backoff", "budget", "fito"):
        assert not simulate(policy, calm, seed=0).runaway


def test_runaway_threshold_and_headroom() -> None:
    assert runaway_threshold("naive", P) == pytest.approx(0.7)  # a 30% capacity dip suffices
    assert runaway_threshold("fito", P) is None
    cells = {(h, d): r for h, d, r in phase_map("naive", P, headrooms=(1.1, 2.0), dips=(1.0, 0.6))}
    assert cells[(1.1, 0.6)] and not cells[(2.0, 0.6)] and not cells[(1.1, 1.0)]


def test_cli_json_exit_code(tmp_path, capsys) -> None:
    png = tmp_path / "retry.png"
    code = main(["retry", "--steps", "150", "--json", "--plot", str(png)])
    out = json.loads(capsys.readouterr().out)["result"]
    assert code == 1  # a policy ran away
    by = {r["policy"]: r for r in out["results"]}
    assert by["naive"]["runaway"] and not by["fito"]["runaway"]
    assert png.stat().st_size > 1000
    assert main(["retry", "--steps", "150", "--policy", "fito", "--json"]) == 0


def test_tipping_point_predicts_runaway() -> None:
    f_star = critical_backlog(P)
    # pinned (docs/fleet.md quotes "40"): a range such as 30..50 let a retry cost of 2.2 through (31.4)
    assert f_star == pytest.approx(40.25245441795231, rel=1e-9)
    for dip in (0.8, 0.7, 0.5):
        for seed in (0, 1):
            t = simulate("naive", replace(P, dip=dip), seed=seed)
            after_dip = t.failures[P.dip_start + P.dip_steps - 1]
            assert t.runaway == (after_dip > f_star)
    # retries that cost less than the spare capacity can always drain: no tipping point at all
    assert critical_backlog(replace(P, capacity=3.0 * P.jobs)) is None
