"""Figures the docs quote, pinned where they are quoted: docs/theory.md, docs/fleet.md and BENCHMARKS.md.
Each value below comes from the document named beside it; a change to a model that moves one fails here,
and then the document must change with the code (re-run the command shown, paste the new output)."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from fito.model.adversary import attempt_outcomes, crash_search
from fito.model.adversary_machines import make_protocol
from fito.model.fleet import MODES, simulate as simulate_fleet
from fito.model.failure_spec import FailureSpec
from fito.model.lattice_closed_form import closed_form
from fito.model.retry import RetryParams, critical_backlog, simulate as simulate_retry

DOCS = Path(__file__).resolve().parents[2] / "docs"


# ---- docs/theory.md, "The Theorem 4.2 adversary" -------------------------------------------------------
def test_adversary_crash_search_counts() -> None:
    """`fito adversary --protocol bilateral --search`: 7,920 runs, 0 mixed, 6,882 aborted + 1,038 committed
    (from the machines' command order since issue 16; the narrative gave 8,816 runs, 8,254 + 562);
    temporal: 2,524 mixed recoveries out of 2,790 (the same with in-place or versioned files)."""
    bilateral = crash_search(make_protocol("bilateral", "versioned"), 3)
    assert (bilateral.runs, bilateral.mixed_recovered) == (7920, 0)
    assert bilateral.recovered_kinds == {"atomic-bottom": 6882, "atomic-top": 1038}
    for storage in ("in-place", "versioned"):
        temporal = crash_search(make_protocol("temporal", storage), 3)
        assert (temporal.runs, temporal.mixed_recovered) == (2790, 2524)
        assert temporal.recovered_kinds == {"mixed": 2524, "atomic-top": 266}


def test_adversary_random_attempts() -> None:
    """`fito adversary --protocol bilateral --n 10 --q 0.05 --attempts 2000`: durable state mixed in 0.3945,
    recovered mixed 0, fell back 0.3945, committed 0.6055; temporal recovers 789 of 2000 mixed."""
    b = attempt_outcomes(make_protocol("bilateral", "versioned"), 10, 0.05, 2000, seed=0)
    assert b.durable.get("mixed", 0) == 789 and b.recovered.get("mixed", 0) == 0
    assert (b.recovered.get("atomic-bottom", 0), b.recovered.get("atomic-top", 0)) == (789, 1211)
    t = attempt_outcomes(make_protocol("temporal", "in-place"), 10, 0.05, 2000, seed=0)
    assert t.recovered.get("mixed", 0) == t.durable.get("mixed", 0) == 789


# ---- docs/theory.md correction 4 and BENCHMARKS.md "P(mixed) ... as dependence varies" -----------------
@pytest.mark.parametrize(("model", "rho", "all_c", "mixed"), [
    ("independent", 0.0, 0.6703, 0.3297),
    ("beta-binomial", 1e-3, 0.8514, 0.1486),
    ("beta-binomial", 1e-2, 0.9638, 0.0362),
    ("common-shock", 1e-3, 0.6706, 0.3294),
    ("common-shock", 1e-2, 0.6730, 0.3270),
    ("blocks", 1e-3, 0.6705, 0.3295),
    ("blocks", 1e-2, 0.6727, 0.3273),
    ("contention", -1e-5, 0.6648, 0.3352),
    ("contention", -1e-4, 0.6000, 0.4000),
])
def test_dependence_table(model: str, rho: float, all_c: float, mixed: float) -> None:
    cf = closed_form(4000, FailureSpec.binary(0.9999, model=model, rho=rho))  # type: ignore[arg-type]
    assert cf.all_c == pytest.approx(all_c, abs=5e-5) and cf.mixed == pytest.approx(mixed, abs=5e-5)


def test_closed_forms_at_ten_million_units() -> None:
    """BENCHMARKS.md "Closed forms (log space)": the values column."""
    q = 1e-9
    cases = [(FailureSpec.binary(1 - q, q=q), 0.00995017),
             (FailureSpec(p_c=1 - 2 * q, p_r=q, p_a=q), 0.0198013),
             (FailureSpec.binary(1 - q, q=q, model="beta-binomial", rho=1e-3), 9.2068e-06),
             (FailureSpec.binary(1 - q, q=q, model="blocks", rho=1e-2), 0.00986353)]
    for spec, mixed in cases:
        assert closed_form(10 ** 7, spec).mixed == pytest.approx(mixed, rel=5e-6)


# ---- docs/fleet.md, `fito fleet --nodes 64 --loss 0.01,0.1,0.3 --runs 1000` ---------------------------
def _fleet_doc_rows() -> list[list[str]]:
    text = (DOCS / "fleet.md").read_text()
    block = text.split("$ fito fleet --nodes 64 --loss 0.01,0.1,0.3 --runs 1000", 1)[1].split("```", 1)[0]
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in block.splitlines()
            if re.match(r"\s*│\s*[\d.]+\s*│", line)]


def test_fleet_table_in_the_docs_is_what_the_simulation_prints() -> None:
    rows = _fleet_doc_rows()
    assert len(rows) == 12
    losses = (0.01, 0.1, 0.3)
    for li, loss in enumerate(losses):  # the seeds `fito fleet` uses: seed + 1000 * loss index + mode index
        for mi, mode in enumerate(MODES):
            s = simulate_fleet(mode, nodes=64, loss=loss, runs=1000, seed=1000 * li + mi).summary()
            printed = [f"{s['loss']:g}", s["mode"], str(s["runs_with_mixed"]),
                       f"{s['mixed']['mean']:.2f} [{s['mixed']['p99']:g}]",
                       f"{s['aborted']['mean']:.2f} [{s['aborted']['p99']:g}]", f"{s['fenced']['mean']:.1f}",
                       f"{s['converge_ticks']['mean']:.2f} [{s['converge_ticks']['p99']:g}]",
                       f"{s['messages']['mean']:.0f}"]
            assert printed == rows[li * len(MODES) + mi], (loss, mode)


# ---- docs/fleet.md, `fito retry` ------------------------------------------------------------------------
def test_retry_tipping_point_is_pinned() -> None:
    """"a backlog above 40 failed operations": the mean-field tipping point of the defaults, exactly. The
    old check (30 < f* < 50) let a retry cost of 2.2 instead of 2.0 through (f* = 31.4)."""
    assert critical_backlog(RetryParams()) == pytest.approx(40.25245441795231, rel=1e-9)
    assert critical_backlog(replace(RetryParams(), retry_cost=2.2)) == pytest.approx(31.434830230010938, rel=1e-9)


def test_retry_table_in_the_docs() -> None:
    """The default `fito retry` rows: (outcome, tail fail fraction, peak load/capacity, retries, fell back,
    backlog at end)."""
    expected = {"naive": (True, 0.991, 131.88, 1060484, 0, 8547), "backoff": (True, 0.914, 12.77, 116816, 0, 7390),
                "budget": (False, 0.010, 1.85, 371, 191, 1), "fito": (False, 0.011, 1.85, 371, 204, 1)}
    for policy, (runaway, tail, peak, retries, fallbacks, backlog) in expected.items():
        t = simulate_retry(policy, RetryParams(), seed=0)
        s = t.summary()
        assert t.runaway == runaway
        assert round(s["tail_fail_fraction"], 3) == tail and round(s["peak_load_over_capacity"], 2) == peak
        assert (s["total_retries"], s["total_fallbacks"], s["final_backlog"]) == (retries, fallbacks, backlog)
