"""One rank of the packs scenarios of tests/sharded/test_packs.py (started N times by fito.testing.dist):

    python -m pack_ranks GROUP TMPDIR

"save" (2 ranks): a replicated entry of 200 small tensors and a rank-local one (values differ per rank, so
the ranks' hashes find it), plus an RNGState; saved, then restored on the same world size. "restore" (1
rank): the 2-rank checkpoint by the rank_local policies (error, reset, a mapping)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

import fito
from fito.coord.sqlite import SqliteDecisionStore
from fito.commit.manifests import load_sharded_manifest
from fito.storage.localfs import LocalFS
from fito.testing.scenarios import emit, rank_main

warnings.filterwarnings("ignore")
RANK = WORLD = 0


def shared() -> dict[str, torch.Tensor]:
    return {f"t{i}": torch.full((256,), float(i)) for i in range(200)}  # 200 KiB, one replica on disk


def mine(rank: int) -> dict[str, torch.Tensor]:
    return {f"v{i}": torch.full((3,), float(100 * rank + i)) for i in range(10)}


def values(d: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {k: v.tolist() for k, v in d.items()}


def save(tmp: Path) -> None:
    root = tmp / "ck"
    torch.manual_seed(RANK)
    with fito.Checkpointer(root) as ck:
        ck.save(1, {"shared": shared(), "mine": mine(RANK), "rng": fito.RNGState()})
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False, readonly=True)
    (d,) = store.committed()
    store.close()
    m = load_sharded_manifest(LocalFS(root, create=False), d)
    files = {o.file: (root / o.file).stat().st_size for o in m.objects}
    pack = m.tensors["shared/__pack__/0"]
    emit("save", tensors=sorted(m.tensors), pack_bytes=pack.chunks[0].piece.length, files=files)


def restore_same(tmp: Path) -> None:
    torch.manual_seed(50 + RANK)
    state = {"shared": {}, "mine": {}, "rng": fito.RNGState()}
    with fito.Checkpointer(tmp / "ck") as ck:
        step = ck.restore(state)
    got = torch.get_rng_state()
    torch.manual_seed(RANK)  # what this rank's generator was at the save
    emit("restore_same", step=step, shared=values(state["shared"]) == values(shared()),
         mine=values(state["mine"]) == values(mine(RANK)), rng=torch.equal(got, torch.get_rng_state()))


def restore_other(tmp: Path) -> None:
    def fresh() -> dict[str, Any]:
        return {"shared": {"keep": torch.zeros(1)}, "mine": {"keep": torch.zeros(1)}, "rng": fito.RNGState()}

    out: dict[str, Any] = {}
    state = fresh()
    try:
        fito.Checkpointer(tmp / "ck").restore(state)
        out["error"] = None
    except fito.FitoError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["untouched"] = list(state["shared"]) == ["keep"] and list(state["mine"]) == ["keep"]
    state = fresh()
    fito.Checkpointer(tmp / "ck").restore(state, rank_local="reset")
    out["reset"] = {"shared": values(state["shared"]) == values(shared()), "mine": list(state["mine"])}
    state = fresh()
    fito.Checkpointer(tmp / "ck").restore(state, rank_local={0: 1})
    out["mapped"] = {"shared": values(state["shared"]) == values(shared()), "mine": values(state["mine"]) == values(mine(1))}
    emit("restore_other", **out)


if __name__ == "__main__":
    rank_main({"save": [save, restore_same], "restore": [restore_other]}, globals())
