"""`fito recover-log DIR [--apply]`: rebuild a lost decision log from whole, fully verified attempts."""
from __future__ import annotations

import argparse

from rich.console import Console

from fito.commands._contract import ROOT_HELP, finish
from fito.errors import NoCommittedEpochError

SECTION = 0  # listed first in `fito --help`: the checkpoint commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recover-log", help="rebuild a lost decision log from whole, verified attempts (dry run unless --apply)",
        description="For a checkpoint root whose decision log is lost (decisions.sqlite in a directory, the objects "
                    "under decisions.d/ on S3): verifies every attempt under "
                    "epochs/ fully (manifest, every unit of every rank: size, header, epoch tag, content hash), "
                    "and prints, per step, the newest whole attempt it would record as committed, and the step a "
                    "restore would then return. Nothing is written without --apply, which creates a new log (new "
                    "identity, fences above every fence in the attempt names) recording them. Refuses if a log "
                    "exists. A whole attempt the lost log had aborted, never decided or retired is recorded too: "
                    "check the list. Exit 0: recoverable (or recovered), 3: nothing whole to record, 4: a log exists "
                    "or the recovery failed (one line on stderr).",
    )
    p.add_argument("dir", help=ROOT_HELP)
    p.add_argument("--apply", action="store_true", help="create the new log (default: only print the plan)")
    p.add_argument("--json", action="store_true", help="print the JSON envelope (result: the plan, and the new log id) only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fito.ckpt.recover import apply_recovery, attempt_rel, plan_recovery  # lazily: loads torch

    # errors reach cli.main: one line on stderr, exit 3 (no checkpoint) or 4 (a log exists, I/O, ...)
    plan = plan_recovery(args.dir)
    out = Console(highlight=False, soft_wrap=True, quiet=args.json)
    for c in plan.skipped:
        out.print(f"[yellow]skip[/yellow] {attempt_rel(c)}: {c.problem}")
    newest = plan.restores
    if newest is None:
        raise NoCommittedEpochError(f"{plan.root}: nothing to recover: no whole attempt under epochs/ "
                                    f"({len(plan.skipped)} skipped); nothing was written")
    log_id = apply_recovery(plan) if args.apply else None
    verb = "recorded" if log_id else "would record"
    for c in plan.chosen:
        out.print(f"[green]step {c.step}[/green] {verb} as committed: {attempt_rel(c)} (whole: {c.ranks} rank(s), "
                  f"{c.bytes:,} bytes verified)")
    if log_id is None:
        out.print(f"a restore would then return step {newest.step} ({newest.attempt})")
        out.print(f"dry run: nothing was written. `fito recover-log {args.dir} --apply` creates the log (new "
                  f"identity, fences from {plan.fence_floor + 1})")
    else:
        backup = ("a copy of that one file is a whole backup" if plan.log.endswith(".sqlite")
                  else "a copy of the objects under it is a whole backup")
        out.print(f"created {plan.log} (log id {log_id}, fences from {plan.fence_floor + 1}); "
                  f"a restore now returns step {newest.step}. Back it up: {backup}")
    return finish(args, "ok", {**plan.as_dict(), "applied": log_id is not None, "log_id": log_id})
