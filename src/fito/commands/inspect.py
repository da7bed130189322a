"""`fito inspect DIR`: every attempt in a checkpoint directory with its decision and lattice position."""
from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fito.commands._contract import ROOT_HELP, finish


SECTION = 0  # listed first in `fito --help`: the checkpoint commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="list steps with their decision and per-rank lattice position",
        description="Lists every save attempt under DIR: its decision in the log (committed, retired, aborted, or "
                    "undecided = presumed aborted), its shard files, and one letter per rank for its position in the "
                    "epoch lattice: C committed, A ambiguous (written, no decision), R reverted/absent. For each committed step of "
                    "the sharded format (fito-manifest/2) a summary of its tensor index follows (tensors, bytes, the ranks "
                    "that wrote, rank-local entries); --tensors lists the index.",
    )
    p.add_argument("dir", help=ROOT_HELP)
    p.add_argument("--json", action="store_true", help="print the JSON envelope (result: one entry per attempt, with "
                   "the full tensor index of each committed fito-manifest/2 step under 'index') only")
    p.add_argument("--tensors", action="store_true", help="also list the tensor index of each committed "
                   "fito-manifest/2 step: per tensor its dtype, global shape, bytes and chunks ([box] rRANK: the part "
                   "of the global tensor and the rank whose object holds it)")
    p.add_argument("--step", type=int, default=None, help="with --tensors: only this step's index (default: every "
                   "committed step)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fito.ckpt.inspect import describe  # lazily: loads torch
    notes: list[str] = []
    infos = describe(args.dir, notes)  # errors reach cli.main: one line, exit 3 (no checkpoint) or 4
    for note in notes:  # stderr, in both modes: --json prints only the envelope on stdout
        print(f"fito inspect: note: {note}", file=sys.stderr)
    if args.json:
        return finish(args, "ok", [i.as_dict() for i in infos])
    table = Table(title=f"fito checkpoint {args.dir}")
    for col in ("step", "attempt", "decision", "commit #", "lattice", "rank objects", "bytes"):
        table.add_column(col, overflow="fold")  # attempt ids wrap instead of being cut
    colors = {"committed": "green", "retired": "dim", "aborted": "red", "undecided": "yellow"}
    for i in infos:
        table.add_row(str(i.epoch), i.attempt, f"[{colors[i.status]}]{i.status}", str(i.seq or "-"), i.lattice,
                      str(len(i.shards)), f"{i.bytes:,}")
    console = Console()
    console.print(table)
    for i in infos:
        if i.index is not None and i.status == "committed":
            _print_index(console, i.epoch, i.index, args.tensors and args.step in (None, i.epoch))
    return finish(args, "ok", None)


def _packs(index: dict) -> str:
    """", 2 packs of 20,000 small tensors" (fito.ckpt.packs), or nothing."""
    packs = index.get("packs", [])
    if not packs:
        return ""
    held = [p["members"] for p in packs if p["members"] is not None]
    return f", {len(packs)} pack{'s' * (len(packs) != 1)} of {sum(held):,} small tensors" if len(held) == len(packs) else f", {len(packs)} packs"


def _print_index(console: Console, step: int, index: dict, tensors: bool) -> None:
    from fito.ckpt.tensor_index import chunk_text
    if "error" in index:
        console.print(f"step {step}: tensor index unreadable: {index['error']}", markup=False, highlight=False, soft_wrap=True)
        return
    s = index["summary"]
    local = index["entries"]["rank_local"]
    line = (f"step {step} ({index['format']}): {s['tensors']:,} tensors, {s['tensor_bytes']:,} bytes in {s['chunks']:,} "
            f"chunks, {s['values']:,} values{_packs(index)}; {index['world_size']} ranks saved, objects written by ranks "
            f"{', '.join(map(str, s['writers'])) or '-'} ({s['object_bytes']:,} bytes)")
    if local:
        line += "; rank-local entries: " + ", ".join(f"{n} (ranks {', '.join(map(str, r))})" for n, r in local.items())
    console.print(line, markup=False, highlight=False, soft_wrap=True)  # one line per step: greppable
    if not tensors:
        return
    table = Table(title=f"step {step}: tensor index")
    for col in ("tensor", "dtype", "shape", "bytes", "chunks: [box] rank"):
        table.add_column(Text(col), overflow="fold")
    for t in index["tensors"]:  # Text: names and boxes are never read as rich markup
        where = "; ".join(chunk_text(c) for c in t["chunks"])
        if t.get("pack") is True:
            where += " (a pack of small tensors; its entry's document is unreadable: fito verify)"
        elif t.get("pack"):
            where += f" in {t['pack']}"
        table.add_row(*map(Text, (t["fqn"], t["dtype"], str(t["shape"]), f"{t['bytes']:,}", where)))
    console.print(table)
