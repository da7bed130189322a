"""close() releases the gloo groups fito created: Checkpointer.close() and CheckpointManager.close() destroy
them (in a background thread that wait_released() joins), so none is left to interpreter exit (where one still
letting go of the last collective aborts the process). A group the caller passed stays usable.
Usage: python -m close_rank ROOT. Prints one JSON line: {"rank", "before", "open", "closed" (gloo threads
before the Checkpointer, while open, after close), "manager_open", "manager_closed", "after_close" (what a
save on the closed Checkpointer raises), "caller_group_sum" (an all_reduce on the caller's group after a
Checkpointer on it was closed)}."""
import glob
import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import fito
from fito.ckpt.transport import wait_released


def gloo_threads() -> int:
    """This process's gloo threads (each gloo group runs a tcp loop and its worker threads)."""
    names = [open(p).read().strip() for p in glob.glob("/proc/self/task/*/comm")]
    return sum(n.startswith(("gloo", "pt_gloo")) for n in names)



def main() -> None:
    root = sys.argv[1]
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    dist.barrier()  # the default group starts its worker threads at its first collective
    out = {"rank": rank, "before": gloo_threads()}
    ck = fito.Checkpointer(f"{root}/own")
    ck.save(1, {"w": torch.ones(4)})
    try:
        ck.restore({"w": torch.zeros(3)})  # fails on every rank: a failed restore is the case that aborted
    except fito.FitoError:
        pass
    out["open"] = gloo_threads()
    ck.close()
    wait_released()  # close() destroys the group in a background thread
    out["closed"] = gloo_threads()
    try:
        ck.save(2, {"w": torch.ones(4)})
        out["after_close"] = None
    except fito.FitoError as exc:
        out["after_close"] = type(exc).__name__
    mgr = fito.CheckpointManager(f"{root}/mgr", {"w": torch.ones(4)}, every_steps=None, every_seconds=3600.0)
    mgr.step(1)  # the clock's broadcast on its own group
    out["manager_open"] = gloo_threads()
    mgr.close()
    wait_released()
    out["manager_closed"] = gloo_threads()
    group = dist.new_group(backend="gloo")
    with fito.Checkpointer(f"{root}/theirs", process_group=group) as theirs:
        theirs.save(1, {"w": torch.ones(4)})
    t = torch.ones(1)
    dist.all_reduce(t, group=group)
    out["caller_group_sum"] = t.item()
    print(json.dumps(out), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
