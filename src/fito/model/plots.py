"""Figures of the theory models, drawn from what the commands computed (matplotlib, Agg, imported lazily):
`fito lattice --plot` and `fito skew --plot`. Kept apart from the models so they stay free of plotting."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from fito.model.failure_spec import FailureSpec
from fito.model.lattice_closed_form import closed_form
from fito.model.lattice_monte_carlo import MonteCarloResult

if TYPE_CHECKING:
    from fito.model.optimizer_skew import SkewReport


def describe_spec(spec: FailureSpec) -> str:
    """One line naming the model, as the plot title and the CLI print it."""
    if spec.p_a:
        return f"ternary (C, R, A) = ({spec.p_c:g}, {spec.p_r:g}, {spec.p_a:g})"
    text = f"p = {spec.p_c!r}"
    if spec.effectively_independent:
        return text + ", independent"
    return text + f", {spec.model} rho = {spec.rho:g}" + (f" (blocks of {spec.block_size})" if spec.model == "blocks" else "")


def plot_lattice(path: str, n: int, spec: FailureSpec, mc: MonteCarloResult | None = None) -> None:
    """What `fito lattice` computed, drawn: P(atomic) and P(mixed) against n for the requested model
    (with the independent model at the same per-unit p beside it when failures are correlated, which
    is correction 4 in one picture), the requested n marked; and the four outcomes at that n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_max = max(10 * n, 10_000)
    ns = np.unique(np.logspace(0, math.log10(n_max), 300).astype(int))
    indep = FailureSpec(p_c=spec.p_c, p_r=spec.p_r, p_a=spec.p_a)
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1.6, 1]})
    curves = [(spec, "-", describe_spec(spec))]
    if not spec.effectively_independent:
        curves.append((indep, "--", "independent, same p"))
    for s, style, label in curves:
        probs = [closed_form(int(k), s) for k in ns]
        ax.plot(ns, [c.atomic for c in probs], style, color="tab:blue", label=f"P(atomic), {label}")
        ax.plot(ns, [c.mixed for c in probs], style, color="tab:red", label=f"P(mixed), {label}")
    at = closed_form(n, spec)
    ax.axvline(n, color="grey", linestyle=":", linewidth=1)
    ax.plot([n, n], [at.atomic, at.mixed], "o", color="black", zorder=5)
    ax.annotate(f"n = {n:,}: P(atomic) {at.atomic:.4g}", (n, at.atomic), textcoords="offset points",
                xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("persistence units n")
    ax.set_ylabel("probability")
    ax.set_title(describe_spec(spec), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left")

    labels = ["all C (top)", "all R (bottom)", "mixed"] + (["any A"] if spec.p_a else [])
    values = [at.all_c, at.all_r, at.mixed] + ([at.any_ambiguous] if spec.p_a else [])
    xs = np.arange(len(labels))
    width = 0.38 if mc is not None else 0.6
    bars.bar(xs - (width / 2 if mc is not None else 0), values, width, label="closed form", color="tab:blue")
    if mc is not None:
        counts = [mc.all_c, mc.all_r, mc.mixed] + ([mc.any_ambiguous] if spec.p_a else [])
        bars.bar(xs + width / 2, [mc.rate(c) for c in counts], width, yerr=[mc.stderr(c) for c in counts],
                 label=f"Monte Carlo ({mc.samples:,})", color="tab:orange")
        bars.legend(fontsize=8)
    for x, v in zip(xs, values):
        bars.text(x, v + 0.02, f"{v:.4g}", ha="center", fontsize=8)
    bars.set_xticks(xs, labels)
    bars.set_ylim(0, 1.1)
    bars.set_ylabel("probability")
    bars.set_title(f"outcome of one attempt at n = {n:,}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_report(report: SkewReport, path: str) -> None:
    """Parameter distance and eval-loss ratio to the correct run against steps after restore, and the
    table's "max loss ratio" (median over seeds of each seed's peak ratio) as bars. The middle panel's
    bold line is the median at each step: seeds peak at different steps, so its peak is lower than the
    table's number; the thin lines are the seeds themselves, whose peaks the table summarises."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fito.model.skew_variants import variants  # torch: only when a skew plot is drawn

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    ks = report.config.eval_points()
    correct = {t.seed: t for t in report.trajectories if t.variant == "correct"}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shown = [v for v in variants(report.config) if v.name != "correct"
             and any(t.variant == v.name for t in report.trajectories)]
    for i, v in enumerate(shown):
        colour = colours[i % len(colours)]
        rows = [t for t in report.trajectories if t.variant == v.name]
        style = "-" if v.kind == "mix" else "--"
        dist = [np.median([t.param_distance[k] for t in rows]) for k in ks]
        per_seed = [[t.eval_loss[k] / correct[t.seed].eval_loss[k] for k in ks] for t in rows]
        ax1.plot(ks, np.maximum(dist, 1e-12), style, color=colour, label=v.name)
        for ratios in per_seed:
            ax2.plot(ks, ratios, style, color=colour, linewidth=0.6, alpha=0.35)
        ax2.plot(ks, np.median(per_seed, axis=0), style, color=colour, linewidth=2, label=v.name)
    ax1.set(xscale="log", yscale="log", xlabel="steps after restore",
            ylabel="||theta - theta_correct|| (median over seeds)", title="parameter distance to the correct resume")
    ax2.set(xscale="log", yscale="log", xlabel="steps after restore",
            ylabel="eval loss / correct eval loss",
            title="held-out loss ratio (bold: median at each step; thin: each seed)")
    ax2.axhline(1.0, color="grey", linewidth=0.8)
    ax2.axhline(report.config.spike_ratio, color="red", linewidth=0.8, linestyle=":")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)

    by_name = {s.variant: s for s in report.summaries}
    names = [v.name for v in shown if v.name in by_name]
    values = [by_name[n].max_loss_ratio for n in names]
    ys = np.arange(len(names))
    ax3.barh(ys, values, color=[colours[shown.index(next(v for v in shown if v.name == n)) % len(colours)]
                                for n in names])
    for y, n, val in zip(ys, names, values):
        s = by_name[n]
        ax3.text(val, y, f" {val:.2f}  ({s.spike_seeds}/{s.seeds} spike)", va="center", fontsize=8)
    ax3.axvline(1.0, color="grey", linewidth=0.8)
    ax3.axvline(report.config.spike_ratio, color="red", linewidth=0.8, linestyle=":",
                label=f"spike: > {report.config.spike_ratio:g}x")
    ax3.set_yticks(ys, names, fontsize=8)
    ax3.invert_yaxis()
    ax3.set_xlim(0, max(values + [report.config.spike_ratio]) * 1.45)
    ax3.set_xlabel("max loss ratio: median over seeds of each seed's peak")
    ax3.set_title("the table's \"max loss ratio\"")
    ax3.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"AdamW mixed-epoch restores at step {report.config.restore_step} "
                 f"({len(report.seeds)} seeds; solid = mixed tuple, dashed = baseline)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
