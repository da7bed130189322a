"""One rank of the multi-rank mutation fuzzer (tests/test_mutation_fuzz_multirank.py), started by
fito.testing.scenarios.run_scenarios:

    python -m fuzz_ranks GROUP TMPDIR

"save+restore" (2 ranks): save three steps of an FSDP2 model + AdamW, a replicated scheduler and plain
tensor, a packed entry of small tensors and rank-local entries (RNGState, DataPosition, a tensor that
differs per rank) to TMPDIR/pristine; rank 0 then writes every mutated copy (TMPDIR/cases.json lists them,
with each root's file digests before any restore); then every case is restored on both ranks, with and
without fallback. "restore" (1 rank): every case again, with a rank_local policy per case. Each restore
reports one JSON line per rank: its outcome category, the step, and any broken rule. The oracles (full
tensors of each step, per rank) are written with torch.save by this helper only, never by fito. Any hang
ends in 20 s (gloo timeouts) or 45 s (faulthandler prints every thread's stack and exits). FUZZ_ONLY="3,17"
restores only those cases (debugging).

"dcp-save+restore" (2 ranks) and "dcp-restore" (1 rank): the same for a root written by `fito.dcp.save` with
fito.dcp.Writer (the FSDP2 model and AdamW state of `get_state_dict`, a plain tensor and JSON values) and
restored by `dcp.load` with fito.dcp.Reader: TMPDIR/cases-dcp.json. FITO_FUZZ_SEEDS=N (default 1) runs N seeds
per family and variant there: the in-suite run is small, a campaign sets it high."""
from __future__ import annotations

import faulthandler
import json
import os
import random
import shutil
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

import fito
import fito.dcp
from fito.testing.compare import clone, diff
from fito.testing.scenarios import emit, run_group

warnings.filterwarnings("ignore")
RANK = WORLD = 0
GROUP: Any = None
STEPS = (1, 2, 3)
SEEDS = 5  # per family of raw damage; a forgery family gets one seed per variant, the sharded ones two
VARIANTS = {"decision_log_damage": 5, "decision_record_edit": 15, "forge_v2_manifest": 20, "forge_v2_object_header": 10,
            "swapped_rank_objects": 4, "rank_local_copy_replaced": 12, "dtensor_chunk_wrong_rank": 6}
FAMILIES = ["bit_flip", "truncation", "extension", "deletion", "other_epochs_file", "symlink_in_root", "symlink_out_of_root",
            "symlinked_attempt_dir", "directory_instead_of_file", "decision_log_damage", "decision_record_edit",
            "forge_v2_manifest", "forge_v2_object_header", "swapped_rank_objects", "rank_local_copy_replaced",
            "dtensor_chunk_wrong_rank"]
POLICIES: list[Any] = ["reset", {0: 0}, {0: 1}]  # on 1 rank, by case number


# ---------------------------------------------------------------- the state
def build(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)  # 16 rows split 8/8 (equal chunks), 5 rows split 3/2
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    state = {"model": model, "optim": opt, "sched": torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5),
             "shared": {"table": torch.arange(128, dtype=torch.float32) * seed},  # 512 bytes: an item of its own
             "small": {f"t{i}": torch.full((3,), float(seed * 10 + i)) for i in range(6)},  # packed
             "rng": fito.RNGState(), "data": fito.DataPosition(seed=7),
             "mine": {"v": torch.full((4,), float(100 * RANK + seed))}}  # differs per rank: rank-local by its hash
    torch.manual_seed(1000 * seed + RANK)
    np.random.seed(1000 * seed + RANK)
    random.seed(1000 * seed + RANK)
    return state


def train(state: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(state["data"].index * 10 + RANK)
    state["model"](torch.randn(4, 8, generator=g)).pow(2).mean().backward()
    state["optim"].step()
    state["optim"].zero_grad()
    state["sched"].step()
    state["data"].advance(4, 64)
    torch.rand(3), np.random.rand(), random.random()  # every generator moves
    for d in (state["shared"], state["small"], state["mine"]):
        for t in d.values():
            t += 1


def rng_values() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(), "python": random.getstate()}


def local(state: dict[str, Any]) -> dict[str, Any]:
    """What a failed restore must leave as it was on this rank (no collective: failures need not agree)."""
    model, opt = state["model"], state["optim"]
    return {"rng": rng_values(), "model": {k: v.to_local().clone() for k, v in model.state_dict().items()},
            "optim_state": len(opt.state), "grads": [p.grad is None for p in model.parameters()],
            "groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
            "sched": state["sched"].state_dict(), "data": state["data"].state_dict(),
            **{n: clone(state[n]) for n in ("shared", "small", "mine")}}


def full(state: dict[str, Any]) -> dict[str, Any]:
    """Everything a restore sets, DTensors as full tensors (collective: every rank calls it together)."""
    model, opt = state["model"], state["optim"]
    whole = lambda v: v.full_tensor() if isinstance(v, DTensor) else v.clone()  # noqa: E731
    return {"rng": rng_values(), "model": {k: whole(v) for k, v in model.state_dict().items()},
            "optim": {n: {k: whole(v) for k, v in opt.state[p].items()} for n, p in model.named_parameters() if p in opt.state},
            "groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
            "sched": state["sched"].state_dict(), "data": state["data"].state_dict(),
            **{n: clone(state[n]) for n in ("shared", "small", "mine")}}


RANK_LOCAL = ("rng", "data", "mine")


# ---------------------------------------------------------------- save, mutate
def save(tmp: Path) -> None:
    root = tmp / "pristine"
    state = build(0)
    oracle = {}
    with fito.Checkpointer(root, process_group=GROUP) as ck:
        for step in STEPS:
            train(state)
            ck.save(step, state)
            oracle[step] = full(state)
        committed = ck.committed()
    torch.save(oracle, tmp / f"oracle-rank{RANK}.pt")
    dist.barrier()
    if RANK == 0:
        mutate(tmp, root)
    dist.barrier()
    emit("saved", committed=committed)


def mutate(tmp: Path, source: Path, *, prefix: str = "", families_of: list[str] = FAMILIES, scale: int = 1) -> None:
    from mutations import MUTATIONS, Root
    from mutations_multirank import MULTIRANK_MUTATIONS
    from root_files import decisions, digests
    from fito.ckpt.inspect import open_store

    _, store = open_store(source)
    attempts = {d.epoch: d.attempt for d in store.committed()}
    store.close()
    families = {**MUTATIONS, **MULTIRANK_MUTATIONS}
    cases = []
    for family in families_of:
        for seed in range(VARIANTS.get(family, SEEDS) * scale):
            n = len(cases)
            case = tmp / f"cases{prefix}" / str(n)
            root, outside = case / "ckpt", case / "outside"
            outside.mkdir(parents=True)
            shutil.copytree(source, root, symlinks=True)
            rank = random.Random(f"{family}-{seed}-rank").randrange(2)  # whose object or copy is damaged
            touched = sorted(set(families[family](random.Random(f"{family}-{seed}"), Root(root, attempts, outside, seed, rank))))
            cases.append({"case": n, "family": family, "seed": seed, "rank": rank, "root": str(root), "touched": touched,
                          "files": digests(root, set(touched)), "decisions": decisions(root)})
    (tmp / f"cases{prefix}.json").write_text(json.dumps(cases))


# ---------------------------------------------------------------- restore every case
def restore_all(tmp: Path) -> None:
    cases = json.loads((tmp / "cases.json").read_text())
    oracles = {r: torch.load(tmp / f"oracle-rank{r}.pt", weights_only=False) for r in range(2)}
    only = os.environ.get("FUZZ_ONLY")  # debugging: "3,17" restores those cases only
    for case in [c for c in cases if not only or str(c["case"]) in only.split(",")]:
        policy = "error" if WORLD == 2 else POLICIES[case["case"] % len(POLICIES)]
        for fallback in (False, True):
            # a restore that hangs past the gloo timeouts: every thread's stack on stderr, and this rank exits
            faulthandler.dump_traceback_later(45, exit=True)
            emit("restore", case=case["case"], fallback=fallback, **restore_once(case, fallback, policy, oracles))
            faulthandler.cancel_dump_traceback_later()


def outcome_of(exc: BaseException) -> list[Any]:
    """A refusal as the ranks compare it: ["fito" (a FitoError) or "other" (a bug), class, message]."""
    return ["fito" if isinstance(exc, fito.FitoError) else "other", type(exc).__name__, str(exc)[:300]]


def judge_outcome(mine: list[Any], target: dict[str, Any], before: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Gather every rank's outcome ["ok"|"fito"|"other", step or error type, message] and judge it; True when
    that decides the case (an error, ranks that disagree, an unknown step) before the restored values count."""
    outcomes: list[Any] = [None] * WORLD
    dist.all_gather_object(outcomes, mine)  # on the default group: a split outcome must not hang the check
    out: dict[str, Any] = {"outcomes": outcomes, "problem": ""}
    if mine[0] == "other":
        out["category"], out["problem"] = f"NOT a FitoError:{mine[1]}", f"{mine[1]}: {mine[2]}"
    elif mine[0] == "fito":
        out["category"] = f"FitoError:{mine[1]}"
        changed = diff(local(target), before)
        if changed:
            out["problem"] = f"{mine[1]} but the caller's state changed at {changed[:4]}: {mine[2]}"
    if {o[0] for o in outcomes} != {mine[0]} or len({json.dumps(o[:2]) for o in outcomes if o[0] == "ok"}) > 1:
        out["problem"] += f" ranks disagree: {[o[:2] for o in outcomes]}"
        out.setdefault("category", "ranks DISAGREE")
        return out, True
    if mine[0] != "ok":
        return out, True
    if mine[1] not in STEPS:
        return {**out, "category": "restored an unknown step", "problem": f"restore returned step {mine[1]}"}, True
    return out, False


def restore_once(case: dict[str, Any], fallback: bool, policy: Any, oracles: dict[int, Any]) -> dict[str, Any]:
    target = build(7 + case["case"])
    before = local(target)
    try:
        with fito.Checkpointer(case["root"], process_group=GROUP) as ck:
            step = ck.restore(target, fallback=fallback, rank_local=policy)
        mine: list[Any] = ["ok", step, ""]
    except Exception as exc:  # noqa: BLE001 - the property under test: nothing but FitoError, ever
        mine = outcome_of(exc)
    out, decided = judge_outcome(mine, target, before)
    if decided:
        return out
    want = dict(oracles[RANK][step])
    source = RANK if WORLD == 2 else policy.get(0) if isinstance(policy, dict) else None
    for name in RANK_LOCAL:
        want[name] = oracles[source][step][name] if source is not None else before[name]
    wrong = diff(full(target), want)
    if wrong:
        return {**out, "category": "restored WRONG values", "problem": f"step {step} restored, but {wrong[:4]} differ"}
    out["category"] = "restored-newest" if step == STEPS[-1] else "restored-older-by-fallback" if fallback else "restored-older-without-fallback"
    return out


# ---------------------------------------------------------------- the same through fito.dcp
DCP_FAMILIES = [f for f in FAMILIES if f != "rank_local_copy_replaced"]  # that one needs the Checkpointer's per-rank names
DCP_SEEDS = int(os.environ.get("FITO_FUZZ_SEEDS", "1"))


def dcp_state(state: dict[str, Any], step: int | None) -> dict[str, Any]:
    """What a dcp.save / dcp.load user passes: get_state_dict's model and optimizer state, a tensor, values."""
    msd, osd = get_state_dict(state["model"], state["optim"])
    meta = {"step": step, "tags": ["a", step]} if step is not None else {"step": -1, "tags": None}
    return {"model": msd, "optim": osd, "shared": state["shared"], "meta": meta}


def dcp_full(state: dict[str, Any]) -> dict[str, Any]:
    got = full(state)  # collective
    return {k: got[k] for k in ("model", "optim", "groups", "shared")}


def save_dcp(tmp: Path) -> None:
    root = tmp / "pristine-dcp"
    state = build(0)
    oracle = {}
    for step in STEPS:
        train(state)
        fito.dcp.save(dcp_state(state, step), storage_writer=fito.dcp.Writer(root, step), process_group=GROUP)
        oracle[step] = {**dcp_full(state), "meta": {"step": step, "tags": ["a", step]}}
    torch.save(oracle, tmp / f"oracle-dcp-rank{RANK}.pt")
    dist.barrier()
    if RANK == 0:
        mutate(tmp, root, prefix="-dcp", families_of=DCP_FAMILIES, scale=DCP_SEEDS)
    dist.barrier()
    with fito.Checkpointer(root, process_group=GROUP) as ck:
        emit("saved", committed=ck.committed())


def restore_dcp_all(tmp: Path) -> None:
    cases = json.loads((tmp / "cases-dcp.json").read_text())
    oracle = torch.load(tmp / "oracle-dcp-rank0.pt", weights_only=False)  # no rank-local state: rank 0's is everyone's
    only = os.environ.get("FUZZ_ONLY")
    for case in [c for c in cases if not only or str(c["case"]) in only.split(",")]:
        faulthandler.dump_traceback_later(45, exit=True)
        emit("restore", case=case["case"], fallback=False, **restore_dcp_once(case, oracle))
        faulthandler.cancel_dump_traceback_later()


def restore_dcp_once(case: dict[str, Any], oracle: dict[int, Any]) -> dict[str, Any]:
    target = build(7 + case["case"])
    sd = dcp_state(target, None)  # get_state_dict gives a fresh optimizer its state: before the snapshot
    before = local(target)
    try:
        with fito.dcp.Reader(case["root"], process_group=GROUP) as reader:
            dcp.load(sd, storage_reader=reader, planner=fito.dcp.LoadPlanner(), process_group=GROUP)
        set_state_dict(target["model"], target["optim"], model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        step = reader.loaded_step
        mine: list[Any] = ["ok", step, ""]
    except CheckpointException as exc:  # each rank's exception inside: this rank's own, or the lowest failing rank's
        cause: Any = exc.failures.get(RANK, exc.failures[min(exc.failures)])
        cause = cause[0] if isinstance(cause, tuple) else cause
        mine = outcome_of(cause)
    except Exception as exc:  # noqa: BLE001 - the property under test: nothing but FitoError, ever
        mine = outcome_of(exc)
    out, decided = judge_outcome(mine, target, before)
    if decided:
        return out
    wrong = diff({**dcp_full(target), "meta": sd["meta"]}, oracle[step])
    if wrong:
        return {**out, "category": "restored WRONG values", "problem": f"step {step} restored, but {wrong[:4]} differ"}
    out["category"] = "restored-newest" if step == STEPS[-1] else "restored-older-without-fallback"
    return out


GROUPS = {"save+restore": [save, restore_all], "restore": [restore_all],
          "dcp-save+restore": [save_dcp, restore_dcp_all], "dcp-restore": [restore_dcp_all]}


def main() -> None:
    global RANK, WORLD, GROUP
    dist.init_process_group("gloo", timeout=timedelta(seconds=20))  # a hang fails in 20 s
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    GROUP = dist.new_group(backend="gloo")  # fito's group for every Checkpointer here (one new_group)
    run_group(GROUPS)


if __name__ == "__main__":
    main()
