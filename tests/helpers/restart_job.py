"""A training job restarting the README's way, on 2 ranks, while the test holds the decision log's lock:
    try: start = restore(state)  except NoCommittedEpochError: start = 0;  then save(start + 10) with keep=2.
Usage: python -m restart_job ROOT checkpointer|dcp MARKS. The lock timeout is 0.5 s (SqliteDecisionStore's
timeout). After its restore each rank writes MARKS/restored-<rank>; a rank that chose a step waits for
MARKS/released (the test releases the lock first) and saves. Prints one JSON line: its restore's outcome."""
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import fito
import fito.dcp
from fito.coord.sqlite import SqliteDecisionStore


def store(root: str) -> SqliteDecisionStore:
    return SqliteDecisionStore(Path(root) / SqliteDecisionStore.FILENAME, timeout=0.5)


def via_checkpointer(root: str, marks: Path, rank: int) -> dict:
    ck = fito.Checkpointer(root, keep=2, store=store(root))
    state = {"w": torch.zeros(4)}
    try:
        try:
            start = ck.restore(state)
        except fito.NoCommittedEpochError:
            start = 0
    except fito.FitoError as exc:
        (marks / f"restored-{rank}").touch()
        ck.close()
        return {"error": type(exc).__name__, "message": str(exc)}
    (marks / f"restored-{rank}").touch()
    wait_for(marks / "released")
    ck.save(start + 10, {"w": torch.full((4,), float(start + 10))})
    ck.close()
    return {"start": start}


def via_dcp(root: str, marks: Path, rank: int) -> dict:
    state = {"w": torch.zeros(4)}
    with fito.dcp.Reader(root, store=store(root) if rank == 0 else None) as reader:
        try:
            try:
                dcp.load(state, storage_reader=reader, planner=fito.dcp.LoadPlanner())
                start = reader.loaded_step
            except CheckpointException as exc:  # DCP carries each rank's FitoError
                causes = [e for e, _ in exc.failures.values()]
                if causes and all(isinstance(e, fito.NoCommittedEpochError) for e in causes):
                    start = 0
                else:
                    raise causes[0] from exc
        except fito.FitoError as exc:
            (marks / f"restored-{rank}").touch()
            return {"error": type(exc).__name__, "message": str(exc)}
    (marks / f"restored-{rank}").touch()
    wait_for(marks / "released")
    step = start + 10
    dcp.save({"w": torch.full((4,), float(step))}, storage_writer=fito.dcp.Writer(root, step, keep=2),
             planner=fito.dcp.SavePlanner())
    return {"start": start}


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)


def main() -> None:
    root, via, marks = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    outcome = (via_checkpointer if via == "checkpointer" else via_dcp)(root, marks, rank)
    print(json.dumps({"rank": rank, **outcome}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
