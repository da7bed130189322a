"""One rank of DCP's own save and load with `checkpoint_id="s3://..."` (configured by the AWS_* environment).
Usage: python -m dcp_url_ranks URL. Each rank saves a replicated tensor and its own tensor as step 5, then a
fresh Reader loads them back. Prints one JSON line: {"rank", "step", "shared", "mine"}."""
import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

import fito.dcp


def main() -> None:
    url = sys.argv[1]
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    state = {"shared": torch.arange(64, dtype=torch.float32), f"mine{rank}": torch.full((8,), float(rank))}
    dcp.save(state, checkpoint_id=url, storage_writer=fito.dcp.Writer(step=5))
    target = {"shared": torch.zeros(64), f"mine{rank}": torch.zeros(8)}
    reader = fito.dcp.Reader()
    dcp.load(target, checkpoint_id=url, storage_reader=reader)
    print(json.dumps({"rank": rank, "step": reader.loaded_step, "shared": float(target["shared"].sum()),
                      "mine": target[f"mine{rank}"].tolist()}))
    reader.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
