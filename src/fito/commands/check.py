"""`fito check`: exhaustively model-check a checkpoint commit protocol (naive, paper-literal, bilateral),
optionally with a planted bug, and print a shortest counterexample when a property fails."""
from __future__ import annotations

import argparse
import dataclasses

from fito.commands._contract import UsageError, finish
from fito.model.explorer import explore
from fito.model.explorer_properties import PROPERTIES
from fito.model.explorer_result import Result
from fito.model.explorer_world import Config
from fito.model.protocols import MUTATION_SETTINGS, MUTATIONS, VARIANTS, get_variant


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="model-check a commit protocol over every interleaving and crash",
        description=(
            "Explore every interleaving of ranks and coordinator, message loss, timeouts, process crashes "
            "and job restarts while epoch 2 is saved over a committed epoch 1; at every state pull the plug "
            "and run recovery on every post-crash disk POSIX allows. Each property holds, is violated, or is "
            "unknown (search cut short by --max-states with no violation found). Exit 0 when every property "
            "holds, 1 with a shortest counterexample when one is violated, 5 when the result is unknown."
        ),
    )
    parser.add_argument("--protocol", choices=sorted(VARIANTS), default="bilateral",
                        help="naive: one marker file; paper-literal: §9.1 as written; bilateral: fito's protocol "
                             "(default)")
    parser.add_argument("--ranks", type=int, default=2, help="number of ranks (default 2; 3 takes seconds, 4 about a minute)")
    parser.add_argument("--attempts", type=int, default=1, help="attempts per epoch (job restarts + 1, default 1)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs saved after epoch 1, one after another (default 1)")
    parser.add_argument("--keep", type=int, default=1, help="committed epochs retained by garbage collection")
    parser.add_argument("--mutation", choices=sorted(MUTATIONS),
                        help="plant a bug in the bilateral protocol (recursive-discard turns on --attempts 2 "
                             "--zombies --discard; no-coverage-check --short-writes; reader-takes-fence --reader; fence-per-save --attempts 2 --zombies "
                             "--zombie-saves; dedup-keeps-differing --replicas)")
    parser.add_argument("--zombies", action="store_true",
                        help="a job restart may leave the old coordinator running (needs --attempts 2)")
    parser.add_argument("--fence-at-first-publish", action="store_true",
                        help="the Checkpointer's behaviour before b7688c9: fencing token taken at the first publish, "
                             "garbage collection deletes every undecided attempt (unsafe with --zombies)")
    parser.add_argument("--no-crashes", action="store_true", help="no process crashes (power failure still checked)")
    parser.add_argument("--no-loss", action="store_true", help="messages are never lost")
    parser.add_argument("--discard", action="store_true",
                        help="a coordinator whose abort is decided discards its attempt (objects by name, "
                             "directories only if empty), as the library's executor does")
    parser.add_argument("--short-writes", action="store_true",
                        help="a rank's write may vouch for none of its chunks: the coverage check must abort")
    parser.add_argument("--replicas", action="store_true",
                        help="every rank writes a copy of one replicated item, and a rank's copy may differ: the "
                             "coordinator keeps one copy only if all are equal, else refuses the save")
    parser.add_argument("--reader", action="store_true",
                        help="a read-only opener (inspect, a restore-only Checkpointer) opens the root once, at any point")
    parser.add_argument("--zombie-saves", action="store_true",
                        help="with --zombies: the surviving old coordinator's job begins its next save")
    parser.add_argument("--no-symmetry", action="store_true",
                        help="explore every state, not one per class of states equal up to renaming ranks "
                             "(slower; the verdicts are the same)")
    parser.add_argument("--stop-at-first", action="store_true", help="stop at the first counterexample")
    parser.add_argument("--max-states", type=int, default=None,
                        help="give up after this many states (properties not violated so far are then unknown)")
    parser.add_argument("--crash-states", action="store_true",
                        help="instead of the model: record a real Checkpointer.save of step 2 over step 1 and run "
                             "the real restore on every crash state a POSIX file system allows")
    parser.add_argument("--json", action="store_true", help="print the JSON envelope only")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.crash_states:
        return _crash_states(args)
    if args.ranks < 1:
        raise UsageError("--ranks must be at least 1")
    try:
        variant = get_variant(args.protocol, args.mutation)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    config = Config(ranks=args.ranks, attempts=args.attempts, epochs=args.epochs, keep=args.keep,
                    crashes=not args.no_crashes, message_loss=not args.no_loss, zombies=args.zombies,
                    fence_at_first_publish=args.fence_at_first_publish, symmetry=not args.no_symmetry,
                    discard=args.discard, short_writes=args.short_writes, reader=args.reader, replicas=args.replicas,
                    zombie_saves=args.zombie_saves)
    # a planted bug runs in the scenario that can show it (at least: more is the user's choice)
    settings = MUTATION_SETTINGS.get(args.mutation or "", {})
    config = dataclasses.replace(config, **{k: max(v, getattr(config, k)) for k, v in settings.items()})
    if args.json:
        result = explore(variant, config, stop_at_first=args.stop_at_first, max_states=args.max_states)
        return finish(args, result.verdict, result.to_json())
    result = _explore_with_progress(variant, config, args)
    _print(result, variant.summary)
    return finish(args, result.verdict, None)


def _explore_with_progress(variant, config: Config, args: argparse.Namespace) -> Result:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"exploring {variant.name}, {config.ranks} ranks", info="")

        def progress(states: int, frontier: int, depth: int) -> None:
            bar.update(task, info=f"{states:,} states, frontier {frontier:,}, depth {depth}")

        return explore(variant, config, stop_at_first=args.stop_at_first, max_states=args.max_states,
                       progress=progress)


def _print(result: Result, summary: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    c = result.config
    console.print(f"[bold]{result.protocol}[/bold]: {summary}")
    rate = result.states / result.seconds if result.seconds else 0.0
    console.print(
        f"{c.ranks} ranks, {c.epochs} epoch(s) after epoch 1, {c.attempts} attempt(s) each, keep {c.keep}: "
        f"{result.states:,} states, "
        f"{result.transitions:,} transitions, {result.crash_images:,} distinct crash images, depth "
        f"{result.max_depth}, {result.seconds:.2f} s wall, {result.cpu_seconds:.2f} s CPU ({rate:,.0f} states/s wall)"
        + (", one state per rank permutation class" if c.symmetry else "")
        + ("" if result.complete else " [yellow](search cut short)[/yellow]")
    )
    table = Table("property", "result", "meaning")
    for name, meaning in PROPERTIES.items():
        verdict = {"violated": "[red]VIOLATED[/red]", "holds": "[green]holds[/green]",
                   "unknown": "[yellow]unknown[/yellow] (no violation before the search was cut short)"}[
            result.property_verdict(name)]
        table.add_row(name, verdict, meaning)
    console.print(table)
    for cex in result.violations.values():
        console.print(cex.render(), markup=False, highlight=False)


def _crash_states(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from fito.testing.crashstates import check_fito_crash_states

    keep = max(1, args.keep)
    if args.json:
        report = check_fito_crash_states(keep=keep)
        return finish(args, "violated" if report.violations else "holds", report.to_json())
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("restoring crash states", total=None)
        report = check_fito_crash_states(keep=keep, progress=lambda n: bar.update(task, description=f"{n} crash states restored"))
    console = Console()
    console.print(
        f"recorded save of step 2 over step 1 (keep={keep}): {report.ops} file operations, "
        f"{report.crash_points} crash points, {report.crash_states} distinct crash states, "
        f"{report.check_seconds:.1f} s ({report.states_per_second:.1f} restores/s)")
    for outcome, count in sorted(report.outcomes.items()):
        console.print(f"  {count:5d}  {outcome}")
    if report.violations:
        console.print(f"[red]{len(report.violations)} crash states violate all-or-nothing[/red], e.g.:")
        for v in report.violations[:3]:
            console.print(f"  {v}", markup=False)
        return finish(args, "violated", None)
    console.print("[green]every crash state restores one whole step: the newest durably committed one[/green]")
    return finish(args, "holds", None)
