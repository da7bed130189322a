"""The demo's three runs and their comparison: uninterrupted; killed mid-save; resumed from the decision log."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fito.coord.choose import default_store
from fito.storage import open_storage
from fito.testing.dist import RankResult, run_ranks

WORKER = "fito.demo.worker"


@dataclass
class DemoReport:
    steps: int
    kill_step: int
    kill_rank: int
    crash_exit_codes: list[int] = field(default_factory=list)
    survivor_error: str = ""
    committed_after_crash: list[int] = field(default_factory=list)
    decisions_after_crash: list[tuple[int, str]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)
    compared: int = 0
    differing: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.differing and self.compared > 0


def _events(results: list[RankResult]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def _finals(results: list[RankResult]) -> dict[int, dict[str, str]]:
    return {e["rank"]: e["digest"] for e in _events(results) if e["event"] == "final"}


def run_demo(workdir: str | None, *, steps: int = 40, every: int = 5, kill_step: int = 25, kill_rank: int = 1,
             say: Callable[[str], None] = print) -> DemoReport:
    base = Path(workdir or tempfile.mkdtemp(prefix="fito-demo-"))
    report = DemoReport(steps, kill_step, kill_rank)
    common = ["--steps", str(steps), "--every", str(every)]

    say(f"[1/3] uninterrupted run: 2 ranks, {steps} steps, checkpoint every {every} -> {base / 'reference'}")
    ref = run_ranks(WORKER, [str(base / "reference"), *common], 2)
    if any(r.returncode != 0 for r in ref):
        report.failures.append("reference run failed: " + "; ".join(r.stderr[-400:] for r in ref if r.returncode))
        return report

    say(f"[2/3] same run, rank {kill_rank} SIGKILLed in the middle of writing step {kill_step}'s checkpoint")
    crash = run_ranks(WORKER, [str(base / "crashed"), *common, "--kill-rank", str(kill_rank), "--kill-step", str(kill_step)], 2)
    report.crash_exit_codes = [r.returncode for r in crash]
    if crash[kill_rank].returncode != -9:
        report.failures.append(f"rank {kill_rank} was expected to die by SIGKILL, exit code {crash[kill_rank].returncode}")
    aborted = [e for e in _events(crash) if e["event"] == "aborted"]
    report.survivor_error = aborted[0]["error"] if aborted else ""
    if not aborted:
        report.failures.append("the surviving rank did not report the aborted save")
    store = default_store(open_storage(base / "crashed", create=False), create=False)
    report.committed_after_crash = [d.epoch for d in store.committed()]
    report.decisions_after_crash = [(d.epoch, d.outcome) for d in store.decisions()]
    store.close()
    if kill_step in report.committed_after_crash:
        report.failures.append(f"step {kill_step} must not be committed: a rank died before its READY")

    say("[3/3] restart both ranks: restore the newest committed epoch and train to the end")
    resumed = run_ranks(WORKER, [str(base / "crashed"), *common, "--resume"], 2)
    if any(r.returncode != 0 for r in resumed):
        report.failures.append("resumed run failed: " + "; ".join(r.stderr[-400:] for r in resumed if r.returncode))
        return report
    report.resumed_from = [e["step"] for e in _events(resumed) if e["event"] == "restored"]

    a, b = _finals(ref), _finals(resumed)
    for rank in sorted(a):
        for key, value in a[rank].items():
            report.compared += 1
            if b.get(rank, {}).get(key) != value:
                report.differing.append(f"rank {rank} {key}")
    return report
