"""`fito fleet`: the §7/§9.2 fleet-update simulation (naive broadcast vs consensus+fencing vs epoch tags)."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from fito.commands._contract import UsageError, finish
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
            "ran mixed, aborted collectives and ticks to converge. Exit code 0 (a simulation, not a check)."
        ),
    )
    parser.add_argument("--nodes", type=int, default=64, help="nodes in the fleet (default 64)")
    parser.add_argument("--loss", type=str, default="0.1",
                        help="message loss probability; a comma-separated list sweeps it (e.g. 0.01,0.1,0.3)")
    parser.add_argument("--mode", choices=[*MODES, "all"], default="all", help="rollout mode to simulate (default all)")
    parser.add_argument("--runs", type=int, default=1000, help="rollouts per (loss, mode) (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the JSON envelope only")
    parser.add_argument("--plot", type=str, default=None, help="write a PNG of the metrics against loss")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        losses = [float(x) for x in args.loss.split(",") if x.strip()]
    except ValueError as exc:
        raise UsageError(f"--loss: {exc}") from exc
    if not losses:
        raise UsageError("--loss: give at least one probability, e.g. 0.1 or 0.01,0.1,0.3")
    modes = list(MODES) if args.mode == "all" else [args.mode]
    results: list[FleetResult] = []
    try:
        for li, loss in enumerate(losses):
            for mi, mode in enumerate(modes):
                results.append(simulate(mode, nodes=args.nodes, loss=loss, runs=args.runs,
                                        seed=args.seed + 1000 * li + mi))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    summaries = [r.summary() for r in results]
    if args.plot:
        _plot(summaries, modes, losses, args.plot)
    if args.json:
        return finish(args, "ok", {"results": summaries, "plot": args.plot})
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
                  "without common knowledge (correction 10); agreement alone (consensus-nofence) does not.")
    if args.plot:
        console.print(f"plot written to {args.plot}")
    return finish(args, "ok", None)


# One look per mode, so that modes whose values coincide (consensus and tagged never mix; naive and
# consensus-nofence never abort) stay visible: wide hollow markers under narrow filled ones, distinct
# line styles, and a small sideways offset per mode.
_STYLE = {"naive": dict(marker="o", markersize=11, markerfacecolor="none", linestyle="-", linewidth=2.5),
          "consensus": dict(marker="s", markersize=8, markerfacecolor="none", linestyle="--", linewidth=2),
          "tagged": dict(marker="^", markersize=6, linestyle=":", linewidth=2),
          "consensus-nofence": dict(marker="x", markersize=6, linestyle="-.", linewidth=1.2)}


def _plot(summaries: list[dict], modes: list[str], losses: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    log_x = len(losses) > 1 and min(losses) > 0
    xs_all = sorted(set(losses))
    spread = (max(xs_all) - min(xs_all)) if len(xs_all) > 1 else max(xs_all[0], 0.01)
    for k, mode in enumerate(modes):
        rows = [s for s in summaries if s["mode"] == mode]
        shift = (k - (len(modes) - 1) / 2) * 0.025  # a fraction of a decade (log) or of the range (linear)
        xs = [s["loss"] * 10 ** shift if log_x else s["loss"] + shift * spread for s in rows]
        for ax, key in zip(axes, ("mixed", "aborted", "converge_ticks")):
            ax.plot(xs, [s[key]["mean"] for s in rows], label=mode, **_STYLE.get(mode, dict(marker="o")))
    labels = (("mixed collectives per rollout", "mixed collectives (mean per rollout)"),
              ("aborted collectives per rollout", "aborted collectives (mean per rollout)"),
              ("ticks to converge", "ticks until every node is on epoch 1 (mean)"))
    for ax, (title, ylabel) in zip(axes, labels):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("message loss probability")
        ax.set_ylim(bottom=-0.05 * max(1e-9, ax.get_ylim()[1]))
        if log_x:
            ax.set_xscale("log")
        else:  # one loss value (or a sweep from 0): a linear axis with a margin around the points
            ax.set_xlim(min(xs_all) - 0.5 * spread, max(xs_all) + 0.5 * spread)
        ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"epoch rollout, {summaries[0]['nodes']} nodes, {summaries[0]['runs']} runs per point "
                 "(points of different modes are offset sideways; hollow markers show coinciding values)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
