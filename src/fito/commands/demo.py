"""`fito demo`: 2 ranks train, one is SIGKILLed mid-save, the job resumes, and the result is compared
bit for bit with an uninterrupted run. Exit 0 only if every tensor and value is identical."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fito.commands._contract import UsageError, finish
from fito.demo.run import run_demo


SECTION = 0  # listed first in `fito --help`: the checkpoint commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train on 2 ranks, kill one mid-save, resume, compare bit for bit",
        description="Trains a small MLP (AdamW, cosine LR, dropout, per-rank data order) on 2 CPU ranks with "
                    "torch.distributed (gloo), checkpointing every few steps. One rank is SIGKILLed in the middle "
                    "of writing a checkpoint; the job restarts, restores the newest committed epoch and finishes. "
                    "The final weights, optimizer moments and steps, LR schedule, RNG states and data positions are "
                    "compared bit for bit with an uninterrupted run. Exit code 0 only if all are identical.",
    )
    p.add_argument("--dir", help="keep the runs' checkpoints here (default: a new temporary directory)")
    p.add_argument("--steps", type=int, default=40, help="training steps per run (default 40)")
    p.add_argument("--every", type=int, default=5, help="checkpoint every N steps (default 5)")
    p.add_argument("--kill-step", type=int, default=25, help="kill during the save of this step (default 25)")
    p.add_argument("--kill-rank", type=int, default=1, choices=[0, 1], help="rank to kill (default 1)")
    p.add_argument("--json", action="store_true", help="print the JSON envelope (verdict holds = bit-identical) only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    console = Console(quiet=args.json)
    if args.every < 1 or args.kill_step % args.every or not args.every < args.kill_step < args.steps:
        raise UsageError("--kill-step must be a checkpoint step (a multiple of --every >= 1) after the first "
                         "checkpoint (so there is one to resume from) and before --steps")
    report = run_demo(args.dir, steps=args.steps, every=args.every, kill_step=args.kill_step,
                      kill_rank=args.kill_rank, say=lambda s: console.print(s))
    table = Table(title="fito demo", show_header=False)
    table.add_row("rank exit codes in the crashed run", ", ".join(map(str, report.crash_exit_codes)) + "  (-9 = SIGKILL)")
    table.add_row("survivor's error", escape(report.survivor_error[:300]) or "-")
    table.add_row("decision log after the crash", ", ".join(f"{e}:{o}" for e, o in report.decisions_after_crash) or "-")
    table.add_row("committed (kept) after the crash", str(report.committed_after_crash))
    table.add_row("resumed from step (per rank)", str(report.resumed_from))
    table.add_row("values compared bit for bit", str(report.compared))
    table.add_row("values differing", str(len(report.differing)))
    console.print(table)
    for line in report.failures + report.differing[:20]:
        console.print(f"[red]{escape(line)}")
    if report.ok:
        console.print(f"[green]OK: the resumed run is bit-identical to the uninterrupted one ({report.compared} values).")
    else:
        console.print("[red]FAILED: see above.")
    return finish(args, "holds" if report.ok else "violated", {
        "bit_identical": report.ok, "crash_exit_codes": list(report.crash_exit_codes),
        "survivor_error": report.survivor_error, "decisions_after_crash": [list(d) for d in report.decisions_after_crash],
        "committed_after_crash": list(report.committed_after_crash), "resumed_from": report.resumed_from,
        "compared": report.compared, "differing": list(report.differing), "failures": list(report.failures)})
