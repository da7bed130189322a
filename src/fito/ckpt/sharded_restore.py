"""`Checkpointer.restore` on the sharded core, any world size or mesh; checkpoints of the per-rank format
(`fito-manifest/1`) still restore through the v1 read path, on the world size that wrote them.

For each candidate step (newest first; older ones only with fallback=True), every rank, in lockstep:
1. reads the manifest (its hash is in the decision) and picks the read path by its format;
2. chooses the entries it restores and whose copy of each rank-local one (the policy, fito.ckpt.rank_local),
   strictly: an entry of the state missing from the checkpoint, or of the checkpoint missing from the state,
   is an error;
3. reads those entries' JSON documents through DCP and fito.dcp.Reader (verified, voted);
4. builds its own targets -- DTensors laid out like the live module's and optimizer's state (DCP plans the
   resharding reads), plain tensors elsewhere -- and reads every tensor into them (verified block by block,
   voted by all ranks before a byte is copied into the targets);
5. rebuilds each entry and plans its application.
Each local step ends in a vote, so a rank that fails makes every rank fail at the same point. Only then are
the caller's objects touched, all entries or none (fito.ckpt.apply): set_state_dict for modules and
optimizers, load_state_dict for the rest. The zero-gradient step DCP takes on a fresh optimizer to read
its layout is undone on any failure."""
from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, MutableMapping, TypeVar

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, set_model_state_dict, set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from fito.ckpt import packs, rank_local
from fito.ckpt.apply import Applied, EntryPlan, RestorePlan, backup_module, backup_optimizer
from fito.ckpt.entries import decode_entry, leaf_spec, new_leaf, parse_doc
from fito.ckpt.exchange import Exchange, exchangeable, sharded_exchangeable
from fito.ckpt.live_layout import MASTERS, FreshOptimizers, optimizers_of, owner_of
from fito.ckpt.masters import masters_plan
from fito.ckpt.partial import IncompatibleKeys, Scope, templates_for
from fito.ckpt.memory import gc_paused
from fito.ckpt.rank_local import KEEP, RankLocalPolicy, check_owners, doc_key, pack_path, parse_key, tensor_key, world_change_error
from fito.ckpt.sharded_save import VALIDATION_ENTRY, local_bytes
from fito.ckpt.state import plan_restore
from fito.coord.base import Decision
from fito.commit.manifests import manifest_bytes
from fito.dcp.reader import Reader
from fito.errors import (
    CheckpointUnreadableError, FitoError, StateMismatchError, UnsafeCheckpointError, refusal,
)
from fito.format import manifest as manifest_fmt
from fito.format.manifest import ShardedManifest
from fito.plan.load import LoadPlanner
from fito.protocol import choose_epoch

if TYPE_CHECKING:
    from fito.ckpt.checkpointer import Checkpointer

log = logging.getLogger("fito")
T = TypeVar("T")
V1_FORMAT = "fito-manifest/1"
# A test seam: called on every rank once all its reads are verified and voted, before anything is applied.
# Tests change bytes on disk here; what is applied must be what was verified (nothing is read again).
after_verify: Callable[[], None] | None = None


def restore(ck: "Checkpointer", state: MutableMapping[str, Any], step: int | None, *, fallback: bool,
            rank_local: rank_local.Policy, strict: bool = True) -> tuple[int, IncompatibleKeys]:
    """The restored step, and what a `strict=False` restore left out (fito.ckpt.partial)."""
    with gc_paused():  # tens of thousands of small objects (JSON, tensors): fito.ckpt.memory
        return _restore(ck, state, step, fallback=fallback, rank_local=rank_local, scope=Scope(strict))


def _restore(ck: "Checkpointer", state: MutableMapping[str, Any], step: int | None, *, fallback: bool,
             rank_local: rank_local.Policy, scope: Scope) -> tuple[int, IncompatibleKeys]:
    ck.settle_previous("wait")
    policy = RankLocalPolicy.parse(rank_local)
    candidates = ck.candidates(step)
    fresh = FreshOptimizers(optimizers_of(state))
    prepared: dict[str, tuple[RestorePlan, Any]] = {}
    applied: list[Applied] = []  # the candidate currently applied, with the snapshots that undo it

    def verify(d: Decision) -> Exception | None:
        try:
            prepared[d.attempt] = _prepare(ck, state, d, policy, fresh, scope)
        except FitoError as exc:
            if getattr(exc, "fito_fatal", False):
                raise
            return exc
        if ck.validator is None:
            return None
        plan, recorded = prepared[d.attempt]
        error = ck.apply_voted(plan, applied, d)  # validation needs the model as restored
        if error is not None:
            return error
        error = ck.validate(d, recorded)
        if ck.transport.all_ok(error is None):
            return None
        applied.pop().rollback()  # the next candidate starts from the caller's state
        return error or _other_ranks(d, [])

    try:
        decision, skipped = choose_epoch(candidates, verify, fallback=fallback)
        if ck.validator is None:
            error = ck.apply_voted(prepared[decision.attempt][0], applied, decision)
            if error is not None:
                raise error
    except BaseException:
        while applied:  # a validator or a collective raised with a candidate applied: put it back
            applied.pop().rollback()
        fresh.undo()
        raise
    for d, exc in skipped:
        log.warning("skipped committed step %d: %s", d.epoch, exc)
    applied.clear()  # keep the restored state; drop the snapshots
    return decision.epoch, scope.result(f"{decision.manifest} (step {decision.epoch})", ck.rank)


def _prepare(ck: "Checkpointer", state: MutableMapping[str, Any], d: Decision, policy: RankLocalPolicy,
             fresh: FreshOptimizers, scope: Scope) -> tuple[RestorePlan, Any]:
    where = f"{d.manifest} (step {d.epoch})"
    scope.begin()
    parsed: dict[str, dict[str, Any]] = {}

    def local() -> tuple[ShardedManifest | None, dict[str, int | None], dict[str, Any]]:  # one vote for all four
        m = _manifest(ck, d)
        if m is None:
            return None, {}, {}
        sources = _sources(ck, state, m, policy, scope, where)
        reader = Reader(ck.storage, decision=d, manifest=m, transport=ck.transport)
        docs = _documents(reader, d, m, [doc_key(name, src) for name, src in sources.items()])
        return m, sources, _targets(ck, state, m, sources, docs, parsed, fresh, scope, where, reader)
    m, sources, targets = _agreed(ck, d, local)
    if m is None and not scope.strict:
        raise StateMismatchError(f"{where}: strict=False needs a checkpoint of the sharded format; this step was "
                                 f"written in {V1_FORMAT}, which restores strictly")
    if m is None:  # fito-manifest/1: one full shard per rank, the same world size
        saved = _agreed(ck, d, lambda: ck.load_per_rank(d))
        return _agreed(ck, d, lambda: plan_restore(state, saved, where=where)), saved.get(VALIDATION_ENTRY)
    _read(ck, d, m, targets)
    if after_verify is not None:
        after_verify()
    return _agreed(ck, d, lambda: _plan(state, sources, parsed, targets, fresh, scope, where))


# ---------------------------------------------------------------- the steps
def _manifest(ck: "Checkpointer", d: Decision) -> ShardedManifest | None:
    data = manifest_bytes(ck.storage, d)
    if manifest_fmt.format_of(data) == V1_FORMAT:
        return None
    return manifest_fmt.parse(data, where=d.manifest, epoch=d.epoch, attempt=d.attempt)


def _sources(ck: "Checkpointer", state: MutableMapping[str, Any], m: ShardedManifest, policy: RankLocalPolicy,
             scope: Scope, where: str) -> dict[str, int | None]:
    """{entry: None (replicated) or the saved rank whose copy this rank restores}; entries kept are absent."""
    saved_world, world = len(m.objects), ck.transport.world_size
    check_owners(m, where)  # a swap of two ranks' copies agrees with every hash and item count
    replicated, local = set(), {}
    for key in m.values:
        rank, name, is_doc = parse_key(key)
        if is_doc and rank is None:
            replicated.add(name)
        elif is_doc and rank is not None:
            local.setdefault(name, set()).add(rank)
    for name, ranks in local.items():
        if ranks != set(range(saved_world)) or name in replicated:
            raise UnsafeCheckpointError(path=where, unit=name, expected=f"a copy of rank-local entry {name!r} from each of {saved_world} ranks",
                                        found=f"copies from ranks {sorted(ranks)}{' and a replicated one' if name in replicated else ''}")
    saved = (replicated | set(local)) - {VALIDATION_ENTRY}
    scope.entries(state, saved, where)
    out: dict[str, int | None] = {}
    refused, kept = [], []
    for name in [*(n for n in state if n in saved), VALIDATION_ENTRY]:
        if name in replicated:
            out[name] = None
        elif name in local:
            src = policy.source(name, ck.rank, saved_world, world) if name != VALIDATION_ENTRY else (
                ck.rank if saved_world == world else KEEP)  # a per-rank loss: checked on the same world size only
            if src is None:
                refused.append(name)
            elif src == KEEP:
                kept.append(name)
            else:
                out[name] = src
    if refused:
        raise world_change_error(refused, saved_world, world, m.epoch)
    if [k for k in kept if k != VALIDATION_ENTRY] and ck.rank == 0:
        log.warning("%s: saved by %d ranks, restored on %d; rank-local entries %s keep their current values "
                    "(rank_local='reset')", where, saved_world, world, [k for k in kept if k != VALIDATION_ENTRY])
    return out


def _targets(ck: "Checkpointer", state: MutableMapping[str, Any], m: ShardedManifest, sources: dict[str, int | None],
             docs: dict[str, Any], parsed: dict[str, dict[str, Any]], fresh: FreshOptimizers, scope: Scope,
             where: str, reader: Reader) -> dict[str, Any]:
    """Check each entry's document against the state and the manifest, and allocate what DCP reads into
    (a buffer not shaped by the caller's own tensor only once its pieces fit their objects: Reader.check_fits)."""
    stored: dict[tuple[int | None, str], set[str]] = {}
    for key in m.tensors:
        rank, name, _ = parse_key(key)
        stored.setdefault((rank, name), set()).add(key)
    targets: dict[str, Any] = {}
    for name, src in sources.items():
        doc = parsed[name] = parse_doc(docs[doc_key(name, src)], f"{where}: {name}")
        doc["leaves"] = []  # what user code gets, per tensor reference, once DCP filled the targets
        packed = doc["packed"]  # {leaf index: (pack, offset, length)}: checked against the specs by parse_doc
        keys = [tensor_key(name, src, p) for p in doc["keys"]]
        doc["pack_keys"] = [tensor_key(name, src, pack_path(n)) for n in range(len(doc["pack_bytes"]))]
        expected = {k for i, k in enumerate(keys) if i not in packed} | set(doc["pack_keys"])
        if expected != stored.get((src, name), set()):
            raise UnsafeCheckpointError(path=where, unit=name, expected=f"tensors {sorted(expected)[:5]}",
                                        found=f"{sorted(stored.get((src, name), set()))[:5]} in the manifest")
        for key, size in zip(doc["pack_keys"], doc["pack_bytes"]):
            t = m.tensors[key]
            if (t.dtype, t.shape) != ("uint8", (size,)):
                raise UnsafeCheckpointError(path=where, unit=key, expected=f"a pack of uint8 [{size}] (the entry's document)",
                                            found=f"{t.dtype} {list(t.shape)} in the manifest")
            reader.check_fits(key)
            targets[key] = torch.empty(size, dtype=torch.uint8)
        live = templates_for(name, state, doc, src, fresh, scope, where)
        for i, (path, key) in enumerate(zip(doc["keys"], keys)):
            dtype, shape = leaf_spec(doc["specs"][i])
            t = None if i in packed else m.tensors[key]
            if t is not None and (t.dtype, t.shape) != (str(dtype).removeprefix("torch."), shape):
                raise UnsafeCheckpointError(path=where, unit=key, expected=f"{dtype} {list(shape)} (the entry's document)",
                                            found=f"{t.dtype} {list(t.shape)} in the manifest")
            template = live.get(path)
            if template is not None and (template.dtype != dtype or tuple(template.shape) != shape):
                raise StateMismatchError(f"{where}: {name}/{path}: expected {tuple(template.shape)} {template.dtype}, "
                                         f"checkpoint has {shape} {dtype}")
            if t is None:
                doc["leaves"].append(template)  # cut out of its pack once the packs are read (_unpack)
            elif isinstance(template, DTensor):
                targets[key] = torch.empty_like(template)  # its placements: DCP reads this rank's part only
                doc["leaves"].append(targets[key])
            else:
                reader.check_fits(key)
                targets[key], leaf = new_leaf(doc["specs"][i])
                doc["leaves"].append(leaf)
    return targets


def _plan(state: MutableMapping[str, Any], sources: dict[str, int | None], parsed: dict[str, dict[str, Any]],
          targets: dict[str, Any], fresh: FreshOptimizers, scope: Scope, where: str) -> tuple[RestorePlan, Any]:
    _unpack(parsed, targets)
    saved: dict[str, Any] = {}
    for name, src in sources.items():
        doc = parsed[name]
        saved[name] = {"kind": doc["kind"], "class": doc["class"], "data": decode_entry(doc, doc["leaves"], f"{where}: {name}")}
    own: dict[str, EntryPlan] = {}
    for name, obj in state.items():
        if name not in saved:
            continue  # kept (rank_local="reset")
        if isinstance(obj, torch.nn.Module):
            own[name] = _module_plan(name, obj, saved[name]["data"], scope.strict)
        elif isinstance(obj, torch.optim.Optimizer):
            own[name] = _optimizer_plan(name, obj, saved[name]["data"], state, fresh, where)
    rest = plan_restore(state, saved, where=where, only=[n for n in saved if n not in own and n in state])
    planned = {e.name: e for e in rest.entries} | own
    return RestorePlan(where, [planned[n] for n in state if n in planned]), saved.get(VALIDATION_ENTRY)


def _unpack(parsed: dict[str, dict[str, Any]], targets: dict[str, Any]) -> None:
    """Each packed tensor of each entry, from its verified pack, as its own tensor."""
    for doc in parsed.values():
        leaves, specs, pack_keys = doc["leaves"], doc["specs"], doc["pack_keys"]
        for i, (n, offset, length) in doc["packed"].items():
            leaves[i] = packs.unpack(specs[i], targets[pack_keys[n]], offset, length, leaves[i])


def _module_plan(name: str, module: torch.nn.Module, data: Any, strict: bool) -> EntryPlan:
    if not strict:  # the keys only the checkpoint has are left out (Scope.module_keys listed them)
        live = get_model_state_dict(module)
        data = {k: v for k, v in data.items() if k in live}
    pairs, adopt = exchangeable(module, data), True
    if pairs is None:  # FSDP2: each local shard trades bytes with its target's
        pairs, adopt = sharded_exchangeable(module, data), False
    if pairs is not None:  # loaded in place by exchange: the targets keep the old values (no host snapshot)
        exchange = Exchange(pairs, adopt=adopt)
        return EntryPlan(name, exchange.run, lambda: exchange.undo)

    def apply() -> None:
        set_model_state_dict(module, data, options=StateDictOptions(strict=strict))
    return EntryPlan(name, apply, lambda: backup_module(module))


def _optimizer_plan(name: str, opt: torch.optim.Optimizer, data: Any, state: MutableMapping[str, Any],
                    fresh: FreshOptimizers, where: str) -> EntryPlan:
    owner = owner_of(opt, state)
    load_masters = masters_plan(name, opt, data, state, where)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != MASTERS}
    current = [sorted(g["params"]) for g in fresh.state_dict(owner, opt)["param_groups"]]
    groups = data.get("param_groups") if isinstance(data, dict) else None
    saved = [sorted(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list) else None
             for g in groups] if isinstance(groups, list) else None
    if saved != current or not isinstance(data.get("state"), dict):
        raise StateMismatchError(f"{where}: {name}: parameter groups differ: the optimizer has {len(current)} groups of "
                                 f"{[len(g) for g in current]} parameters, the checkpoint {saved!r:.300}")

    def apply() -> None:
        # strict=False: fito checked the state's keys; torch's strictness refuses parameters that legitimately
        # have no state (SGD without momentum in one group)
        with fresh.no_zero_step(opt):
            set_optimizer_state_dict(owner, opt, data, options=StateDictOptions(strict=False))
        load_masters.apply()

    def backup() -> Callable[[], None]:
        undo_masters = load_masters.backup()
        undo = (lambda: fresh.undo(opt)) if fresh.is_fresh(opt) else backup_optimizer(opt)  # fresh: DCP's zero step made its state

        def both() -> None:
            undo_masters()
            undo()
        return both
    return EntryPlan(name, apply, backup)


# ---------------------------------------------------------------- DCP reads and votes
def _documents(reader: Reader, d: Decision, m: ShardedManifest, keys: list[str]) -> dict[str, Any]:
    """The entries' JSON documents this rank restores, each read and verified whole (no collective: the
    caller's vote covers them)."""
    out = {}
    for key in keys:
        if key not in m.values:
            raise UnsafeCheckpointError(path=d.manifest, unit=key, expected="the entry's document in the manifest",
                                        found="no such value")
        try:
            out[key] = reader.read_value(key)
        except OSError as exc:  # the OS refused the read (permissions, I/O): say so, the bytes may be fine
            raise CheckpointUnreadableError.from_os(str(exc.filename or m.objects[m.values[key].rank].file), exc) from exc
    return out



def _read(ck: "Checkpointer", d: Decision, m: ShardedManifest, targets: dict[str, Any]) -> dict[str, Any]:
    """Read `targets` (item name -> tensor to fill, or None for a value) through DCP; every rank verifies and
    votes in fito.dcp.Reader before a byte is copied. Other items of the checkpoint are left unread."""
    total = sum(local_bytes(t) for t in targets.values() if isinstance(t, torch.Tensor))
    skip = (set(m.tensors) | set(m.values)) - set(targets)
    try:
        with ck.progress_bar(f"restore step {d.epoch}", total) if total else nullcontext(None) as advance:
            # scratch_targets: `targets` are this restore's own buffers (see _targets), applied only after the vote
            reader = Reader(ck.storage, decision=d, manifest=m, transport=ck.transport, progress=advance,
                            scratch_targets=True)
            dcp.load(targets, storage_reader=reader, planner=LoadPlanner(skip=skip), process_group=getattr(ck.transport, "group", None))
    except CheckpointException as exc:
        raise _load_error(ck, d, exc) from None
    except FitoError:
        raise
    except Exception as exc:  # a peer lost inside DCP's own collectives of the load: name it, as fito's do
        if ck.transport.world_size == 1:
            raise
        raise ck.transport.lost_peer(exc, f"DCP's collectives of the restore of step {d.epoch}") from exc  # type: ignore[attr-defined]
    return targets


def _load_error(ck: "Checkpointer", d: Decision, exc: CheckpointException) -> FitoError:
    causes = {r: (pair[0] if isinstance(pair, tuple) else pair) for r, pair in exc.failures.items()}
    mine = causes.get(ck.rank)
    if isinstance(mine, FitoError):
        return mine  # fito.dcp.Reader's refusal: the class every rank raises
    fito = [e for _, e in sorted(causes.items()) if isinstance(e, FitoError)]
    if fito and not [e for e in causes.values() if not isinstance(e, FitoError)]:
        return fito[0]
    error = _other_ranks(d, [(r, type(e).__name__, str(e)) for r, e in sorted(causes.items())])
    error.fito_fatal = True  # type: ignore[attr-defined] - not a damaged checkpoint: no fallback
    return error


def _agreed(ck: "Checkpointer", d: Decision, step: Callable[[], T]) -> T:
    """Run one local step on every rank; unless it succeeded on all, every rank raises (its own error, or one
    naming the others'), so no rank goes on into a collective alone."""
    error: BaseException | None = None
    try:
        result = step()
    except Exception as exc:  # noqa: BLE001 - reported to every rank below
        error = exc
    if ck.transport.all_ok(error is None):
        return result
    mine = "" if error is None else json.dumps([type(error).__name__, str(error)[:1500], isinstance(error, FitoError)])
    gathered = ck.transport.gather(mine.encode())
    summary = json.dumps([g.decode() for g in gathered]) if gathered is not None else None
    reasons = [json.loads(r) if r else None for r in json.loads(ck.transport.broadcast(summary.encode() if summary else None))]
    fatal = any(r is not None and not r[2] for r in reasons)
    failed = [(i, r[0], r[1]) for i, r in enumerate(reasons) if r is not None]
    if error is not None and not fatal and type(error).__name__ == failed[0][1]:
        raise error  # this rank's own error, of the class every rank raises
    if error is not None and not isinstance(error, FitoError):
        raise error  # a bug, not a damaged checkpoint: every rank stops (the others below), no fallback
    out = _other_ranks(d, failed)
    if fatal:
        out.fito_fatal = True  # type: ignore[attr-defined]
    raise out


def _other_ranks(d: Decision, reasons: list[tuple[int, str, str]]) -> FitoError:
    """Every failing rank's reason, in the class of the lowest failing rank's error (fito.errors.same_kind)."""
    text = "; ".join(f"rank {r}: {kind}: {why}" for r, kind, why in reasons)[:3000] or "another rank's check failed (see its log)"
    return refusal(reasons[0][1] if reasons else "", d.manifest, text, step=d.epoch)
