"""`fito adversary`: the Theorem 4.2 straddling schedule against a protocol, as a readable event list."""
from __future__ import annotations

import argparse

from rich.console import Console

from fito.commands._contract import UsageError, finish

from fito.model.adversary import attempt_outcomes, crash_search, straddle
from fito.model.adversary_machines import make_protocol
from fito.model.failure_spec import FailureSpec
from fito.model.lattice_closed_form import closed_form


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "adversary",
        help="build Theorem 4.2's straddle-and-crash schedule for a proposed boundary time (paper §4)",
        description=(
            "Given a proposed checkpoint boundary time T, schedule every component but one to persist "
            "before T, make the last one straddle T (write in flight) and crash it at T. Prints the "
            "schedule, the durable lattice state at T and the state recovery produces. A temporal-boundary "
            "protocol recovers a mixed state for every T; the bilateral protocol (durable decision after "
            "fsynced READYs, recovery from the decision only, presumed abort, versioned shards) recovers "
            "an atomic one. Exit code 1 (verdict violated) when a recovered state is mixed."
        ),
    )
    parser.add_argument("--protocol", choices=["temporal", "bilateral"], default="temporal",
                        help="temporal: a boundary time decides (the paper's target); bilateral: a durable decision "
                             "record decides (default temporal)")
    parser.add_argument("--n", type=int, default=3, help="number of components (>= 2)")
    parser.add_argument("--boundary", type=float, default=10.0, help="the proposed boundary time T")
    parser.add_argument("--epoch", type=int, default=1, help="the epoch being persisted (default 1)")
    parser.add_argument("--victim", type=str, default=None, help="component that straddles T (default: last)")
    parser.add_argument("--storage", choices=["in-place", "versioned"], default="in-place",
                        help="temporal protocol only: overwrite in place (torn -> A) or per-epoch files")
    parser.add_argument("--search", action="store_true",
                        help="also crash every set of <= 2 processes at every point of a clean run (small n)")
    parser.add_argument("--attempts", type=int, default=0,
                        help="also run this many random attempts with unit failure probability --q (correction 5)")
    parser.add_argument("--q", type=float, default=0.03, help="per-unit failure probability for --attempts")
    parser.add_argument("--seed", type=int, default=0, help="random seed for --attempts (default 0)")
    parser.add_argument("--json", action="store_true", help="print the JSON envelope only")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    protocol = make_protocol(args.protocol, args.storage)
    try:
        res = straddle(protocol, args.n, args.boundary, e=args.epoch, victim=args.victim)
        search = crash_search(protocol, args.n, e=args.epoch) if args.search else None
        attempts = (attempt_outcomes(protocol, args.n, args.q, args.attempts, seed=args.seed, e=args.epoch)
                    if args.attempts > 0 else None)
        lattice = closed_form(args.n, FailureSpec.binary(1 - args.q, q=args.q)) if attempts else None
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    mixed = not res.recovered_class.atomic
    verdict = "violated" if mixed or (search is not None and search.mixed_recovered) else "holds"
    if args.json:
        out = res.to_dict()
        if search is not None:
            out["search"] = {"runs": search.runs, "mixed_recovered": search.mixed_recovered,
                             "recovered_kinds": search.recovered_kinds,
                             "first_mixed": None if search.first_mixed is None else {
                                 "crashes": search.first_mixed[0],
                                 "recovered": "".join(s.name for s in search.first_mixed[1])}}
        if attempts is not None and lattice is not None:
            out["attempts"] = {"n": args.n, "q": args.q, "attempts": attempts.attempts,
                               "durable": attempts.durable, "recovered": attempts.recovered,
                               "lattice_p_mixed": lattice.mixed, "p_any_failure": 1 - lattice.all_c}
        return finish(args, verdict, out)

    console = Console(width=max(Console().width, 110), highlight=False)
    storage = args.storage if args.protocol == "temporal" else "versioned"
    console.print(f"[bold]protocol {args.protocol}[/bold] ({storage} storage), n = {args.n}, epoch {args.epoch}, "
                  f"proposed boundary T = {args.boundary:g}, straddling victim {res.victim}")
    marked = False
    for ev in res.execution.trace.events:
        if not marked and ev.time >= args.boundary:
            console.print(f"[yellow]---- T = {args.boundary:g}: the proposed boundary ----[/yellow]")
            marked = True
        console.print("  " + ev.describe())
    if not marked:
        console.print(f"[yellow]---- T = {args.boundary:g}: the proposed boundary ----[/yellow]")
    for note in res.execution.notes:
        console.print(f"  note: {note}")
    names = " ".join(res.execution.participants)
    console.print(f"durable state at T ({names}): {''.join(s.name for s in res.durable_at_boundary)} -> "
                  f"{_describe(res.durable_class)}")
    console.print(f"recovered state     ({names}): {''.join(s.name for s in res.recovered)} -> "
                  f"{_describe(res.recovered_class)}")
    if not res.durable_class.atomic and res.recovered_class.atomic:
        console.print("the durable state at T is mixed, as Theorem 4.2 says of any instant; recovery reads the "
                      "durable decision, not the clock, so what training resumes from is atomic")
    if search is not None:
        console.print(f"crash search (<= 2 crashed processes, every point of a clean run): {search.runs} runs, "
                      f"{search.mixed_recovered} recovered mixed; kinds {search.recovered_kinds}")
        if search.first_mixed:
            crashes, rec = search.first_mixed
            at = ", ".join(f"{p} at t={t:g}" for p, t in crashes.items())
            console.print(f"  first mixed: crash {at} -> recovered {''.join(s.name for s in rec)}")
    if attempts is not None and lattice is not None:
        a = attempts
        console.print(f"{a.attempts} random attempts, n = {a.n}, unit failure q = {a.q:g}: durable state mixed in "
                      f"{a.rate(a.durable, 'mixed'):.4f} (lattice P(mixed) = {lattice.mixed:.4f}); recovered "
                      f"mixed {a.rate(a.recovered, 'mixed'):.4f}, fell back one epoch "
                      f"{a.rate(a.recovered, 'atomic-bottom'):.4f} (1 - p^n = {1 - lattice.all_c:.4f}), "
                      f"committed {a.rate(a.recovered, 'atomic-top'):.4f}")
    return finish(args, verdict, None)


def _describe(c: object) -> str:
    kind = getattr(c, "kind")
    amb = getattr(c, "ambiguous_positions")
    return kind.upper() + (f" (ambiguous at positions {list(amb)})" if amb else "")
