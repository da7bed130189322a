"""The epoch lattice (§5): figures the paper states, and THEORY.md corrections 1-4, pinned."""
from __future__ import annotations

import json
import math
from decimal import Decimal, getcontext

import pytest

from fito.cli import main
from fito.model.failure_spec import FailureSpec, shock_probability
from fito.model.lattice import EpochLattice, EpochState, classify
from fito.model.lattice_closed_form import closed_form, correlation_sweep, first_n_below, section_5_4_table
from fito.model.lattice_monte_carlo import monte_carlo
from fito.model.units import Parallelism, count_units

C, A, R = EpochState.C, EpochState.A, EpochState.R


# --- types and classification ---------------------------------------------------------------

def test_lattice_order_top_bottom_and_size() -> None:
    lat = EpochLattice(3)
    assert R < A < C
    assert lat.top == (C, C, C) and lat.bottom == (R, R, R)
    assert lat.size == 27 and EpochLattice(3, ternary=False).size == 8
    assert lat.leq((R, A, C), (A, A, C)) and not lat.leq((C, R, R), (R, C, C))
    assert lat.join((R, A, C), (C, R, A)) == (C, A, C)
    assert lat.meet((R, A, C), (C, R, A)) == (R, R, A)


def test_binary_lattice_rejects_ambiguous_state() -> None:
    with pytest.raises(ValueError, match="positions \\[1\\]"):
        EpochLattice(3, ternary=False).element("CAC")
    with pytest.raises(ValueError, match="expected 3"):
        EpochLattice(3).element("CC")


def test_classification_reports_kind_and_positions_of_a() -> None:
    assert classify("CCCC").kind == "atomic-top"
    assert classify([0, 0, 0]).kind == "atomic-bottom"
    mixed = classify("CRCAA")
    assert mixed.kind == "mixed" and not mixed.atomic
    assert mixed.ambiguous_positions == (3, 4)
    assert (mixed.committed, mixed.reverted) == (2, 1)
    # a single A in an otherwise committed vector breaks operational atomicity
    assert classify("CCAC").kind == "mixed"


# --- closed forms: the paper's figures and corrections 1 and 3 -------------------------------

def test_section_5_4_table_reproduced_to_the_digits_printed() -> None:
    tolerance = {0.999: 5e-5, 0.9999: 5e-6, 0.99999: 5e-4}  # half a unit of the last printed digit
    rows = section_5_4_table(4000)
    assert [r.p for r in rows] == [0.999, 0.9999, 0.99999]
    for row in rows:
        assert abs(row.ours - row.paper) < tolerance[row.p], row
        assert row.ours == pytest.approx(row.p ** 4000, rel=1e-12)  # the all-R term is negligible


def test_correction_1_not_below_067_at_4000() -> None:
    p_all_c = closed_form(4000, FailureSpec.binary(0.9999)).all_c
    assert p_all_c == pytest.approx(0.670307, abs=5e-7)
    assert p_all_c > 0.67  # the paper's "less than 0.67" is false
    assert first_n_below(0.9999, 0.67) == 4005
    assert 0.9999 ** 4004 >= 0.67 > 0.9999 ** 4005
    # near p = 1, P(all C) ~ exp(-n (1 - p))
    assert p_all_c == pytest.approx(math.exp(-4000 * 1e-4), rel=3e-5)


def test_binary_and_ternary_formulas() -> None:
    cf = closed_form(10, FailureSpec.binary(0.7))
    assert cf.all_c == pytest.approx(0.7 ** 10) and cf.all_r == pytest.approx(0.3 ** 10)
    assert cf.mixed == pytest.approx(1 - 0.7 ** 10 - 0.3 ** 10)
    t = closed_form(12, FailureSpec(p_c=0.8, p_r=0.15, p_a=0.05))
    assert t.atomic == pytest.approx(0.8 ** 12 + 0.15 ** 12)
    assert t.any_ambiguous == pytest.approx(1 - 0.95 ** 12)
    # ambiguity can only lower P(atomic) at the same P(C)
    assert t.atomic < closed_form(12, FailureSpec(p_c=0.8, p_r=0.2)).atomic


def test_correction_3_positive_for_finite_n_and_exponential_decay() -> None:
    for n in (10, 1000, 100_000, 10_000_000):
        cf = closed_form(n, FailureSpec.binary(0.999))
        assert cf.log_all_c > -math.inf  # never "measure zero" at finite n
    l1 = closed_form(50_000, FailureSpec.binary(0.999)).log_all_c
    l2 = closed_form(100_000, FailureSpec.binary(0.999)).log_all_c
    assert l2 / l1 == pytest.approx(2.0, rel=1e-12)  # log P is linear in n: exponential decay
    assert closed_form(100_000, FailureSpec.binary(0.999)).all_c == pytest.approx(math.exp(l2))


def test_stable_for_huge_n_and_p_near_one() -> None:
    getcontext().prec = 60
    q = 1e-9
    n = 10 ** 7
    exact_all_c = (Decimal(1) - Decimal(q)) ** n
    cf = closed_form(n, FailureSpec.binary(1 - q, q=q))
    assert cf.all_c == pytest.approx(float(exact_all_c), rel=1e-12)
    assert cf.mixed == pytest.approx(float(1 - exact_all_c), rel=1e-9)
    # p given as a float 1 - 1e-9 keeps ~7 significant digits of q; still within 1e-6 relative
    assert closed_form(n, FailureSpec.binary(1 - 1e-9)).mixed == pytest.approx(cf.mixed, rel=1e-6)


# --- correlated failures: correction 4 -------------------------------------------------------

def test_correction_4_beta_binomial_figures() -> None:
    sweep = correlation_sweep(4000, 0.9999, [0.0, 1e-3, 1e-2], "beta-binomial")
    mixed = [m for _, _, m in sweep.rows]
    assert mixed == pytest.approx([0.330, 0.149, 0.036], abs=5e-4)


@pytest.mark.parametrize("model", ["beta-binomial", "common-shock", "blocks"])
def test_positive_correlation_lowers_p_mixed_at_fixed_p(model: str) -> None:
    sweep = correlation_sweep(4000, 0.9999, [0.0, 1e-4, 1e-3, 1e-2, 0.1], model)  # type: ignore[arg-type]
    mixed = [m for _, _, m in sweep.rows]
    all_c = [c for _, c, _ in sweep.rows]
    assert all(a > b for a, b in zip(mixed, mixed[1:])), mixed  # Remark 5.8 claims the opposite
    assert all(a < b for a, b in zip(all_c, all_c[1:])), all_c
    assert closed_form(4000, FailureSpec.binary(0.9999)).mixed == pytest.approx(mixed[0])


def test_negative_dependence_raises_p_mixed() -> None:
    # contention: units take distinct slots of a pool with a fixed number of failing slots
    sweep = correlation_sweep(4000, 0.9999, [0.0, -1e-5, -5e-5, -1e-4], "contention")
    mixed = [m for _, _, m in sweep.rows]
    assert all(a < b for a, b in zip(mixed, mixed[1:])), mixed
    assert mixed[-1] == pytest.approx(1 - 6001 / 10001, rel=1e-9)  # pool 10001, one bad slot
    with pytest.raises(ValueError, match="pool"):
        closed_form(4000, FailureSpec.binary(0.9999, model="contention", rho=-1e-3))  # rho < -1/(n-1)
    with pytest.raises(ValueError, match="negatively"):
        FailureSpec.binary(0.9, model="contention", rho=0.1)


def test_shock_model_keeps_marginal_and_hits_target_correlation() -> None:
    q, rho = 0.01, 0.2
    s = shock_probability(q, rho)
    q_own = (q - s) / (1 - s)
    assert s + (1 - s) * q_own == pytest.approx(q)
    both = s + (1 - s) * q_own ** 2
    assert (both - q * q) / (q * (1 - q)) == pytest.approx(rho)
    # two units in one shock block: P(all R) is exactly P(both fail)
    assert closed_form(2, FailureSpec.binary(1 - q, model="common-shock", rho=rho)).all_r == pytest.approx(both)


def test_full_correlation_is_all_or_nothing() -> None:
    for model in ("beta-binomial", "common-shock"):
        cf = closed_form(1000, FailureSpec.binary(0.99, model=model, rho=1.0))  # type: ignore[arg-type]
        assert cf.mixed == pytest.approx(0.0, abs=1e-12) and cf.all_c == pytest.approx(0.99)


# --- Monte Carlo agrees with the closed forms ------------------------------------------------

def _agree(n: int, spec: FailureSpec, samples: int, seed: int) -> None:
    cf = closed_form(n, spec)
    mc = monte_carlo(n, spec, samples, seed=seed)
    for key, count in (("all_c", mc.all_c), ("all_r", mc.all_r), ("mixed", mc.mixed),
                       ("any_ambiguous", mc.any_ambiguous)):
        assert abs(mc.rate(count) - getattr(cf, key)) < 5 * mc.stderr(count), (key, mc.rate(count), cf)


def test_monte_carlo_agrees_independent_binary_at_paper_scale() -> None:
    _agree(4000, FailureSpec.binary(0.9999), 8000, seed=1)


def test_monte_carlo_agrees_ternary_and_small_n_bottom() -> None:
    _agree(300, FailureSpec(p_c=0.999, p_r=0.0005, p_a=0.0005), 20000, seed=2)
    _agree(4, FailureSpec.binary(0.6), 20000, seed=3)  # all-R is visible at small n


@pytest.mark.parametrize("model", ["beta-binomial", "common-shock", "blocks"])
def test_monte_carlo_agrees_correlated(model: str) -> None:
    _agree(200, FailureSpec.binary(0.99, model=model, rho=0.05, block_size=8), 20000, seed=4)  # type: ignore[arg-type]


def test_monte_carlo_agrees_contention() -> None:
    _agree(50, FailureSpec.binary(0.9, model="contention", rho=-0.01), 20000, seed=5)
    _agree(10, FailureSpec.binary(0.5, model="contention", rho=-0.02), 40000, seed=6)


# --- unit counter: correction 2 ----------------------------------------------------------------

def test_unit_count_70b_literal_list_is_2241() -> None:
    count = count_units(Parallelism(params=70e9, tp=8, pp=4, dp=64))
    by = {line.component: line.units for line in count.lines}
    assert by == {"weight shards": 32, "first moment m": 32, "second moment v": 32, "gradient buffers": 32,
                  "RNG states": 2048, "data-iterator positions": 64, "metadata record": 1}
    assert count.persistence_units == 2241


def test_unit_count_alternatives_reach_4k() -> None:
    assert count_units(Parallelism(data_state_per_rank=True)).persistence_units == 4225
    split = count_units(Parallelism(split_write_fsync=True))
    assert (split.persistence_units, split.persistence_steps) == (2241, 4482)
    # ZeRO shards optimizer state (1), gradients (2), weights (3) over DP
    assert count_units(Parallelism(zero=1)).persistence_units == 2241 + 2 * 32 * 63
    assert count_units(Parallelism(zero=3)).persistence_units == 2241 + 4 * 32 * 63


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_lattice_json_and_plot(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    png = tmp_path / "atomic.png"
    assert main(["lattice", "--n", "4000", "--p", "0.9999", "--rho", "0.001", "--samples", "500",
                 "--table", "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)["result"]
    assert out["closed_form"]["mixed"] == pytest.approx(0.1486, abs=1e-4)
    assert out["independent_same_p"]["mixed"] == pytest.approx(0.3297, abs=1e-4)
    assert out["monte_carlo"]["samples"] == 500
    assert out["first_n_below_0.67"] == 4005
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_lattice_ternary_table_and_units(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["lattice", "--n", "100", "--ternary", "0.99,0.005,0.005"]) == 0
    assert "P(any A)" in capsys.readouterr().out
    assert main(["units", "--json", "--data-per-rank"]) == 0
    assert json.loads(capsys.readouterr().out)["result"]["persistence_units"] == 4225


def test_cli_lattice_plot_shows_what_was_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The plot is of the requested model: --rho, --ternary and --n each change the image (it used to be
    one fixed picture of the independent model, so it could never show correction 4)."""
    runs = {"default": [], "rho": ["--rho", "0.01"], "ternary": ["--ternary", "0.9999,0.00005,0.00005"],
            "n": ["--n", "100"], "model": ["--rho", "0.01", "--model", "common-shock"]}
    images = {}
    for name, extra in runs.items():
        png = tmp_path / f"{name}.png"
        assert main(["lattice", "--plot", str(png), *extra]) == 0
        images[name] = png.read_bytes()
        assert images[name][:8] == b"\x89PNG\r\n\x1a\n"
    assert len(set(images.values())) == len(runs), "two different requests drew the same image"
    again = tmp_path / "again.png"
    assert main(["lattice", "--plot", str(again), "--rho", "0.01"]) == 0
    assert again.read_bytes() == images["rho"]  # deterministic: the difference is the request, not noise
