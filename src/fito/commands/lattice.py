"""`fito lattice`: the §5 epoch-lattice probabilities, closed form beside Monte Carlo."""
from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from fito.commands._contract import UsageError, finish
from fito.model.failure_spec import MODELS, FailureSpec
from fito.model.lattice_closed_form import closed_form, first_n_below, section_5_4_table
from fito.model.lattice_monte_carlo import monte_carlo


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lattice",
        help="P(atomic) / P(mixed) on the epoch lattice (paper §5), closed form and Monte Carlo",
        description=(
            "Probability that a checkpoint attempt over N persistence units lands on the top (all C), "
            "the bottom (all R) or the mixed interior of the epoch lattice. Closed forms are computed in "
            "log space (exact for N up to 1e7, p up to 1-1e-9); --samples adds a Monte Carlo estimate. "
            "With --rho, failures are positively correlated at the same per-unit p: this LOWERS P(mixed) "
            "(correction 4 in docs/corrections.md, the opposite of the paper's Remark 5.8)."
        ),
    )
    parser.add_argument("--n", type=int, default=4000, help="number of persistence units (default 4000)")
    parser.add_argument("--p", type=float, default=0.9999, help="per-unit commit probability (binary model)")
    parser.add_argument("--q", type=float, default=None,
                        help="per-unit failure probability 1-p, given directly to keep its digits (overrides --p)")
    parser.add_argument("--ternary", type=str, default=None, metavar="PC,PR,PA",
                        help="ternary model: probabilities of C, R and A (sum 1)")
    parser.add_argument("--rho", type=float, default=0.0,
                        help="pairwise failure correlation (default 0; negative only with --model contention)")
    parser.add_argument("--model", choices=[m for m in MODELS if m != "independent"], default="beta-binomial",
                        help="dependence model used when --rho != 0 (contention: negative dependence)")
    parser.add_argument("--block-size", type=int, default=8, help="units per failure block for --model blocks")
    parser.add_argument("--samples", type=int, default=0, help="Monte Carlo samples (0 = closed form only)")
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo seed (default 0)")
    parser.add_argument("--table", action="store_true", help="also print the paper's §5.4 table, recomputed")
    parser.add_argument("--json", action="store_true", help="print the JSON envelope only")
    parser.add_argument("--plot", type=str, default=None, metavar="FILE",
                        help="write a PNG of the requested model: P(atomic), P(mixed) vs n, and the outcomes at --n")
    parser.set_defaults(handler=run)


def _spec(args: argparse.Namespace) -> FailureSpec:
    if args.ternary:
        try:
            pc, pr, pa = (float(x) for x in args.ternary.split(","))
        except ValueError as exc:
            raise UsageError(f"--ternary expects three numbers PC,PR,PA, got {args.ternary!r}") from exc
        if args.rho:
            raise UsageError("--rho applies to the binary model only; drop --ternary or --rho")
        return FailureSpec(p_c=pc, p_r=pr, p_a=pa)
    model = args.model if args.rho != 0 else "independent"
    return FailureSpec.binary(args.p, q=args.q, model=model, rho=args.rho, block_size=args.block_size)


def run(args: argparse.Namespace) -> int:
    try:
        spec = _spec(args)
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        t0 = time.perf_counter()
        cf = closed_form(args.n, spec)
        cf_seconds = time.perf_counter() - t0
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    indep = closed_form(args.n, FailureSpec(p_c=spec.p_c, p_r=spec.p_r, p_a=spec.p_a)) if spec.rho else None
    mc = monte_carlo(args.n, spec, args.samples, seed=args.seed) if args.samples > 0 else None
    out: dict[str, object] = {"closed_form": cf.to_dict(), "closed_form_seconds": cf_seconds}
    if indep is not None:
        out["independent_same_p"] = indep.to_dict()
    if mc is not None:
        out["monte_carlo"] = mc.to_dict()
    if 0 < spec.p_c < 1:
        out["first_n_below_0.67"] = first_n_below(spec.p_c, 0.67) if spec.p_a == 0 else None
    if args.table:
        out["table_5_4"] = [r.__dict__ for r in section_5_4_table()]
    if args.plot:
        from fito.model.plots import plot_lattice  # matplotlib only when asked

        plot_lattice(args.plot, args.n, spec, mc)
        out["plot"] = args.plot
    if args.json:
        return finish(args, "ok", out)

    console = Console(width=max(Console().width, 100))
    title = f"epoch lattice, n = {args.n}, " + (
        f"ternary (C,R,A) = ({spec.p_c}, {spec.p_r}, {spec.p_a})" if spec.p_a or args.ternary
        else f"p = {spec.p_c!r}" + (f", {spec.model} rho = {spec.rho}" if spec.rho else ", independent"))
    console.print(f"[bold]{title}[/bold]")
    table = Table()
    table.add_column("event")
    table.add_column("closed form", justify="right")
    if indep is not None:
        table.add_column("independent, same p", justify="right")
    if mc is not None:
        table.add_column(f"Monte Carlo ({mc.samples} samples)", justify="right")
    rows = [("P(all C)  top", "all_c"), ("P(all R)  bottom", "all_r"), ("P(atomic)", "atomic"),
            ("P(mixed)", "mixed")]
    if spec.p_a:
        rows.append(("P(any A)", "any_ambiguous"))
    for label, key in rows:
        cells = [label, _fmt(getattr(cf, key))]
        if indep is not None:
            cells.append(_fmt(getattr(indep, key)))
        if mc is not None:
            count = {"all_c": mc.all_c, "all_r": mc.all_r, "mixed": mc.mixed, "any_ambiguous": mc.any_ambiguous,
                     "atomic": mc.all_c + mc.all_r}[key]
            cells.append(f"{mc.rate(count):.5g} ± {mc.stderr(count):.2g}")
        table.add_row(*cells)
    console.print(table)
    console.print(f"closed form evaluated in {cf_seconds * 1e6:.1f} µs; "
                  f"log P(all C) = {cf.log_all_c:.6g}, log P(all R) = {cf.log_all_r:.6g}")
    if out.get("first_n_below_0.67"):
        console.print(f"independent model: P(all C) = p^n < 0.67 first at n = {out['first_n_below_0.67']} for this p")
    if args.table:
        console.print("[bold]§5.4 table recomputed (n = 4000)[/bold]")
        t = Table()
        for col in ("p", "paper", "ours p^n + (1-p)^n", "exp(-n(1-p))", "P(mixed)"):
            t.add_column(col, justify="right")
        for r in section_5_4_table():
            t.add_row(str(r.p), str(r.paper), f"{r.ours:.6f}", f"{r.approx_exp:.6f}", f"{r.mixed:.6f}")
        console.print(t)
        console.print("0.9999^4000 = 0.670307 is NOT below 0.67 (correction 1)")
    if args.plot:
        console.print(f"plot written to {args.plot}")
    return finish(args, "ok", None)


def _fmt(x: float) -> str:
    return f"{x:.6g}" if x == 0 or x >= 1e-4 else f"{x:.4e}"

