"""`fito retry`: the §8 retry-amplification loop, and recovery policies that do not run away."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from fito.commands._contract import UsageError, finish
from fito.model.retry import POLICIES, RetryParams, RetryTrace, critical_backlog, phase_map, simulate


def register(subparsers: argparse._SubParsersAction) -> None:
    d = RetryParams()
    parser = subparsers.add_parser(
        "retry",
        help="simulate checkpoint failure -> retry -> load -> more failures, and bounded policies (paper §8)",
        description=(
            "JOBS jobs share a store of CAPACITY load units per step; each writes one checkpoint per step. "
            "Operations fail with p0 plus the share of load over capacity. naive: every failure restarts at "
            "once (RETRY_COST units); backoff: exponential backoff with full jitter; budget: bounded retries "
            "per step, then fall back one epoch (keep the last committed checkpoint); fito: all three. A "
            "capacity dip of DIP x for DIP_STEPS steps is the trigger. Exit code 1 if any simulated policy "
            "ran away (verdict violated), 0 if every one stayed stable."
        ),
    )
    parser.add_argument("--policy", choices=[*POLICIES, "all"], default="all", help="policy to simulate (default all)")
    parser.add_argument("--jobs", type=int, default=d.jobs, help=f"jobs sharing the store (default {d.jobs})")
    parser.add_argument("--capacity", type=float, default=d.capacity,
                        help=f"load units the store serves per step (default {d.capacity:g})")
    parser.add_argument("--retry-cost", type=float, default=d.retry_cost,
                        help=f"load units of one naive retry: re-read + re-write (default {d.retry_cost:g})")
    parser.add_argument("--p0", type=float, default=d.p0, help="base failure probability per operation")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"simulated steps (default {d.steps})")
    parser.add_argument("--dip", type=float, default=d.dip, help="capacity multiplier during the dip")
    parser.add_argument("--dip-start", type=int, default=d.dip_start, help=f"first step of the dip (default {d.dip_start})")
    parser.add_argument("--dip-steps", type=int, default=d.dip_steps, help=f"length of the dip in steps (default {d.dip_steps})")
    parser.add_argument("--budget", type=float, default=d.budget, help="retries per step / jobs")
    parser.add_argument("--max-attempts", type=int, default=d.max_attempts,
                        help=f"attempts per checkpoint before falling back one epoch (default {d.max_attempts})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--sweep", action="store_true",
                        help="also map runaway vs stable over headroom (capacity/jobs) x dip")
    parser.add_argument("--json", action="store_true", help="print the JSON envelope only")
    parser.add_argument("--plot", type=str, default=None, help="write a PNG of failure fraction and load per step")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    policies = list(POLICIES) if args.policy == "all" else [args.policy]
    try:
        params = RetryParams(
            jobs=args.jobs, capacity=args.capacity, retry_cost=args.retry_cost, p0=args.p0, steps=args.steps,
            dip=args.dip, dip_start=args.dip_start, dip_steps=args.dip_steps, budget=args.budget,
            max_attempts=args.max_attempts,
        )
        traces = [simulate(p, params, seed=args.seed) for p in policies]
        sweep = {p: phase_map(p, params, seed=args.seed) for p in policies} if args.sweep else None
    except (ValueError, ZeroDivisionError) as exc:
        raise UsageError(f"bad parameters: {exc}") from exc
    if args.plot:
        _plot(traces, args.plot)
    runaway = any(t.runaway for t in traces)
    verdict = "violated" if runaway else "holds"  # the claim checked: every simulated policy stays stable
    tipping = critical_backlog(params)
    if args.json:
        out: dict[str, object] = {"params": vars(params), "results": [t.summary() for t in traces], "plot": args.plot,
                                  "naive_tipping_backlog": tipping}
        if sweep is not None:
            out["sweep"] = {p: [{"headroom": h, "dip": d, "runaway": r} for h, d, r in cells] for p, cells in sweep.items()}
        return finish(args, verdict, out)
    console = Console(width=max(Console().width, 120), highlight=False)
    table = Table(title=(f"{params.jobs} jobs, capacity {params.capacity:g}, retry cost {params.retry_cost:g}, "
                         f"p0 {params.p0:g}, capacity x{params.dip:g} for steps {params.dip_start}.."
                         f"{params.dip_start + params.dip_steps - 1}, seed {args.seed}"))
    for col in ("policy", "outcome", "fail fraction (last 50 steps)", "recovery (steps after dip)",
                "peak load/capacity", "retries", "fell back one epoch", "retry backlog at end"):
        table.add_column(col, justify="left" if col in ("policy", "outcome") else "right")
    for t in traces:
        s = t.summary()
        table.add_row(t.policy, "[red]RUNAWAY[/red]" if t.runaway else "[green]stable[/green]",
                      f"{s['tail_fail_fraction']:.3f}", "never" if s["recovery_steps"] is None else str(s["recovery_steps"]),
                      f"{s['peak_load_over_capacity']:.2f}", str(s["total_retries"]), str(s["total_fallbacks"]),
                      str(s["final_backlog"]))
    console.print(table)
    if tipping is None:
        console.print("naive loop: no tipping point (retries can always drain at full capacity)")
    else:
        console.print(f"naive loop tipping point (mean field, full capacity): a backlog above {tipping:.0f} failed "
                      f"operations grows every step instead of draining")
    if sweep is not None:
        for p, cells in sweep.items():
            grid = Table(title=f"{p}: runaway (X) or stable (.) by headroom and dip")
            dips = sorted({d for _, d, _ in cells}, reverse=True)
            grid.add_column("capacity/jobs")
            for dv in dips:
                grid.add_column(f"dip x{dv:g}", justify="center")
            for h in sorted({h for h, _, _ in cells}):
                grid.add_row(f"{h:g}", *["X" if r else "." for hh, dd, r in cells if hh == h])
            console.print(grid)
    if args.plot:
        console.print(f"plot written to {args.plot}")
    return finish(args, verdict, None)


# Policies whose traces coincide (budget and fito differ only in backoff, which a budget rarely reaches)
# must both stay visible: a wide pale line under a narrow dashed one, and markers every few steps.
_STYLE = {"naive": dict(linestyle="-", linewidth=1.6),
          "backoff": dict(linestyle="-", linewidth=1.2, marker="s", markersize=3),
          "budget": dict(linestyle="-", linewidth=5, alpha=0.35),
          "fito": dict(linestyle="--", linewidth=1.3, marker="o", markersize=3)}


def _plot(traces: list[RetryTrace], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.4))
    p = traces[0].params
    every = max(1, p.steps // 25)
    for t in traces:
        style = dict(_STYLE.get(t.policy, {}))
        if "marker" in style:
            style["markevery"] = every
        a1.plot(t.fail_fraction, label=t.policy, **style)
        a2.plot(t.load / t.capacity, label=t.policy, **style)
    for ax in (a1, a2):
        ax.axvspan(p.dip_start, p.dip_start + p.dip_steps, color="grey", alpha=0.2, label="capacity dip")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    a2.axhline(1.0, color="black", linewidth=0.8, linestyle=":", label="load = capacity")
    a1.set_title("failed fraction of operations")
    a1.set_ylabel("failed operations / all operations")
    a1.set_ylim(-0.02, 1.02)
    a2.set_title("load / capacity (log scale)")
    a2.set_ylabel("load units used / capacity")
    a2.set_yscale("log")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    fig.suptitle(f"{p.jobs} jobs, capacity {p.capacity:g}, retry cost {p.retry_cost:g}, capacity x{p.dip:g} "
                 f"for {p.dip_steps} steps from step {p.dip_start}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
