"""Two coordinators of one root, one process each (world size 1, no torch.distributed):
    stale ROOT SECONDS: its save of step 5 fails (the disk is full when it writes the manifest) and its discard
        stalls SECONDS right before it deletes epochs/000000000005 (fito.testing.faults' "pause"). Prints one
        JSON line: the save's error class and what the fault plan fired.
    newer ROOT: prints "ready" once set up, waits for a line on stdin, saves step 5 (all sevens), prints "saved"."""
import json
import sys

import torch

import fito
from fito.testing.faults import Fault, FaultPlan, open_faulty

EPOCH_DIR = "epochs/000000000005"


def stale(root: str, seconds: float) -> None:
    plan = FaultPlan()
    storage, store = open_faulty(root, plan)
    plan.arm(Fault("manifest write", "ENOSPC"), Fault("post-commit GC", "pause", target=EPOCH_DIR, seconds=seconds))
    with fito.Checkpointer(storage, store=store) as ck:
        try:
            ck.save(5, {"w": torch.full((4,), 1.0)})
            error = None
        except fito.FitoError as exc:
            error = type(exc).__name__
    print(json.dumps({"error": error, "fired": [[i.phase, i.kind, i.target] for i in plan.fired()]}), flush=True)


def newer(root: str) -> None:
    with fito.Checkpointer(root) as ck:
        print("ready", flush=True)
        sys.stdin.readline()
        ck.save(5, {"w": torch.full((4,), 7.0)})
        print("saved", flush=True)


if __name__ == "__main__":
    stale(sys.argv[2], float(sys.argv[3])) if sys.argv[1] == "stale" else newer(sys.argv[2])
