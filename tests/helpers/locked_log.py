"""A rank that saves and restores while the test holds the decision log's lock: every rank must get a
FitoError (none may hang waiting for rank 0). Usage: python -m tests.helpers.locked_log ROOT.
Prints one JSON line per call with the error's class and message."""
import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import fito
from fito.coord.sqlite import SqliteDecisionStore


def main() -> None:
    root = sys.argv[1]
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    ck = fito.Checkpointer(root, store=SqliteDecisionStore(f"{root}/{SqliteDecisionStore.FILENAME}", timeout=0.5))
    for call in ("save", "restore"):
        try:
            ck.save(2, {"w": torch.ones(4)}) if call == "save" else ck.restore({"w": torch.zeros(4)})
            outcome = {"call": call, "error": None}
        except fito.FitoError as exc:
            outcome = {"call": call, "error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(outcome), flush=True)
    ck.close()  # destroys fito's group before exit (a failed save/restore's traceback would keep it to exit)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
