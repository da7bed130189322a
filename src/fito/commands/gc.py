"""`fito gc DIR --keep K`: keep the newest K committed steps and delete garbage attempts, safely beside a
live job: it takes no fencing token (so the job's saves keep committing), retires through a store
transaction that never retires the newest committed step, and deletes an undecided or aborted attempt only
when its coordinator can never publish it (its fence is older than the current one)."""
from __future__ import annotations

import argparse

from rich.console import Console

from fito.commands._contract import ROOT_HELP, UsageError, finish

SECTION = 0  # listed first in `fito --help`: the checkpoint commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gc", help="keep the newest K committed steps, delete the rest and aborted/undecided leftovers",
        description="Retires committed steps beyond the newest K in the decision log, then deletes their files, "
                    "and deletes attempts no committed decision names (aborted or undecided) once they are older "
                    "than --grace seconds and were begun by a coordinator older than the current one (the current "
                    "one may still be running; its own leftovers are collected by its next save or by the next "
                    "job). Safe to run while a job saves: it takes no fencing token and never retires or deletes "
                    "the newest committed step. Links under epochs/ are never followed or deleted. "
                    "Exit 0 on success, 2 on bad arguments, 3 if DIR holds no checkpoint, 4 if the collection "
                    "failed (one line on stderr).",
    )
    p.add_argument("dir", help=ROOT_HELP)
    p.add_argument("--keep", type=int, required=True, help="committed steps to keep (>= 1)")
    p.add_argument("--grace", type=float, default=3600.0,
                   help="leave undecided attempts younger than this many seconds (a running job may be writing them); default 3600")
    p.add_argument("--json", action="store_true", help="print the JSON envelope (result: the removed attempts) only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.keep < 1:
        raise UsageError("--keep must be at least 1: the newest committed step is never deleted")
    from fito.ckpt.inspect import open_store  # lazily: loads torch
    from fito.commit.retention import collect_garbage

    # errors reach cli.main: one line on stderr, exit 3 (no checkpoint) or 4 (the collection failed)
    storage, store = open_store(args.dir)
    try:
        removed = collect_garbage(storage, store, None, args.keep, grace_seconds=args.grace)
    finally:
        store.close()
    console = Console(highlight=False, quiet=args.json)
    for rel in removed:
        console.print(f"removed {rel}")
    console.print(f"{len(removed)} attempt(s) removed; kept the newest {args.keep} committed step(s)")
    return finish(args, "ok", {"removed": list(removed), "keep": args.keep})
