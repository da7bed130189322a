"""§6 with real torch.optim.AdamW: Example 6.6's 0.09, the epoch-type checker, corrections 8 and 9."""
from __future__ import annotations

import json

import pytest
import torch

from fito.cli import main
from fito.errors import FitoError
from fito.model.epoch_typed import EpochTypedState, MixedEpochError, Tagged, check_epoch_consistent
from fito.model.optimizer_skew import run_experiment
from fito.model.skew_example_6_6 import example_6_6, m_skew_decay
from fito.model.skew_problem import Problem, Run, SkewConfig, train_to_restore
from fito.model.skew_variants import build_variant, variants


def test_example_6_6_factor_is_exactly_b1_times_1_minus_b1() -> None:
    ex = example_6_6(t=20, seed=0, dtype=torch.float64)
    assert ex.beta1 * (1 - ex.beta1) == pytest.approx(0.09, abs=1e-15)
    assert ex.fitted_factor == pytest.approx(0.09, abs=1e-12)
    assert ex.max_err_factor < 1e-12 * max(1.0, ex.scale)
    assert ex.max_err_identity < 1e-12 * max(1.0, ex.scale)  # = b1 (m_{t-1} - m_t)
    # correction 8: it is 9% of (m_{t-1} - g_t), not "9% of the previous gradient"
    assert abs(ex.fitted_vs_previous_gradient - 0.09) > 0.05


def test_example_6_6_holds_in_float32_to_rounding() -> None:
    ex = example_6_6(t=30, seed=1, dtype=torch.float32)
    assert ex.fitted_factor == pytest.approx(0.09, rel=1e-5)


def test_m_skew_decays_as_beta1_power_and_weight_offset_stays_bounded() -> None:
    d = m_skew_decay(seed=0, t=60, steps=80)
    for k, r in enumerate(d.m_ratio, start=1):
        assert r == pytest.approx(d.beta1 ** k, rel=1e-9)  # Adam forgets: no compounding in m
    # the weight offset converges (geometric sum), it does not grow without bound
    assert abs(d.theta_offset[-1] - d.theta_offset[-11]) < 0.01 * d.theta_offset[-1]


def test_checker_rejects_mixed_tuples_and_names_the_component() -> None:
    state = EpochTypedState({c: Tagged(None, 7) for c in ("theta", "m", "v", "step", "data_position", "rng")})
    assert check_epoch_consistent(state) == 7
    state.components["m"] = Tagged(None, 6)
    with pytest.raises(MixedEpochError, match="m from epoch 6") as info:
        check_epoch_consistent(state)
    assert info.value.tags["m"] == 6 and info.value.tags["theta"] == 7
    del state.components["rng"]
    with pytest.raises(FitoError, match="rng"):
        check_epoch_consistent(state)


def test_every_variant_classified_and_validation_loss_is_blind_to_optimizer_mixes() -> None:
    cfg = SkewConfig(restore_step=60, v_lag=50, data_lag=10, horizon=1)
    problem = Problem(cfg, seed=3)
    ref, history = train_to_restore(problem)
    ref_loss = problem.eval_loss(ref.model)
    rejected, same_loss = set(), set()
    for v in variants(cfg):
        state, _ = build_variant(v.name, cfg, history)
        run = Run(problem)
        try:
            run.restore(state, strict=True)
        except MixedEpochError:
            rejected.add(v.name)
            run.restore(state, strict=False)
        if problem.eval_loss(run.model) == ref_loss:
            same_loss.add(v.name)
    mixes = {v.name for v in variants(cfg) if v.kind == "mix"}
    assert rejected == mixes == {"m_prev", "v_stale", "weights_stale", "data_stale", "zero_opt_step_kept"}
    # correction 9: the §9.3 forward-pass check sees nothing unless the weights themselves are mixed
    assert {"m_prev", "v_stale", "data_stale", "zero_opt_step_kept", "correct"} <= same_loss
    assert "weights_stale" not in same_loss


@pytest.fixture(scope="module")
def small_report():  # type: ignore[no-untyped-def]
    cfg = SkewConfig(horizon=40, report_at=(10, 40))
    return run_experiment([0, 1, 2], cfg, names=["correct", "m_prev", "v_stale", "zero_opt_step_kept"])


def test_correct_resume_is_bit_identical(small_report) -> None:  # type: ignore[no-untyped-def]
    ref = {t.seed: t for t in small_report.trajectories if t.variant == "uninterrupted"}
    for t in small_report.trajectories:
        if t.variant == "correct":
            assert all(d == 0.0 for d in t.param_distance.values())
            assert t.eval_loss == ref[t.seed].eval_loss


def test_scale_breaking_mixes_spike_and_one_step_m_skew_does_not(small_report) -> None:  # type: ignore[no-untyped-def]
    by = {s.variant: s for s in small_report.summaries}
    assert by["zero_opt_step_kept"].spike_seeds >= 2  # loss > 2x the correct run in most seeds
    assert by["v_stale"].max_loss_ratio > 1.5
    assert by["m_prev"].spike_seeds == 0 and by["m_prev"].max_loss_ratio < 1.2
    assert by["m_prev"].param_distance[10] < by["zero_opt_step_kept"].param_distance[10] / 10
    assert all(by[n].rejected_by_checker for n in ("m_prev", "v_stale", "zero_opt_step_kept"))
    assert not by["correct"].rejected_by_checker


def test_cli_skew_json_small(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["skew", "--seeds", "1", "--restore-step", "40", "--v-lag", "30", "--data-lag", "5",
                 "--horizon", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["result"]
    assert out["example_6_6"]["fitted_factor"] == pytest.approx(0.09, abs=1e-12)
    names = [s["variant"] for s in out["summaries"]]
    assert names[0] == "correct" and len(names) == 9
    assert out["summaries"][0]["param_distance"]["10"] == 0.0


def test_correction_12_scale_breaking_mixes_show_at_once(small_report) -> None:  # type: ignore[no-untyped-def]
    """Remark 6.5's "may not manifest for many subsequent steps" is contradicted (docs/corrections.md
    correction 12): the onsets docs/theory.md quotes. zero_opt_step_kept is above 2x the correct loss at
    k = 1 in every seed; v_stale passes 2x by k = 6 in seeds 0 and 1 and peaks within 20 steps; m_prev
    never reaches 1.1x."""
    correct = {t.seed: t for t in small_report.trajectories if t.variant == "correct"}

    def ratios(variant: str, seed: int) -> dict[int, float]:
        t = next(t for t in small_report.trajectories if t.variant == variant and t.seed == seed)
        return {k: t.eval_loss[k] / correct[seed].eval_loss[k] for k in sorted(t.eval_loss)}

    for seed in (0, 1, 2):
        zero = ratios("zero_opt_step_kept", seed)
        assert zero[1] > 2.0 and max(zero, key=zero.get) <= 20
        assert max(ratios("m_prev", seed).values()) < 1.1
    for seed in (0, 1):
        v = ratios("v_stale", seed)
        assert min(k for k, r in v.items() if r > 2.0) <= 6 and max(v, key=v.get) <= 20
