"""Record the protocol commands a real fito.dcp save emits, per machine, normalized for comparison with the
model checker's happy path (tests/test_protocol_differential.py).

As a rank of a multi-rank job: python -m protocol_trace ROOT STEP [MODE]. Saves one small state with dcp.save
through fito.dcp.Writer and prints one JSON line per command this rank's machines executed: [who, type,
fields]. MODE (the abort paths, through fito.dcp.save so that DCP's report reaches the coordinator):
  fail-write  step STEP-1 commits first; then rank 1's storage fails its object's write (EIO)
  timeout     step STEP-1 commits first; then rank 1's write stalls past the process group's timeout
and the last line is ["outcome", error class or "committed"]."""
from __future__ import annotations

import dataclasses
import json
import sys
from datetime import timedelta
from typing import Any

Record = list[Any]  # [who, command type, fields as JSON]


def record(who: str, cmd: Any) -> Record:
    return [who, type(cmd).__name__, json.loads(json.dumps(dataclasses.asdict(cmd)))]


def normalize(records: list[Record]) -> dict[str, list[Any]]:
    """who -> [(command type, fields)], with what legitimately differs between a real save and the model
    replaced by placeholders: the attempt id and epoch (and paths under them), hashes, sizes, the units a
    READY carries (a real rank vouches for its many items, a model rank for one), the fence's value."""
    first = next(fields for _, _, fields in records if "attempt" in fields)
    epoch, attempt = first["epoch"], first["attempt"]
    prefix = f"epochs/{epoch:012d}/{attempt}"

    def norm(key: str, v: Any) -> Any:
        if key in ("hash", "manifest_hash"):
            return "<hash>" if v else ""
        if key == "fence":
            return "<fence>" if v else "<no fence>"
        if key in ("units", "size"):
            return f"<{key}>"
        if key == "reason":  # the words differ (the model names its simulated error); the kind is compared apart
            return "<reason>"
        if key in ("epoch", "newest_epoch") and v == epoch:
            return "<epoch>"
        if key in ("attempt", "newest_attempt") and v == attempt:
            return "<attempt>"
        if isinstance(v, str) and (v == prefix or v.startswith(prefix + "/")):
            return "<attempt dir>" + v[len(prefix):]
        if isinstance(v, dict):
            return {k: norm(k, x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(key, x) for x in v]
        return v

    out: dict[str, list[Any]] = {}
    for who, kind, fields in records:
        out.setdefault(who, []).append([kind, norm("", fields)])
    return out


STALL_S = 15.0  # rank 1's stall in the timeout mode: well past TIMEOUT_S
TIMEOUT_S = 6.0


def main() -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    import fito.dcp
    from fito.storage import LocalFS
    from fito.testing.faults import Fault, FaultPlan, FaultyStorage

    mode = sys.argv[3] if len(sys.argv) > 3 else ""
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S if mode == "timeout" else 60))
    rank, root, step = dist.get_rank(), sys.argv[1], int(sys.argv[2])
    # a replicated tensor (written once, by one rank) and one tensor per rank: every rank writes something
    state = {"shared": torch.arange(6.0), f"own{rank}": torch.full((3,), float(rank))}
    log: list[Record] = []
    observe = lambda who, cmd: log.append(record(who, cmd))  # noqa: E731
    if not mode:
        dcp.save(state, storage_writer=fito.dcp.Writer(root, step, observe=observe), planner=fito.dcp.SavePlanner())
        outcome = "committed"
    else:
        fito.dcp.save(state, storage_writer=fito.dcp.Writer(root, step - 1))  # the previous step, committed
        plan = FaultPlan(rank=rank)
        if mode == "fail-write":
            plan.arm(Fault("unit write", "EIO", rank=1))
        else:
            plan.arm(Fault("unit write", "pause", rank=1, seconds=STALL_S))
        storage = FaultyStorage(LocalFS(root), plan)
        try:
            fito.dcp.save(state, storage_writer=fito.dcp.Writer(storage, step, observe=observe))
            outcome = "committed"
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
            outcome = type(exc).__name__
    for line in log:
        print(json.dumps(line), flush=True)
    print(json.dumps(["outcome", outcome]), flush=True)
    if mode != "timeout":  # after a timeout the group is gone: leave without its teardown
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
