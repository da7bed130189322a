"""One rank of a job checkpointing to an s3:// URL (configured by the AWS_* environment).
Usage: python -m s3_ranks URL save|restore. save: steps 1 and 2 of a model and a per-rank tensor;
restore: a fresh job restores. Prints one JSON line: {"rank", "step", "weight_sum", "mine"}."""
import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import fito


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 16)
    mine = torch.full((4,), float(rank))
    ck = fito.Checkpointer(url, keep=1)
    step = None
    if mode == "save":
        for step in (1, 2):
            with torch.no_grad():
                model.weight.add_(1.0)
            mine.add_(10.0)
            ck.save(step, {"model": model, "mine": mine})
    else:
        with torch.no_grad():
            model.weight.zero_()
        mine.zero_()
        step = ck.restore({"model": model, "mine": mine})
    print(json.dumps({"rank": rank, "step": step, "weight_sum": round(float(model.weight.sum()), 3),
                      "mine": mine.tolist(), "committed": ck.committed()}))
    ck.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
