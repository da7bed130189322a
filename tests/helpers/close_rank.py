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
from fito.commit.transport import wait_released


def gloo_tids() -> set[int]:
    """This process's gloo threads by thread id (each gloo group runs a tcp loop and its worker threads)."""
    out = set()
    for p in glob.glob("/proc/self/task/*/comm"):
        try:
            if open(p).read().strip().startswith(("gloo", "pt_gloo")):
                out.add(int(p.split("/")[-2]))
        except OSError:  # the thread ended while listed
            pass
    return out


def gloo_threads() -> int:
    return len(gloo_tids())


def all_tids() -> set[int]:
    """Every thread of this process, named yet or not (a gloo worker names itself a moment after it starts)."""
    return {int(p.split("/")[-1]) for p in glob.glob("/proc/self/task/*")}



def main() -> None:
    root = sys.argv[1]
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    dist.barrier()  # the default group starts its worker threads at its first collective
    out = {"rank": rank, "before": gloo_threads()}
    default_group = all_tids()
    ck = fito.Checkpointer(f"{root}/own")
    ck.save(1, {"w": torch.ones(4)})
    try:
        ck.restore({"w": torch.zeros(3)})  # fails on every rank: a failed restore is the case that aborted
    except fito.FitoError:
        pass
    opened = gloo_tids()
    out["open"] = len(opened)
    ck.close()
    wait_released()  # close() destroys the group in a background thread
    out["closed"] = gloo_threads()
    # the Checkpointer's threads still running: by thread id, as a count would take a worker of the default
    # group that was already there but not yet named at "before" (seen under load) for one left behind
    out["own"] = len(opened - default_group)
    out["left"] = sorted((opened - default_group) & gloo_tids())
    try:
        ck.save(2, {"w": torch.ones(4)})
        out["after_close"] = None
    except fito.FitoError as exc:
        out["after_close"] = type(exc).__name__
    before = all_tids()
    mgr = fito.CheckpointManager(f"{root}/mgr", {"w": torch.ones(4)}, every_steps=None, every_seconds=3600.0)
    mgr.step(1)  # the clock's broadcast on its own group
    opened = gloo_tids()
    out["manager_open"] = len(opened)
    mgr.close()
    wait_released()
    out["manager_own"] = len(opened - before)
    out["manager_left"] = sorted((opened - before) & gloo_tids())
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
