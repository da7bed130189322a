"""Rebuild a lost decision log from the attempts on disk (`fito recover-log`). Operator-invoked only.

A decision log is the only record of which attempts committed; once it is lost, "committed" cannot be
known, only "whole": an attempt whose manifest parses and whose every unit of every rank verifies (size,
header, epoch tag, content hash). `plan_recovery` finds, for each step, the newest whole attempt (by its
fence, then its start time); `apply_recovery` creates a NEW log (new identity, fences above every fence
seen in attempt names, so no coordinator of the lost log can commit into it) recording those as committed,
in step order. What this can get wrong, and why the operator decides: a whole attempt the lost log had
aborted, or never decided (its coordinator died right before publishing), or retired (its deletion was
cut short) is recorded as committed too. Each is whole and self-consistent, so a restore of it is never
a mix, but it may hold a step the job later re-did. The dry run shows every choice first.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fito.ckpt import manifest as manifest_mod
from fito.ckpt.per_rank_read import load_manifest, load_shard
from fito.commit import decision
from fito.commit.transport import LocalTransport
from fito.coord.base import Decision
from fito.coord.choose import sqlite_log_path
from fito.coord.sqlite import SqliteDecisionStore
from fito.coord.sqlite_log import SIDE_FILES
from fito.dcp.reader import Reader
from fito.errors import FitoError
from fito.format import manifest as sharded_fmt
from fito.format.hashing import digest
from fito.protocol.layout import STEPS, attempt_dir, manifest_path, parse_attempt, parse_step_dir, step_dir
from fito.storage import Storage, open_storage
from fito.storage.listing import children, names


@dataclass
class Candidate:
    step: int
    attempt: str
    manifest: str = ""
    manifest_hash: str = ""
    ranks: int = 0
    bytes: int = 0
    problem: str = ""  # "" when whole and chosen

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RecoveryPlan:
    root: str  # the storage's url
    chosen: list[Candidate] = field(default_factory=list)  # one whole attempt per step, ascending step
    skipped: list[Candidate] = field(default_factory=list)  # not whole, superseded, or not fito's names
    fence_floor: int = 0  # the newest fence any attempt name carries
    storage: Any = field(default=None, repr=False, compare=False)  # where apply_recovery writes the new log
    log: str = ""  # where the new log goes: decisions.sqlite, or the object log's URL

    @property
    def restores(self) -> Candidate | None:
        """What a restore would return once the plan is applied: the newest recorded step."""
        return self.chosen[-1] if self.chosen else None

    def as_dict(self) -> dict[str, Any]:
        return {"root": self.root, "fence_floor": self.fence_floor,
                "chosen": [c.as_dict() for c in self.chosen], "skipped": [c.as_dict() for c in self.skipped],
                "restores": self.restores.step if self.restores else None}


def log_path(root: Path) -> Path:
    return sqlite_log_path(root)  # the default store's place (fito.coord.choose)


def _objects(storage: Storage) -> Any:
    """The storage-native log's objects (an object store), or None (a directory: the SQLite log)."""
    make = getattr(storage, "decision_objects", None)
    return make() if make is not None else None


def log_where(storage: Storage) -> str:
    """Where the (new) log is: the SQLite file, or the object log's URL."""
    objects = _objects(storage)
    if objects is None:
        return str(log_path(Path(storage.url)))
    return f"{objects.where}/{getattr(objects, 'prefix', '')}".rstrip("/")


def refuse_existing_log(storage: Storage) -> None:
    """Recovery only replaces a lost log: an existing one (or a journal left without it) is the record."""
    objects = _objects(storage)
    if objects is not None:
        from fito.coord.object_store import LOG, SNAP
        if objects.list(LOG) or objects.list(SNAP):
            where = log_where(storage)
            raise FitoError(
                f"{where}/ holds a decision log: recover-log only rebuilds a lost decision log and never replaces "
                f"one. If the log is damaged, copy the objects under {where}/ elsewhere (keep them), delete them, "
                "then run it again")
        return
    path = log_path(Path(storage.url))
    if path.is_file() and not path.is_symlink():  # damaged, locked, interrupted: said as every reader says it
        decision.read_decisions(Path(storage.url))
    for p in (path, *(Path(f"{path}{s}") for s in SIDE_FILES)):
        if p.exists() or p.is_symlink():
            raise FitoError(
                f"{p} exists: recover-log only rebuilds a lost decision log and never replaces one. If the log is "
                f"damaged, move {path.name} and its -journal/-wal/-shm files aside (keep them), then run it again")


def plan_recovery(root: str | os.PathLike[str]) -> RecoveryPlan:
    """Verify every attempt under `root`/epochs fully; choose the newest whole one of each step. Reads only."""
    storage = open_storage(root, create=False)
    refuse_existing_log(storage)
    plan = RecoveryPlan(storage.url, storage=storage, log=log_where(storage))
    whole: dict[int, list[tuple[tuple[int, int], Candidate]]] = {}
    for step_name in sorted(names(storage, STEPS)):
        step = parse_step_dir(step_name)
        if step is None:
            plan.skipped.append(Candidate(-1, step_name, problem="not a step directory fito's layout made"))
            continue
        for name in sorted(names(storage, step_dir(step))):
            parsed = parse_attempt(name)
            if parsed is None:
                plan.skipped.append(Candidate(step, name, problem="not an attempt name fito's layout made"))
                continue
            plan.fence_floor = max(plan.fence_floor, parsed.fence)
            c = _verify(storage, step, name)
            if c.problem:
                plan.skipped.append(c)
            else:
                whole.setdefault(step, []).append(((parsed.fence, parsed.millis), c))
    for step in sorted(whole):
        ranked = sorted(whole[step], key=lambda pair: pair[0])
        newest = ranked[-1][1]
        plan.chosen.append(newest)
        for _, older in ranked[:-1]:
            older.problem = f"whole, but superseded by the newer attempt {newest.attempt} of the same step"
            plan.skipped.append(older)
    return plan


def _verify(storage: Storage, step: int, attempt: str) -> Candidate:
    rel = manifest_path(step, attempt)
    c = Candidate(step, attempt, manifest=rel)
    try:
        if _linked(storage, step, attempt):
            c.problem = "a symlink: fito's layout never makes one, and recovery does not follow it"
            return c
        if not storage.exists(rel):
            c.problem = "no manifest: the attempt never reached its commit point"
            return c
        data = storage.read_bytes(rel, manifest_mod.MAX_MANIFEST_BYTES)
        if sharded_fmt.format_of(data) == sharded_fmt.FORMAT:  # fito-manifest/2: every block of every object
            return _verify_sharded(storage, c, data)
        algorithm = manifest_mod.parse(data, where=rel, epoch=step, attempt=attempt).algorithm
        c.manifest_hash = digest(algorithm, data)
        m = load_manifest(storage, Decision(step, attempt, "commit", rel, c.manifest_hash))
        for shard in m.ranks:  # every unit of every rank: size, header, epoch tag, content hash, state tree
            load_shard(storage, m, shard)
            c.bytes += shard.size
        c.ranks = m.world_size
    except (FitoError, OSError, ValueError) as exc:
        c.problem = f"not whole: {type(exc).__name__}: {exc}"
    return c


def _linked(storage: Storage, step: int, attempt: str) -> bool:
    """Whether the step's or the attempt's directory is a link (only a POSIX backend has links)."""
    return any(e.kind == "link" for rel, name in (("epochs", f"{step:012d}"), (f"epochs/{step:012d}", attempt))
               for e in children(storage, rel) if e.name == name) if getattr(storage, "directories", False) else False


def _verify_sharded(storage: Storage, c: Candidate, data: bytes) -> Candidate:
    m = sharded_fmt.parse(data, where=c.manifest, epoch=c.step, attempt=c.attempt)
    c.manifest_hash = digest(m.algorithm, data)
    d = Decision(c.step, c.attempt, "commit", c.manifest, c.manifest_hash)
    _, errors = Reader(storage, decision=d, manifest=m, transport=LocalTransport()).verify_all()
    if errors:
        c.problem = f"not whole: {errors[0]}"
    else:
        c.ranks, c.bytes = len(m.objects), sum(o.size for o in m.objects)
    return c


def apply_recovery(plan: RecoveryPlan) -> str:
    """Create the new log recording the plan's choices as committed; return its log id. Refuses if a log
    appeared meanwhile (another process made one: it is the record, not this plan)."""
    storage = plan.storage if plan.storage is not None else open_storage(plan.root, create=False)
    refuse_existing_log(storage)
    objects = _objects(storage)
    store: Any
    try:
        if objects is not None:
            from fito.coord.object_store import ObjectDecisionStore
            store = ObjectDecisionStore.create_new(objects, fence_floor=plan.fence_floor, origin="recover-log")
        else:
            store = SqliteDecisionStore.create_new(log_path(Path(storage.url)), fence_floor=plan.fence_floor,
                                                   origin="recover-log")
    except FileExistsError as exc:
        raise FitoError(f"{exc}; nothing was recorded") from None
    try:
        fence = store.acquire_fence()
        for c in plan.chosen:
            store.publish(Decision(c.step, c.attempt, "commit", c.manifest, c.manifest_hash,
                                   decision_id=f"{c.step}:{c.attempt}:commit"), fence)
        log_id = store.log_id()
    finally:
        store.close()
    assert log_id is not None
    return log_id


def attempt_rel(c: Candidate) -> str:
    return attempt_dir(c.step, c.attempt) if c.step >= 0 else f"{STEPS}/{c.attempt}"
