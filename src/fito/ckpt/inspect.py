"""Read-only views of a checkpoint root (a directory or an `s3://bucket/prefix` URL) for `fito inspect` and
`fito verify`: what the decision log says about each attempt, where each rank's units sit in the epoch
lattice, and whether an epoch is whole."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from fito.ckpt.entries import parse_doc
from fito.ckpt.per_rank_read import load_manifest, load_shard
from fito.ckpt.rank_local import doc_key, is_pack_key, parse_key
from fito.ckpt.tensor_index import index_of
from fito.commit import decision
from fito.commit.manifests import load_sharded_manifest, manifest_bytes
from fito.commit.transport import LocalTransport
from fito.coord.base import Decision, DecisionStore
from fito.coord.choose import default_store, reader_store
from fito.dcp.reader import Reader
from fito.errors import FitoError, NoCommittedEpochError
from fito.format import manifest as manifest_fmt
from fito.protocol.layout import STEPS, attempt_dir, parse_object, parse_step_dir, step_dir
from fito.storage import Storage, open_storage
from fito.storage.listing import children, names



@dataclass
class AttemptInfo:
    epoch: int
    attempt: str
    status: str  # committed | retired | aborted | undecided
    seq: int | None
    shards: list[str] = field(default_factory=list)  # shard files present on disk
    bytes: int = 0
    lattice: str = ""  # one letter per rank: C committed, A ambiguous (written, undecided), R reverted/absent
    index: dict[str, Any] | None = None  # a committed fito-manifest/2 step's tensor index (fito.ckpt.tensor_index)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.index is None:  # v1 steps and undecided attempts: the rows as before
            del out["index"]
        return out


def open_store(root: str | os.PathLike[str], *, readonly: bool = False) -> tuple[Storage, DecisionStore]:
    """The root and its existing log (the storage's default store: SQLite in a directory, the object log on
    S3). Nothing is written until a write is asked for; `readonly` refuses writes (inspect and verify: they
    work on a read-only root and never take a fence)."""
    storage = open_storage(root, create=False)
    return storage, default_store(storage, create=False, readonly=readonly)


def chosen(storage: Storage, step: int | None = None) -> Decision:
    """The decision a one-process reader loads (the restore's choice and errors, fito.commit.decision), from
    the storage's own log opened read-only."""
    store = reader_store(storage)
    try:
        return decision.choose(storage.url, step, store)
    finally:
        if store is not None:
            store.close()


def describe(root: str | os.PathLike[str], notes: list[str] | None = None) -> list[AttemptInfo]:
    """Every attempt under `root` with its decision. A name in `epochs/` that is not a step directory (an
    operator's `epochs/latest` link, a stray file) is not looked into, as restore and `fito gc` do not: it is
    said in `notes`, and the listing goes on."""
    storage = open_storage(root, create=False)
    decisions = decision.read_decisions(storage)  # the readers' own errors (fito.commit.decision)
    latest: dict[tuple[int, str], Decision] = {(d.epoch, d.attempt): d for d in decisions}
    world = _world_size(storage, decisions)
    seen: dict[tuple[int, str], AttemptInfo] = {}
    for entry in children(storage, STEPS):
        epoch_name = entry.name
        step = parse_step_dir(epoch_name)  # fito.protocol.gc's rule: only a step directory is looked into
        if entry.kind != "dir" or step is None:
            if notes is not None:
                what = (f"a symbolic link to {os.readlink(f'{storage.url}/epochs/{epoch_name}')}"
                        if entry.kind == "link" else f"a {entry.kind}" if entry.kind != "dir"
                        else "a directory fito did not name")
                notes.append(f"{storage.url}/epochs/{epoch_name}: {what}, not followed: fito never follows links in a "
                             "checkpoint root nor looks into names it did not make (restore and `fito gc` ignore it "
                             "too); listed without it")
            continue
        for attempt in names(storage, step_dir(step)):
            key = (step, attempt)
            seen[key] = _info(storage, key, latest.get(key), world)
    for key, d in latest.items():
        seen.setdefault(key, _info(storage, key, d, world))
    if not seen and not getattr(storage, "directories", False):  # an object store has no root to be missing
        raise NoCommittedEpochError(f"{storage.url}: no checkpoint here (no decision log and no attempts under "
                                    "the prefix)")
    for key, info in seen.items():
        if info.status in ("committed", "retired"):
            info.index = _index(storage, latest[key])
    return sorted(seen.values(), key=lambda i: (i.epoch, i.seq if i.seq is not None else 1 << 62))


def _world_size(storage: Storage, decisions: list[Decision]) -> int:
    for d in reversed(decisions):
        if d.outcome == "commit" and not d.retired:
            try:
                if _sharded(storage, d):
                    return len(load_sharded_manifest(storage, d).objects)
                return load_manifest(storage, d).world_size
            except FitoError:
                continue
    return 0


def _index(storage: Storage, d: Decision) -> dict[str, Any] | None:
    """The tensor index of a fito-manifest/2 step; None for v1; {"error": ...} when it cannot be read (a listing
    still shows the rest; `fito verify` says more)."""
    try:
        data = manifest_bytes(storage, d)
        if manifest_fmt.format_of(data) != manifest_fmt.FORMAT:
            return None
        m = manifest_fmt.parse(data, where=d.manifest, epoch=d.epoch, attempt=d.attempt)
        return index_of(m, _documents(storage, d, m))
    except FitoError as exc:
        return {"error": " ".join(str(exc).split())[:500]}


def _documents(storage: Storage, d: Decision, m: Any) -> dict[tuple[int | None, str], dict[str, Any]]:
    """The documents of the entries holding packs (fito.ckpt.packs), read and verified: they say what each
    pack holds. One that cannot be read leaves its packs listed as packs (`fito verify` says why)."""
    wanted = sorted({parse_key(fqn)[:2] for fqn in m.tensors if is_pack_key(fqn)}, key=str)
    reader = Reader(storage, decision=d, manifest=m, transport=LocalTransport()) if wanted else None
    out = {}
    for rank, entry in wanted:
        key = doc_key(entry, rank)
        try:
            if key in m.values and reader is not None:
                out[(rank, entry)] = parse_doc(reader.read_value(key), f"{d.manifest}: {entry}")
        except FitoError:
            continue
    return out


def _info(storage: Storage, key: tuple[int, str], d: Decision | None, world: int) -> AttemptInfo:
    epoch, attempt = key
    rel = attempt_dir(epoch, attempt)
    shards = [f for f in names(storage, rel) if parse_object(f) is not None]
    size = sum(_size(storage, f"{rel}/{f}") for f in shards)
    if d is None:
        status = "undecided"
    elif d.outcome == "commit":
        status = "retired" if d.retired else "committed"
    else:
        status = "aborted"
    ranks = max(world, len(shards))
    present = {parse_object(f) for f in shards}
    if status == "committed":
        letters = "".join("C" if r in present else "?" for r in range(ranks))
    elif status == "undecided":
        letters = "".join("A" if r in present else "R" for r in range(ranks))
    else:
        letters = "R" * ranks
    return AttemptInfo(epoch, attempt, status, d.seq if d else None, shards, size, letters)


def _size(storage: Storage, rel: str) -> int:
    try:
        return storage.size(rel)
    except FitoError:  # a link, a FIFO or an unreadable file: listed, counted as 0 bytes; `verify` says why
        return 0


@dataclass
class VerifyReport:
    root: str
    epoch: int | None = None
    attempt: str = ""
    ranks: int = 0
    units: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return self.epoch is not None and not self.errors


def verify(root: str | os.PathLike[str], epoch: int | None = None,
           progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None) -> VerifyReport:
    """Re-hash every unit of every rank of a committed epoch (the newest by default)."""
    storage = open_storage(root, create=False)
    report = VerifyReport(storage.url)
    d = chosen(storage, epoch)  # the restore's choice and errors (fito.commit.decision)
    report.epoch, report.attempt = d.epoch, d.attempt
    if _sharded(storage, d, report):  # fito-manifest/2: verified by the sharded reader
        return _verify_sharded(storage, d, report, progress, on_total)
    try:
        m = load_manifest(storage, d)
    except FitoError as exc:
        report.errors.append(str(exc))
        return report
    report.ranks = m.world_size
    if on_total:
        on_total(m.total_bytes)
    for shard in m.ranks:
        try:
            load_shard(storage, m, shard, progress=progress, keep=False)  # memory: a few chunks, not the shard
            report.units += len(shard.units)
            report.bytes += shard.size
        except FitoError as exc:
            report.errors.append(str(exc))
    return report


def _sharded(storage: Storage, d: Decision, report: VerifyReport | None = None) -> bool:
    """Whether the decision's manifest is fito-manifest/2 (False for v1, and for unreadable ones: the v1 path
    reports those)."""
    try:
        return manifest_fmt.format_of(manifest_bytes(storage, d)) == manifest_fmt.FORMAT
    except FitoError:
        return False


def _verify_sharded(storage: Storage, d: Decision, report: VerifyReport, progress: Callable[[int], None] | None,
                    on_total: Callable[[int], None] | None) -> VerifyReport:
    try:
        m = load_sharded_manifest(storage, d)
    except FitoError as exc:
        report.errors.append(str(exc))
        return report
    report.ranks = len(m.objects)
    if on_total:
        on_total(sum(o.size for o in m.objects))
    items, errors = Reader(storage, decision=d, manifest=m, transport=LocalTransport()).verify_all(progress)
    report.units, report.errors = items, errors
    report.bytes = sum(o.size for o in m.objects) if not errors else 0
    return report
