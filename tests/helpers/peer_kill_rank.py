"""One rank of tests/test_peer_lost.py: save step 1 together, then SIGKILL one rank at one point of the save
of step 2 and report, on each survivor, what the save raised and how long it took.

argv: root, via ("ckpt": Checkpointer.save; "dcp": fito.dcp.save with fito.dcp.Writer; "rawdcp": plain
torch dcp.save with fito.dcp.Writer), point, victim rank. Points: "agree" (the victim dies just before the
save: survivors fail in the first collective, the Checkpointer's agreement or DCP's plan gather), "write"
(when it creates its object of step 2), "finish" (after it persisted that object: before the READYs are
gathered and the coordinator finishes), "restore" (just before a restore of step 1, not a save). The victim dies by a real SIGKILL from inside its storage calls.
Prints one JSON line per survivor; the test asserts on it."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import fito
import fito.dcp
from fito.storage.localfs import LocalFS
from fito.protocol.layout import parse_attempt_path, parse_object

STEP = 2


class KillAt(LocalFS):
    """The real local storage, except that rank `victim` SIGKILLs itself at `point` of step 2's object."""

    def __init__(self, root: Path, point: str, armed: bool) -> None:
        super().__init__(root)
        self.point, self.armed = point, armed

    def _mine(self, rel: str) -> bool:
        path = parse_attempt_path(rel.rsplit("/", 1)[0])
        return self.armed and path is not None and path.step == STEP and parse_object(rel.rsplit("/", 1)[-1]) is not None

    def create(self, rel: str) -> BinaryIO:
        if self.point == "write" and self._mine(rel):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().create(rel)

    def persist(self, rel: str) -> None:
        super().persist(rel)
        if self.point == "finish" and self._mine(rel):
            os.kill(os.getpid(), signal.SIGKILL)


def state(step: int, rank: int) -> dict[str, Any]:
    return {"w": torch.full((4096,), float(step)), "b": torch.arange(16) + rank, "meta": {"step": step}}


def main() -> int:
    root, via, point, victim = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    storage = KillAt(root, point, armed=rank == victim)
    ck = fito.Checkpointer(storage, progress=False) if via == "ckpt" else None
    group = dist.new_group(backend="gloo") if ck is None else None

    def save(step: int) -> None:
        if ck is not None:
            ck.save(step, state(step, rank))
            return
        s = {"w": torch.full((4096,), float(step)), "meta": {"step": step}}  # replicated: DCP writes each once
        writer = fito.dcp.Writer(storage, step)
        if via == "dcp":
            fito.dcp.save(s, storage_writer=writer, process_group=group)
        else:
            dcp.save(s, storage_writer=writer, planner=fito.dcp.SavePlanner(), process_group=group)

    save(1)
    dist.barrier()
    if rank == victim and point in ("agree", "restore"):
        os.kill(os.getpid(), signal.SIGKILL)
    start = time.monotonic()
    out: dict[str, Any] = {"rank": rank}
    try:
        if point == "restore":  # the victim died before a restore: its refusal on every survivor
            assert ck is not None, "point 'restore' is a Checkpointer's"
            ck.restore(state(0, rank))
        else:
            save(STEP)
        out["outcome"] = "ok"
    except BaseException as exc:  # noqa: BLE001 - reported: the test asserts on the class
        out.update(outcome=type(exc).__name__, message=str(exc)[:2000], failures=sorted(getattr(exc, "failures", {}) or {}),
                   dcp=isinstance(exc, CheckpointException))
    out["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(out), flush=True)
    os._exit(0)  # the group is broken: no teardown that could wait on the dead peer


if __name__ == "__main__":
    sys.exit(main())
