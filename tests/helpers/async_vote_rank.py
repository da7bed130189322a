"""A background save's stall on 2 ranks: only capture and the copy to host memory; the rank-local vote (hashes
of the plain tensors, a gather and a broadcast) runs in the background on the staged copy.
Usage: python -m async_vote_rank ROOT. Prints one JSON line per rank: {"rank", "stall" (rank 0's
save(blocking=False) call while rank 1 comes 3 s late), "restored" (the tensor restored after rank 1 changed
its live copy right after the call), "captured_error" (what a capture failing on rank 1 raised: on rank 1 the
call, on rank 0 the handle's wait), "committed"}."""
import json
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

import fito


class Broken:
    """A stateful entry whose state_dict raises on rank 1 only: that rank's capture fails."""

    def state_dict(self) -> dict:
        if dist.get_rank() == 1:
            raise RuntimeError("rank 1 cannot capture this")
        return {"x": 1}

    def load_state_dict(self, sd: dict) -> None:
        pass


def main() -> None:
    root = sys.argv[1]
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    out: dict = {"rank": rank}
    w = torch.arange(1024, dtype=torch.float32)
    ck = fito.Checkpointer(root, progress=False)
    ck.save(1, {"w": w})  # the group, the fence and the staging code are warm
    dist.barrier()
    if rank == 1:
        time.sleep(3)  # rank 0's call must not wait for this rank's vote
    t = time.perf_counter()
    handle = ck.save(2, {"w": w}, blocking=False)
    out["stall"] = time.perf_counter() - t
    if rank == 1:
        w.add_(1000)  # right after the call: the staged copy is what is hashed, voted on and written
    handle.wait()
    got = {"w": torch.zeros(1024)}
    ck.restore(got)
    out["restored"] = float(got["w"].sum())
    try:
        ck.save(3, {"w": w, "b": Broken()}, blocking=False)
        ck.wait()
        out["captured_error"] = None
    except Exception as exc:  # noqa: BLE001 - rank 1 raises its own error, rank 0 the save's
        out["captured_error"] = f"{type(exc).__name__}: {exc}"
    out["committed"] = ck.committed()
    ck.close()
    print(json.dumps(out), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
