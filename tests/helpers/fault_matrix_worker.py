"""One rank of tests/test_fault_matrix.py. Runs EVERY case of the matrix in this one process (two processes
for the whole matrix, not two per case): for each {phase} x {faulty rank} x {kind}, on a fresh root with
step 1 committed, arm the fault, save step 2, then look: restore, save step 3, list what is left on disk,
restore every committed step with a fresh Checkpointer. Prints one JSON line of facts per case; the test
process asserts on them. Run through fito.testing.dist.run_ranks (MASTER_ADDR/PORT, RANK, WORLD_SIZE)."""
from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import traceback
import warnings
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fito import Checkpointer
from fito.errors import FitoError
from fito.protocol.messages import attempt_dir
from fito.testing.faults import KINDS, PHASES, Fault, FaultPlan, open_faulty

KEEP = 2
CASES = list(itertools.product(PHASES, (0, 1), KINDS))


def case_name(phase: str, target: int, kind: str) -> str:
    return f"{phase.replace(' ', '-')}-rank{target}-{kind}"


def state_for(step: int, rank: int) -> dict[str, Any]:
    """Values that differ per step and rank, so a mix or a stale value is visible."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    return {"w": torch.randn(2048, generator=g), "b": torch.arange(64, dtype=torch.int64) * step + rank,
            "meta": {"step": step, "rank": rank}}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (torch.equal(a["w"], b["w"]) and a["w"].dtype == b["w"].dtype and torch.equal(a["b"], b["b"])
            and a["meta"] == b["meta"])


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING:  # warnings only: the ERROR tracebacks of failed ranks are not warnings
            self.messages.append(record.getMessage())


def outcome(fn: Any) -> dict[str, Any]:
    try:
        return {"outcome": "ok", "value": fn()}
    except FitoError as exc:
        return {"outcome": type(exc).__name__, "fito": True, "message": str(exc), "phase": getattr(exc, "phase", None),
                "failed_ranks": sorted(getattr(exc, "failures", {}))}
    except Exception as exc:  # noqa: BLE001 - recorded: the test fails on any non-FitoError
        return {"outcome": type(exc).__name__, "fito": False, "message": str(exc),
                "traceback": traceback.format_exc()[-2000:]}


def strays(root: Path, live: list[tuple[int, str]]) -> list[str]:
    """Everything under epochs/ that no live (committed, not retired) attempt accounts for."""
    keep = {"epochs"}
    for epoch, attempt in live:
        rel = attempt_dir(epoch, attempt)
        keep.add(rel)
        keep.add(rel.rsplit("/", 1)[0])
    out = []
    for dirpath, dirnames, filenames in os.walk(root / "epochs"):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir not in keep:
            out.append(rel_dir + "/")
        for f in filenames:
            if rel_dir not in keep or rel_dir.count("/") != 2:
                out.append(f"{rel_dir}/{f}")
    return sorted(out)


def run_case(base: Path, rank: int, group: Any, phase: str, target: int, kind: str) -> dict[str, Any]:
    root = base / case_name(phase, target, kind)
    plan = FaultPlan(rank)
    storage, store = open_faulty(root, plan)
    ck = Checkpointer(storage, store=store, keep=KEEP, process_group=group, progress=False)
    facts: dict[str, Any] = {"case": case_name(phase, target, kind), "rank": rank}
    facts["save1"] = outcome(lambda: ck.save(1, state_for(1, rank)))
    dist.barrier(group)

    plan.arm(Fault(phase, kind, rank=target, after_bytes=100))  # type: ignore[arg-type]
    handler = Collect()
    logging.getLogger("fito").addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        facts["save2"] = outcome(lambda: ck.save(2, state_for(2, rank)))
    logging.getLogger("fito").removeHandler(handler)
    plan.disarm()
    facts["warnings"] = handler.messages + [str(w.message) for w in caught]
    facts["fired"] = [asdict(i) for i in plan.injected]
    dist.barrier(group)
    live = [(d.epoch, d.attempt) for d in store.committed()]
    facts["strays_after_fail"] = strays(root, live)

    into = state_for(99, rank)
    got = outcome(lambda: ck.restore(into))
    if got["outcome"] == "ok":
        got["equal"] = same(into, state_for(got["value"], rank))
    facts["restore_after_fail"] = got
    facts["save3"] = outcome(lambda: ck.save(3, state_for(3, rank)))
    dist.barrier(group)
    live = [(d.epoch, d.attempt) for d in store.committed()]
    facts["strays_after_next"] = strays(root, live)
    facts["committed"] = [e for e, _ in live]
    ck.close()

    fresh = Checkpointer(root, process_group=group, progress=False)  # the real LocalFS and SQLite log
    facts["final_restores"] = {}
    for step in facts["committed"]:
        into = state_for(99, rank)
        got = outcome(lambda: fresh.restore(into, step))
        facts["final_restores"][str(step)] = got["outcome"] == "ok" and got["value"] == step and same(into, state_for(step, rank))
    fresh.close()
    return facts


def main() -> int:
    base = Path(sys.argv[1])
    only = sys.argv[2:]  # case names to run (all by default)
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    rank = dist.get_rank()
    group = dist.new_group(backend="gloo")  # one checkpoint group for every case
    for phase, target, kind in CASES:
        if only and case_name(phase, target, kind) not in only:
            continue
        try:
            facts = run_case(base, rank, group, phase, target, kind)
        except Exception:  # noqa: BLE001 - report and go on: one broken case must not hide the others
            facts = {"case": case_name(phase, target, kind), "rank": rank, "crashed": traceback.format_exc()[-3000:]}
        print(json.dumps(facts), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
