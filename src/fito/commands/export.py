"""`fito export ROOT OUT`: a committed step's full tensors as Hugging Face safetensors (or one torch.save file)."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from fito.commands._contract import ROOT_HELP, UsageError, finish


SECTION = 0  # listed first in `fito --help`: the checkpoint commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a committed step's full tensors as Hugging Face safetensors (or torch.save)",
        description="Reads the newest committed step of ROOT (or --step S), whatever world size saved it (FSDP2 "
                    "shards, TP DTensors, replicas, plain tensors), consolidates each tensor and writes it to the "
                    "directory OUT: model.safetensors, or model-0000i-of-0000N.safetensors files plus "
                    "model.safetensors.index.json past --max-shard-size; with --format torch one pytorch_model.bin "
                    "(torch.save). Names are the tensors' paths in the saved state joined with '.' "
                    "(model.linear.weight, optim.state.linear.weight.exp_avg); --only model writes only the "
                    "model's tensors, named without 'model.', as from_pretrained expects. Rank-local entries (RNG, "
                    "data position) are not exported. Every byte is checked against its block hash as it is read; "
                    "files are written under temporary names and renamed only when all are whole, so a damaged "
                    "checkpoint leaves no output (exit 4). Exit 3 if ROOT holds no committed step or not S, 2 for a "
                    "bad option, a --only that selects nothing or an OUT that already holds an export.",
    )
    p.add_argument("root", help=ROOT_HELP)
    p.add_argument("out", help="output directory (created if missing; must not hold an export already)")
    p.add_argument("--step", type=int, default=None, help="committed step to export; default the newest")
    p.add_argument("--only", metavar="PREFIX", default=None,
                   help="only tensors named PREFIX or PREFIX.*, with 'PREFIX.' taken off their names (e.g. model)")
    p.add_argument("--format", choices=("safetensors", "torch"), default="safetensors",
                   help="safetensors (default; Hugging Face's layout) or torch (one torch.save file)")
    p.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                   help="largest safetensors file before splitting, as Hugging Face's max_shard_size (5GB, 500MB, "
                        "2GiB, bytes); default 5GB")
    p.add_argument("--json", action="store_true", help="print the JSON envelope (verdict ok) only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from fito.export.write import export, parse_size  # lazily: loads torch
    try:
        limit = parse_size(args.max_shard_size)
    except ValueError as exc:
        raise UsageError(f"--max-shard-size: {exc}") from None
    if args.only is not None and not args.only:
        raise UsageError("--only: give a non-empty prefix (e.g. model)")
    err = Console(stderr=True)
    with Progress(TextColumn("export"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err, transient=True, disable=args.json or not err.is_terminal) as progress:
        task = progress.add_task("export", total=None)
        try:
            result = export(args.root, args.out, step=args.step, only=args.only, format=args.format,
                            max_shard_bytes=limit, progress=lambda n: progress.advance(task, n),
                            on_total=lambda total: progress.update(task, total=total))
        except (ValueError, FileExistsError) as exc:  # a --only that picks nothing, an OUT holding an export
            raise UsageError(str(exc)) from None
    if args.json:
        return finish(args, "ok", result.as_dict())
    out = Console(highlight=False)
    out.print(f"step {result.step} of {escape(result.root)}: {result.tensors:,} tensors, {result.bytes:,} bytes "
              f"verified and written to {escape(result.out)} ({', '.join(result.files[:3])}"
              f"{', ...' if len(result.files) > 3 else ''})", soft_wrap=True)
    if result.skipped:
        out.print(f"not exported (numpy arrays): {escape(', '.join(result.skipped[:5]))}", soft_wrap=True)
    return finish(args, "ok", None)
