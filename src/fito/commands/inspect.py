"""`fito inspect DIR`: every attempt in a checkpoint directory with its decision and lattice position."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from fito.commands._contract import finish


SECTION = 0  # listed first in `fito --help`: the checkpoint commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="list epochs with their decision and per-rank lattice position",
        description="Lists every save attempt under DIR: its decision in the log (committed, retired, aborted, or "
                    "undecided = presumed aborted), its shard files, and one letter per rank for its position in the "
                    "epoch lattice: C committed, A ambiguous (written, no decision), R reverted/absent.",
    )
    p.add_argument("dir", help="checkpoint directory")
    p.add_argument("--json", action="store_true", help="print the JSON envelope (result: one entry per attempt) only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fito.ckpt.inspect import describe  # lazily: loads torch
    infos = describe(args.dir)  # errors reach cli.main: one line, exit 3 (no checkpoint) or 4
    if args.json:
        return finish(args, "ok", [i.as_dict() for i in infos])
    table = Table(title=f"fito checkpoint {args.dir}")
    for col in ("epoch", "attempt", "decision", "commit #", "lattice", "shards", "bytes"):
        table.add_column(col, overflow="fold")  # attempt ids wrap instead of being cut
    colors = {"committed": "green", "retired": "dim", "aborted": "red", "undecided": "yellow"}
    for i in infos:
        table.add_row(str(i.epoch), i.attempt, f"[{colors[i.status]}]{i.status}", str(i.seq or "-"), i.lattice,
                      str(len(i.shards)), f"{i.bytes:,}")
    Console().print(table)
    return finish(args, "ok", None)
