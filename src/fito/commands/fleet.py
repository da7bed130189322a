"""`fito fleet`: the §7/§9.2 fleet-update simulation (naive broadcast vs consensus+fencing vs epoch tags)."""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from fito.model.fleet import MODES, FleetResult, simulate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="simulate an epoch rollout under message loss: mixed vs aborted collectives (paper §7, §9.2)",
        description=(
            "N nodes run one collective per tick and move from epoch 0 to 1; each message is lost with "
            "probability L and re-sent every tick. naive: broadcast, switch on receipt. consensus: the "
            "transition commits at a consensus service, nodes are admitted to each collective only at the "
            "committed epoch (fencing). tagged: broadcast, but each collective exchanges epoch tags first and "
            "aborts on mismatch. consensus-nofence: agreement on the decision alone. Reports collectives that "
            "ran mixed, aborted collectives and ticks to converge. Exit code 0."
        ),
    )
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--loss", type=str, default="0.1",
                        help="message loss probability; a comma-separated list sweeps it (e.g. 0.01,0.1,0.3)")
    parser.add_argument("--mode", choices=[*MODES, "all"], default="all")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    parser.add_argument("--plot", type=str, default=None, help="write a PNG of the metrics against loss")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        losses = [float(x) for x in args.loss.split(",") if x.strip()]
    except ValueError as exc:
        raise SystemExit(f"fito fleet: --loss: {exc}") from exc
    modes = list(MODES) if args.mode == "all" else [args.mode]
    results: list[FleetResult] = []
    try:
        for li, loss in enumerate(losses):
            for mi, mode in enumerate(modes):
                results.append(simulate(mode, nodes=args.nodes, loss=loss, runs=args.runs,
                                        seed=args.seed + 1000 * li + mi))
    except ValueError as exc:
        raise SystemExit(f"fito fleet: {exc}") from exc
    summaries = [r.summary() for r in results]
    if args.plot:
        _plot(summaries, modes, losses, args.plot)
    if args.json:
        print(json.dumps({"results": summaries, "plot": args.plot}, indent=2))
        return 0
    console = Console(width=max(Console().width, 120), highlight=False)
    table = Table(title=f"epoch rollout, {args.nodes} nodes, {args.runs} runs per row (means; p99 in brackets)")
    for col in ("loss", "mode", "runs with mixed", "mixed collectives", "aborted", "fenced", "ticks to converge",
                "messages"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    for s in summaries:
        table.add_row(f"{s['loss']:g}", s["mode"], str(s["runs_with_mixed"]),
                      f"{s['mixed']['mean']:.2f} [{s['mixed']['p99']:g}]",
                      f"{s['aborted']['mean']:.2f} [{s['aborted']['p99']:g}]",
                      f"{s['fenced']['mean']:.1f}",
                      f"{s['converge_ticks']['mean']:.2f} [{s['converge_ticks']['p99']:g}]",
                      f"{s['messages']['mean']:.0f}")
    console.print(table)
    console.print("mixed = a collective that ran with participants on different epochs (silent corruption); "
                  "aborted = refused before combining anything. Tagging alone gives zero mixed collectives "
                  "without common knowledge (THEORY.md correction 10); agreement alone (consensus-nofence) does not.")
    if args.plot:
        console.print(f"plot written to {args.plot}")
    return 0


def _plot(summaries: list[dict], modes: list[str], losses: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for mode in modes:
        rows = [s for s in summaries if s["mode"] == mode]
        xs = [s["loss"] for s in rows]
        for ax, key in zip(axes, ("mixed", "aborted", "converge_ticks")):
            ax.plot(xs, [s[key]["mean"] for s in rows], marker="o", label=mode)
    for ax, title in zip(axes, ("mixed collectives per rollout", "aborted collectives per rollout",
                                "ticks to converge")):
        ax.set_title(title)
        ax.set_xlabel("message loss probability")
        if len(losses) > 1 and min(losses) > 0:
            ax.set_xscale("log")
    axes[0].legend()
    fig.suptitle(f"epoch rollout, {summaries[0]['nodes']} nodes, {summaries[0]['runs']} runs per point")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
