"""Benchmark of the theory models: Monte Carlo throughput, closed-form latency at n = 10^7,
the crash search, and one seed of the AdamW skew experiment. Writes benchmarks/results/theory.md.

Run: python benchmarks/theory.py [--quick]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from fito.model.adversary import TemporalBoundary, crash_search
from fito.model.adversary_machines import MachineBilateral
from fito.model.failure_spec import FailureSpec
from fito.model.lattice_closed_form import closed_form, correlation_sweep, section_5_4_table
from fito.model.lattice_monte_carlo import monte_carlo
from fito.model.units import Parallelism, count_units
from fito.model.optimizer_skew import run_experiment
from fito.model.skew_example_6_6 import example_6_6
from fito.model.skew_problem import SkewConfig

OUT = Path(__file__).resolve().parent / "results" / "theory.md"


def time_closed_form(n: int, spec: FailureSpec, reps: int = 2000) -> tuple[float, float]:
    """Median and minimum wall time of one closed-form evaluation, in microseconds."""
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        closed_form(n, spec)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6, min(samples) * 1e6


def time_monte_carlo(n: int, spec: FailureSpec, samples: int) -> tuple[float, float, float]:
    """(state vectors per second, unit draws per second, |MC - closed form| in standard errors)."""
    monte_carlo(n, spec, min(samples, 1000), seed=99)  # warm-up
    t0 = time.perf_counter()
    mc = monte_carlo(n, spec, samples, seed=1)
    dt = time.perf_counter() - t0
    cf = closed_form(n, spec)
    z = abs(mc.rate(mc.mixed) - cf.mixed) / mc.stderr(mc.mixed)
    return samples / dt, samples * n / dt, z


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples and a shorter skew run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines: list[str] = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines += ["## Theory models (`benchmarks/theory.py`)", "",
              f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"torch {torch.__version__}; 1-minute load average at start {load:.2f} "
              "(the machine is shared, so wall times are upper bounds).", ""]

    lines += ["### §5.4 table and corrections 1, 2, 4 (closed forms)", "",
              "| p | paper P(atomic), n=4000 | ours |", "|---|---:|---:|"]
    for r in section_5_4_table(4000):
        lines.append(f"| {r.p} | {r.paper} | {r.ours:.6f} |")
    lines += ["", "Unit count, 70B at TP8 PP4 DP64: literal list "
              f"{count_units(Parallelism()).persistence_units:,}; data iterator per rank "
              f"{count_units(Parallelism(data_state_per_rank=True)).persistence_units:,}; write+fsync counted "
              f"separately {count_units(Parallelism(split_write_fsync=True)).persistence_steps:,}; ZeRO-1 "
              f"{count_units(Parallelism(zero=1)).persistence_units:,}.", "",
              "P(mixed) at n = 4000, p = 0.9999 as dependence varies (same per-unit p):", "",
              "| model | rho | P(all C) | P(mixed) |", "|---|---:|---:|---:|"]
    for model, rhos in (("beta-binomial", (0.0, 1e-3, 1e-2)), ("common-shock", (1e-3, 1e-2)),
                        ("blocks", (1e-3, 1e-2)), ("contention", (-1e-5, -1e-4))):
        for rho, c, m in correlation_sweep(4000, 0.9999, rhos, model).rows:  # type: ignore[arg-type]
            lines.append(f"| {model if rho else 'independent'} | {rho:g} | {c:.4f} | {m:.4f} |")
    lines += ["", "### Closed forms (log space)", "", "| case | median µs | min µs | value |", "|---|---:|---:|---:|"]
    cases = [
        ("binary n=10^7, q=1e-9", 10 ** 7, FailureSpec.binary(1 - 1e-9, q=1e-9)),
        ("binary n=4000, p=0.9999", 4000, FailureSpec.binary(0.9999)),
        ("ternary n=10^7", 10 ** 7, FailureSpec(p_c=1 - 2e-9, p_r=1e-9, p_a=1e-9)),
        ("beta-binomial n=10^7, rho=1e-3", 10 ** 7, FailureSpec.binary(1 - 1e-9, q=1e-9, model="beta-binomial",
                                                                        rho=1e-3)),
        ("blocks(8) n=10^7, rho=1e-2", 10 ** 7, FailureSpec.binary(1 - 1e-9, q=1e-9, model="blocks", rho=1e-2)),
    ]
    for label, n, spec in cases:
        med, lo = time_closed_form(n, spec)
        lines.append(f"| {label} | {med:.1f} | {lo:.1f} | P(mixed) = {closed_form(n, spec).mixed:.6g} |")

    lines += ["", "### Monte Carlo (whole state vectors sampled unit by unit, numpy, 1 process)", "",
              "| case | samples | vectors/s | unit draws/s | MC vs closed form |", "|---|---:|---:|---:|---:|"]
    s = 5_000 if args.quick else 40_000
    mc_cases = [
        ("independent n=4000 p=0.9999", 4000, FailureSpec.binary(0.9999), s),
        ("ternary n=4000 (0.9999, 5e-5, 5e-5)", 4000, FailureSpec(p_c=0.9999, p_r=5e-5, p_a=5e-5), s),
        ("beta-binomial n=4000 rho=1e-3", 4000, FailureSpec.binary(0.9999, model="beta-binomial", rho=1e-3), s),
        ("independent n=100 p=0.99", 100, FailureSpec.binary(0.99), s * 10),
    ]
    for label, n, spec, k in mc_cases:
        vps, dps, z = time_monte_carlo(n, spec, k)
        lines.append(f"| {label} | {k} | {vps:,.0f} | {dps:.3g} | {z:.2f} σ |")

    lines += ["", "### Adversary crash search (every set of ≤ 2 crashed processes × every point of a clean run)", "",
              "| protocol | n | runs | recovered mixed | seconds |", "|---|---:|---:|---:|---:|"]
    for proto in (TemporalBoundary(), MachineBilateral()):
        t0 = time.perf_counter()
        res = crash_search(proto, 3, max_crashes=2)
        lines.append(f"| {proto.name} | 3 | {res.runs} | {res.mixed_recovered} | {time.perf_counter() - t0:.2f} |")

    ex = example_6_6()
    lines += ["", "### Example 6.6 on real AdamW tensors (float64)", "",
              f"fitted factor {ex.fitted_factor:.15f} (b1 (1-b1) = 0.09), max abs error {ex.max_err_factor:.1e}; "
              f"as a multiple of the previous gradient g_t: {ex.fitted_vs_previous_gradient:+.3f}.", ""]

    seeds = [0] if args.quick else [0, 1, 2]
    cfg = SkewConfig()
    t0 = time.perf_counter()
    rep = run_experiment(seeds, cfg)
    dt = time.perf_counter() - t0
    steps = len(seeds) * (cfg.restore_step + 10 * cfg.horizon)
    lines += [f"### AdamW skew experiment ({len(seeds)} seed(s), restore at {cfg.restore_step}, "
              f"{cfg.horizon} steps after, 9 restores + reference)", "",
              f"{dt:.1f} s wall, {steps / dt:,.0f} optimizer steps/s (MLP 16-64-64-1, batch 64, 1 thread).", "",
              "| variant | checker | ‖Δθ‖ k=10 | ‖Δθ‖ k=100 | ‖Δθ‖ k=1000 | Δloss k=10 | Δloss k=100 | Δloss k=1000 "
              "| max loss ratio | spikes |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sm in rep.summaries:
        d, l = sm.param_distance, sm.loss_delta
        lines.append(f"| {sm.variant} | {'rejects' if sm.rejected_by_checker else 'accepts'} | "
                     + " | ".join(f"{d[k]:.3g}" for k in cfg.report_at) + " | "
                     + " | ".join(f"{l[k]:+.3g}" for k in cfg.report_at)
                     + f" | {sm.max_loss_ratio:.2f} | {sm.spike_seeds}/{sm.seeds} |")
    lines.append("")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    assert math.isfinite(dt)


if __name__ == "__main__":
    main()
