"""`fito verify DIR [--step S]`: re-hash every unit of a committed step; exit 0 only if it is whole."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from fito.commands._contract import ROOT_HELP, finish


SECTION = 0  # listed first in `fito --help`: the checkpoint commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="re-hash every byte of a committed step (exit 1 if not whole)",
        description="Checks the newest committed step (or --step S) of DIR: the manifest against the hash in its "
                    "decision record, every rank object's size, every unit's step tag and content hash, and the "
                    "state tree. Exit 0 if whole, 1 if not, 3 if DIR holds no checkpoint or S is not committed, "
                    "4 if the decision log cannot be read.",
    )
    p.add_argument("dir", help=ROOT_HELP)
    p.add_argument("--step", "--epoch", type=int, dest="step",
                   help="committed step to verify; default the newest (--epoch: the old name)")
    p.add_argument("--json", action="store_true", help="print the JSON envelope (verdict holds/violated) only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fito.ckpt.inspect import verify  # lazily: loads torch
    err = Console(stderr=True)
    with Progress(TextColumn("verify"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err, transient=True, disable=args.json or not err.is_terminal) as progress:
        task = progress.add_task("verify", total=None)
        # errors (no checkpoint, no such step, unreadable log) reach cli.main: one line, exit 3 or 4
        report = verify(args.dir, args.step, progress=lambda n: progress.advance(task, n),
                        on_total=lambda total: progress.update(task, total=total))
    verdict = "holds" if report.whole else "violated"
    if args.json:
        return finish(args, verdict, {"step": report.epoch, "epoch": report.epoch, "attempt": report.attempt, "whole": report.whole,
                                      "ranks": report.ranks, "units": report.units, "bytes": report.bytes,
                                      "errors": report.errors})
    else:
        out = Console(highlight=False)
        if report.whole:
            out.print(f"[green]step {report.epoch} is whole[/green]: {report.ranks} ranks, {report.units} units, "
                      f"{report.bytes:,} bytes verified")
        for e in report.errors:
            out.print(f"[red]NOT WHOLE[/red] step {report.epoch}: {escape(e)}", soft_wrap=True)  # one line each
    return finish(args, verdict, None)
