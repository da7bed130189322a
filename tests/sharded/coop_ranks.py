"""One rank of the cooperative-read scenarios (started N times by fito.testing.dist.run_ranks):

    python -m coop_ranks coop TMPDIR

A DDP model + AdamW (replicated state: every rank needs every byte) is saved and restored on the same ranks
through a CountingStorage, which records every read of every object: each rank reports how many bytes it
read that lie in the checkpoint's tensor pieces, the test sums them over the ranks. Then the same restore
with the cooperative read off, and one with a byte flipped between an owner and a receiver."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import fito
from fito import knobs
from fito.coord.sqlite import SqliteDecisionStore
from fito.commit.manifests import load_sharded_manifest
from fito.format.objects import HEADER
from fito.storage.localfs import LocalFS
from fito.testing.compare import clone, diff
from fito.testing.counting import CountingStorage
from fito.testing.scenarios import emit, rank_main
from fito.testing.transit import corrupt_in_transit, die_in_transit

warnings.filterwarnings("ignore")
# The roots here are local directories, where the cooperative read is off by default (one machine's ranks
# share its page cache): on, as on object storage or a POSIX root shared by several machines.
os.environ.setdefault("FITO_COOPERATIVE_READ", "1")
RANK = WORLD = 0


def ddp_state(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(4)])
    return {"model": torch.nn.parallel.DistributedDataParallel(model), "optim": torch.optim.AdamW(model.parameters())}


def snapshot(state: dict[str, Any]) -> dict[str, Any]:
    return clone({"model": state["model"].state_dict(), "optim": state["optim"].state_dict()["state"]})


def counted_restore(root: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Restore through a CountingStorage; this rank's reads, split by what they hit."""
    storage = CountingStorage(LocalFS(root, create=False))
    ck = fito.Checkpointer(storage)
    ck.restore(state)
    ck.close()
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    d = store.committed()[-1]
    store.close()
    m = load_sharded_manifest(LocalFS(root, create=False), d)
    pieces = [(m.objects[c.piece.rank].file, c.piece.offset, c.piece.offset + c.piece.length)
              for t in m.tensors.values() for c in t.chunks]
    in_tensors = sum(max(0, min(at + n, hi) - max(at, lo)) for rel, at, n in storage.reads
                     for obj, lo, hi in pieces if rel == obj)
    return {"tensor_read": in_tensors, "total_read": storage.total(),
            "data_read": storage.of(o.file for o in m.objects), "manifest": storage.of([d.manifest]),
            "tensor_bytes": sum(hi - lo for _, lo, hi in pieces), "stored": sum(o.size for o in m.objects),
            "value_bytes": sum(p.length for p in m.values.values()), "objects": len(m.objects), "header": HEADER.size}


def ddp_count(tmp: Path) -> None:
    root = tmp / "ddp"
    state = ddp_state(0)
    state["model"](torch.randn(4, 256)).sum().backward()
    state["optim"].step()
    want = snapshot(state)
    ck = fito.Checkpointer(root)
    ck.save(1, state)
    ck.close()
    dist.barrier()

    fresh = ddp_state(1)
    on = counted_restore(root, fresh)
    restored = diff(snapshot(fresh), want)
    with knobs.override(FITO_COOPERATIVE_READ=0):  # every rank reads all it needs, as before
        off = counted_restore(root, ddp_state(2))

    target = ddp_state(3)
    before = snapshot(target)
    raised, flipped = None, []
    try:
        if RANK == 0:  # rank 0's first message to its first receiver arrives with one byte flipped
            with corrupt_in_transit() as flipped:
                fito.Checkpointer(root).restore(target)
        else:
            fito.Checkpointer(root).restore(target)
    except fito.FitoError as exc:
        raised = [type(exc).__name__, str(exc)[-600:]]
    untouched = not diff(snapshot(target), before) and not target["optim"].state
    emit("ddp_count", on=on, off=off, restored=restored, raised=raised, flipped=flipped, untouched=untouched)


def dies_in_exchange(tmp: Path) -> None:
    """Rank 1 is SIGKILLed at its first send: rank 0, waiting for its messages, raises PeerLostError (no
    hang) and applies nothing."""
    root = tmp / "die"
    state = ddp_state(0)
    with fito.Checkpointer(root) as ck:
        ck.save(1, state)
    target = ddp_state(3)
    before = snapshot(target)
    raised = None
    try:
        if RANK == 1:
            with die_in_transit():
                fito.Checkpointer(root).restore(target)
        else:
            fito.Checkpointer(root).restore(target)
    except fito.FitoError as exc:
        raised = [type(exc).__name__, str(exc)[-600:]]
    emit("dies_in_exchange", raised=raised, untouched=not diff(snapshot(target), before) and not target["optim"].state)
    os._exit(0)  # the group lost a rank: no orderly teardown to wait for


if __name__ == "__main__":
    rank_main({"coop": [ddp_count], "die": [dies_in_exchange]}, globals())
