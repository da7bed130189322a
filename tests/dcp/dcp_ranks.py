"""One rank of a multi-rank fito.dcp scenario group (started N times by fito.testing.dist.run_ranks).

    python -m dcp_ranks GROUP TMPDIR

Each scenario runs on every rank and prints one JSON line {"scenario", "rank", ...}; a scenario that raises
reports its error instead, so one broken scenario does not hide the others' results. Scenarios of a group
share one process start (importing torch costs seconds per process)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import fito.dcp
from fito import knobs
from fito.testing.compare import clone, diff
from fito.testing.scenarios import emit, rank_main
from fito.coord.sqlite import SqliteDecisionStore
from fito.errors import FitoError
from fito.storage.localfs import LocalFS
from fito.protocol.layout import parse_object

warnings.filterwarnings("ignore")
RANK = WORLD = 0
SENTINEL = -7.0


def failure(exc: BaseException) -> dict[str, Any]:
    """What a rank saw: the exception type, and for DCP's CheckpointException each rank's cause."""
    causes = {str(r): f"{type(e).__name__}: {e}" for r, (e, _tb) in getattr(exc, "failures", {}).items()}
    fito_causes = [r for r, (e, _tb) in getattr(exc, "failures", {}).items() if isinstance(e, FitoError)]
    return {"raised": type(exc).__name__, "causes": causes, "fito_cause_ranks": sorted(fito_causes),
            "message": str(exc)[-600:]}


# ---------------------------------------------------------------- FSDP2 + AdamW
def fsdp_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 18), torch.nn.ReLU(), torch.nn.Linear(18, 5))  # 5 rows: 0 on rank 3 of 4
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        model(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def full_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    msd, osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    return clone({"model": msd, "optim": osd})  # copies: the step counters alias the optimizer's


def fsdp_save(tmp: Path) -> None:
    root = tmp / "fsdp"
    model, opt = fsdp_model()
    train(model, opt, 3, seed=1)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, storage_writer=fito.dcp.Writer(root, 1), planner=fito.dcp.SavePlanner())
    full1 = full_state(model, opt)
    train(model, opt, 1, seed=2)
    msd, osd = get_state_dict(model, opt)
    fut = dcp.async_save({"model": msd, "optim": osd}, storage_writer=fito.dcp.Writer(root, 2), planner=fito.dcp.SavePlanner())
    fut.result()
    full2 = full_state(model, opt)
    if RANK == 0:
        torch.save(full1, tmp / "fsdp_oracle_1.pt")  # test oracles only, never part of a checkpoint
        torch.save(full2, tmp / "fsdp_oracle_2.pt")
    emit("fsdp_save", local_types=sorted({type(v).__name__ for v in msd.values()}), committed=committed(root))


def fsdp_restore(tmp: Path, step: int | None, expect: int) -> None:
    model, opt = fsdp_model()
    msd, osd = get_state_dict(model, opt)  # a fresh optimizer: get_state_dict initialises its state
    with fito.dcp.Reader(tmp / "fsdp", step=step) as reader:  # leaving it destroys the Reader's own gloo group
        dcp.load({"model": msd, "optim": osd}, storage_reader=reader, planner=fito.dcp.LoadPlanner())
    closed = getattr(reader.transport, "closed", None)
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd)
    want = torch.load(tmp / f"fsdp_oracle_{expect}.pt", weights_only=True)
    got = full_state(model, opt)
    mismatches = diff(got, want)
    steps = sorted({float(s["step"]) for s in got["optim"]["state"].values()})
    train(model, opt, 1, seed=3)  # the restored state trains on
    emit(f"fsdp_restore_{WORLD}", loaded_step=reader.loaded_step, mismatches=mismatches, opt_steps=steps, closed=closed,
         compared=len(want["model"]) + sum(len(s) for s in want["optim"]["state"].values()))


# ---------------------------------------------------------------- TP DTensors
TP_SHAPES = {"rows": ((10, 6), Shard(0)), "cols": ((7, 5), Shard(1)), "rep": ((5, 3), Replicate())}


def tp_full(name: str) -> torch.Tensor:
    shape, _ = TP_SHAPES[name]
    return torch.arange(shape[0] * shape[1], dtype=torch.float32).reshape(shape) * (1 + len(name))


def tp_save(tmp: Path) -> None:
    mesh = init_device_mesh("cpu", (WORLD,))
    state = {name: distribute_tensor(tp_full(name), mesh, [p]) for name, (_, p) in TP_SHAPES.items()}
    state["plain"] = torch.linspace(0, 1, 9, dtype=torch.float64)
    dcp.save(state, storage_writer=fito.dcp.Writer(tmp / "tp", 1), planner=fito.dcp.SavePlanner())
    long = distribute_tensor(torch.arange(256.0).reshape(64, 4), mesh, [Shard(0)])  # 2 chunks of 8 blocks
    dcp.save({"long": long}, storage_writer=fito.dcp.Writer(tmp / "blocks", 1), planner=fito.dcp.SavePlanner())
    emit("tp_save", committed=committed(tmp / "tp"))


def tp_restore(tmp: Path) -> None:
    mesh = init_device_mesh("cpu", (WORLD,))
    state = {name: distribute_tensor(torch.zeros(shape), mesh, [p]) for name, (shape, p) in TP_SHAPES.items()}
    state["plain"] = torch.zeros(9, dtype=torch.float64)
    dcp.load(state, storage_reader=fito.dcp.Reader(tmp / "tp"), planner=fito.dcp.LoadPlanner())
    equal = {name: bool(torch.equal(state[name].full_tensor(), tp_full(name))) for name in TP_SHAPES}
    equal["plain"] = bool(torch.equal(state["plain"], torch.linspace(0, 1, 9, dtype=torch.float64)))
    local_rows = list(state["rows"].to_local().shape)
    # the same checkpoint into plain (unsharded) tensors on every rank
    plain = {name: torch.zeros(shape) for name, (shape, _) in TP_SHAPES.items()}
    plain["plain"] = torch.zeros(9, dtype=torch.float64)
    dcp.load(plain, storage_reader=fito.dcp.Reader(tmp / "tp"), planner=fito.dcp.LoadPlanner())
    equal.update({f"{name} as plain": bool(torch.equal(plain[name], tp_full(name))) for name in TP_SHAPES})
    long = {"long": distribute_tensor(torch.zeros(64, 4), mesh, [Shard(0)])}
    reader = fito.dcp.Reader(tmp / "blocks")
    dcp.load(long, storage_reader=reader, planner=fito.dcp.LoadPlanner())
    equal["long"] = bool(torch.equal(long["long"].full_tensor(), torch.arange(256.0).reshape(64, 4)))
    emit(f"tp_restore_{WORLD}", equal=equal, local_rows=local_rows, long_bytes_read=reader.bytes_read)


# ---------------------------------------------------------------- DDP: bytes written
def ddp_bytes(tmp: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)]))
    root = tmp / "ddp"
    bar = Bar()
    with knobs.override(FITO_BLOCK_BYTES=8 << 20):  # the default block, not the group's tiny test blocks
        dcp.save({"model": model.state_dict()}, storage_writer=fito.dcp.Writer(root, 1, progress=bar), planner=fito.dcp.SavePlanner())
    dist.barrier()
    replica = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    files = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "decisions.sqlite"
             and not p.name.startswith("decisions.sqlite")}
    objects = [size for name, size in sorted(files.items()) if parse_object(name.rsplit("/", 1)[-1]) is not None]
    target = {"model": {k: torch.zeros_like(v) for k, v in model.state_dict().items()}}
    dcp.load(target, storage_reader=fito.dcp.Reader(root), planner=fito.dcp.LoadPlanner())
    same = all(torch.equal(target["model"][k], v) for k, v in model.state_dict().items())
    emit("ddp_bytes", replica=replica, written=sum(files.values()), objects=objects, restored_equal=same,
         bar_total=bar.total, bar_done=bar.done)


class Bar:
    """A progress callback as fito.ckpt.progress makes them: byte counts, and the total once it is planned."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n

    def resize(self, total: int) -> None:
        self.total = total


# ---------------------------------------------------------------- refusals
def differing_replicas(tmp: Path) -> None:
    root = tmp / "differ"
    state = {"w": torch.ones(4), "per_rank": torch.full((3,), float(RANK))}  # one name, a different value per rank
    try:
        dcp.save(state, storage_writer=fito.dcp.Writer(root, 1), planner=fito.dcp.SavePlanner())
        out: dict[str, Any] = {"raised": None}
    except BaseException as exc:  # noqa: BLE001 - CheckpointException is a BaseException
        out = failure(exc)
    dist.barrier()
    emit("differing_replicas", committed=committed(root), files=sorted(str(p.relative_to(root)) for p in root.rglob("*.fito")), **out)


def flipped_bit(tmp: Path) -> None:
    root = tmp / "flip"
    mesh = init_device_mesh("cpu", (WORLD,))

    def state(fill: float | None) -> dict[str, Any]:
        def t(x: torch.Tensor) -> torch.Tensor:
            return x if fill is None else torch.full_like(x, fill)
        return {"rows": distribute_tensor(t(tp_full("rows")), mesh, [Shard(0)]), "rep": t(torch.arange(6.0)),
                "meta": {"epoch": 5 if fill is None else -1}}

    dcp.save(state(None), storage_writer=fito.dcp.Writer(root, 1), planner=fito.dcp.SavePlanner())
    dist.barrier()
    if RANK == 0:
        flip_one_bit_of_rank(root, 1)
    dist.barrier()
    target = state(SENTINEL)
    before = {"rows": target["rows"].to_local().clone(), "rep": target["rep"].clone(), "meta": dict(target["meta"])}
    try:
        dcp.load(target, storage_reader=fito.dcp.Reader(root), planner=fito.dcp.LoadPlanner())
        out: dict[str, Any] = {"raised": None}
    except BaseException as exc:  # noqa: BLE001
        out = failure(exc)
    untouched = (torch.equal(target["rows"].to_local(), before["rows"]) and torch.equal(target["rep"], before["rep"])
                 and target["meta"] == before["meta"])
    emit("flipped_bit", untouched=untouched, **out)


def flip_one_bit_of_rank(root: Path, rank: int) -> None:
    from fito.commit.manifests import load_sharded_manifest
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    d = store.committed()[-1]
    store.close()
    m = load_sharded_manifest(LocalFS(root, create=False), d)
    piece = next(c.piece for t in m.tensors.values() for c in t.chunks if c.piece.rank == rank and c.piece.length)
    path = root / m.objects[rank].file
    with open(path, "r+b") as f:
        f.seek(piece.offset + piece.length // 2)
        byte = f.read(1)[0]
        f.seek(piece.offset + piece.length // 2)
        f.write(bytes([byte ^ 0x10]))


# ---------------------------------------------------------------- a save killed mid-write
class DyingStorage(LocalFS):
    """LocalFS whose new files kill the process after `limit` bytes, as a SIGKILL mid-write would."""

    def __init__(self, root: Path, limit: int) -> None:
        super().__init__(root)
        self.limit = limit

    def create(self, rel: str) -> BinaryIO:
        return _Dying(super().create(rel), self.limit)  # type: ignore[return-value]


class _Dying:
    def __init__(self, f: BinaryIO, limit: int) -> None:
        self.f, self.left = f, limit

    def write(self, data: Any) -> int:
        if self.left <= 0:
            os._exit(9)
        n = self.f.write(memoryview(data)[: self.left])
        self.left -= n
        return n

    def __enter__(self) -> "_Dying":
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def killed_save(tmp: Path) -> None:
    """Last scenario of its group: rank 1 dies while writing step 3 of the FSDP checkpoint."""
    root = tmp / "fsdp"
    model, opt = fsdp_model()
    train(model, opt, 1, seed=4)
    msd, osd = get_state_dict(model, opt)
    storage: LocalFS = DyingStorage(root, 100) if RANK == 1 else LocalFS(root)
    emit("killed_save_started")
    try:
        dcp.save({"model": msd, "optim": osd}, storage_writer=fito.dcp.Writer(storage, 3), planner=fito.dcp.SavePlanner())
        out: dict[str, Any] = {"raised": None}
    except BaseException as exc:  # noqa: BLE001
        out = failure(exc)
    emit("killed_save", committed=committed(root), **out)
    os._exit(0)  # the group is broken: do not wait in destroy_process_group


def committed(root: Path) -> list[int]:
    if not (root / SqliteDecisionStore.FILENAME).exists():
        return []
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    try:
        return [d.epoch for d in store.committed()]
    finally:
        store.close()


# ---------------------------------------------------------------- groups
GROUPS: dict[str, list[Callable[[Path], None]]] = {
    "save": [fsdp_save, lambda t: fsdp_restore(t, step=1, expect=1), tp_save, ddp_bytes, differing_replicas,
             flipped_bit, killed_save],
    "restore": [lambda t: fsdp_restore(t, step=None, expect=2), tp_restore],
}


if __name__ == "__main__":
    rank_main(GROUPS, globals())
