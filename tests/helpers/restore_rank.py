"""One rank of a 2-rank restore where only rank 1's stateful object rejects its checkpoint.
Usage: python -m restore_rank ROOT. Saves step 1, changes every value, restores; prints one JSON line:
{"rank", "error" (class name or null), "unchanged" (every value still as before the restore)}."""
import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import fito


class Picky:
    """A user object that refuses to load on rank 1 (a config mismatch only that rank sees)."""

    def __init__(self, rank: int) -> None:
        self.rank, self.value = rank, 0

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, sd: dict) -> None:
        if self.rank == 1:
            raise ValueError("config mismatch on this rank")
        self.value = sd["value"]


def main() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    torch.manual_seed(rank)
    model = torch.nn.Linear(4, 2)
    picky = Picky(rank)
    ck = fito.Checkpointer(sys.argv[1])
    ck.save(1, {"model": model, "picky": picky})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    picky.value = 7
    before = {k: v.clone() for k, v in model.state_dict().items()}
    error = None
    try:
        ck.restore({"model": model, "picky": picky})
    except fito.FitoError as exc:
        error = type(exc).__name__
    unchanged = picky.value == 7 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    print(json.dumps({"rank": rank, "error": error, "unchanged": unchanged}), flush=True)
    ck.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
