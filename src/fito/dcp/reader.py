"""fito.dcp.Reader: verify-before-touch behind torch.distributed.checkpoint's StorageReader.

DCP calls, in order: (all ranks) read_metadata, set_up_storage_reader, prepare_local_plan; (coordinator)
prepare_global_plan; (all ranks) read_data.
- read_metadata: rank 0 picks the newest committed decision (or the given step) and tells every rank over
  fito's own gloo group (on the ranks of DCP's group), so all ranks load the same step; each rank checks the
  manifest's bytes against the decision's hash and parses it as JSON (nothing is unpickled).
- prepare_global_plan (coordinator, with every rank's requests): on several ranks, the cooperative read plan
  (fito.plan.coop): each stored block several ranks need is fetched by one of them, which sends it to the
  others (fito.dcp.peer_reads); off with `cooperative=False` or FITO_COOPERATIVE_READ=0.
- read_data: every rank reads each block holding a byte it will use into its own buffers (or receives it
  from the block's owner), checks object headers (epoch tag, rank, attempt), sizes and block hashes (received
  blocks too), decodes values, and checks shapes and dtypes against the target. Then all ranks vote; only if every rank verified everything is anything copied into
  the caller's tensors. Otherwise every rank raises a FitoError naming what failed where."""
from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any, BinaryIO, Callable

import torch
from torch.distributed.checkpoint import StorageReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, ReadItem
from torch.futures import Future

from fito import knobs
from fito.commit.transport import Transport, default_transport
from fito.plan.tree import DTYPES
from fito.commit import decision
from fito.coord.base import Decision, DecisionStore
from fito.coord.choose import reader_store
from fito.dcp.block_reads import BlockReads
from fito.commit.manifests import load_sharded_manifest
from fito.errors import (
    CheckpointCorruptError, CheckpointUnreadableError, FitoError, StateMismatchError, UnsafeCheckpointError,
    refusal,
)
from fito.format.manifest import Piece, ShardedManifest
from fito.format.objects import HEADER, ObjectHeader, block_span, check_header
from fito.dcp.groups import transport_for_dcp
from fito.dcp.peer_reads import PeerReads
from fito.plan.coop import Share, contiguous_strides as _contiguous_strides, element_span as _element_span, with_shares
from fito.plan.load import LoadPlanner as FitoLoadPlanner, check_cover, value_action
from fito.plan.metadata import key_of, pieces_of, to_metadata
from fito.plan.values import MAX_VALUE_BYTES, decode_value
from fito.storage.base import Storage
from fito.storage import open_storage, url_of
from fito.storage.listing import has_directories, kind_of, where

Action = Callable[[], None]


class Reader(StorageReader):
    """`dcp.load(state, storage_reader=fito.dcp.Reader(root))`, with DCP's planner or fito's strict one
    (`planner=fito.dcp.LoadPlanner()`); `root` may come as dcp.load's `checkpoint_id` instead.

    Every rank that loads creates a Reader on the same root. Its gloo group for the vote is created on first
    use, inside dcp.load, over the ranks DCP runs on (fito.dcp.groups), unless `process_group` is given. `step=None` loads the newest committed step; `loaded_step` says which one.
    `decision` (with its parsed `manifest`, optional): load exactly this committed attempt, which every rank
    already agreed on (fito.Checkpointer does); `transport`: the ranks' vote goes over it.
    `scratch_targets=True`: the target tensors are buffers of the caller's own that nobody uses before the
    vote (fito.Checkpointer's, which it applies after its own vote), so a chunk read whole is read straight
    into its target and verified there, without a second buffer and copy. Never for a user's live state.
    `progress`: called with the byte count of each read as it is read (a progress bar; keep it cheap).
    `cooperative`: on several ranks, fetch each stored block once and send it to the other ranks that need
    it, who verify it again (default: FITO_COOPERATIVE_READ, auto: on for object storage, off for a local
    directory); the coordinator's choice holds for all.
    `close()` (or leaving `with Reader(...) as r:`) destroys the gloo group the Reader created, on every rank
    after its last load; a given `transport` or `process_group` is left to its owner."""

    def __init__(self, root: str | os.PathLike[str] | Storage | None = None, step: int | None = None, *,
                 store: DecisionStore | None = None, process_group: Any = None, decision: Decision | None = None,
                 manifest: ShardedManifest | None = None, transport: Transport | None = None,
                 progress: Callable[[int], None] | None = None, scratch_targets: bool = False,
                 cooperative: bool | None = None) -> None:
        self._storage = None if root is None else open_storage(root, create=False)  # else: dcp.load's checkpoint_id
        self.step = step
        self.loaded_step: int | None = None
        self.bytes_read = 0  # verified by this rank's last read_data: whole blocks only, never whole objects
        self.bytes_fetched = 0  # of those, read from storage (the rest came from other ranks)
        self.cooperative = cooperative
        self._peers: PeerReads | None = None
        self._store = store
        # Built on first use, inside DCP's call, on the ranks DCP runs on (fito.dcp.groups), unless given.
        self._transport: Transport | None = transport if transport is not None else (
            default_transport(process_group) if process_group is not None else None)
        self._owns_transport = transport is None  # a process_group's transport closes as a no-op (not owned)
        self._error: FitoError | None = None
        self._decision = decision
        self._given = manifest if decision is not None else None
        self._manifest: ShardedManifest | None = None
        self._where = ""
        self.progress = progress
        self._scratch = scratch_targets
        self._files: dict[int, BinaryIO] | None = None  # open objects while read_data runs (one open per object)
        self._reads: BlockReads | None = None  # the block reads of read_data, checked before its vote
        self._sizes: dict[str, int] = {}  # each object's real size in storage, asked once

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise ValueError("fito.dcp.Reader has no root: pass it, Reader(root), or dcp.load(..., checkpoint_id=root)")
        return self._storage

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = transport_for_dcp()
        return self._transport

    def close(self) -> None:
        if self._owns_transport and self._transport is not None:
            self._transport.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- DCP's calls
    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id is not None and self._storage is None:
            self._storage = open_storage(checkpoint_id, create=False)
        elif checkpoint_id is not None and url_of(checkpoint_id) != self.storage.url:
            raise ValueError(f"fito.dcp.Reader reads {self.storage.url}; checkpoint_id={checkpoint_id!r} names another place")

    def read_metadata(self, *args: Any) -> Metadata:
        # DCP treats an exception here as "no global metadata" and replaces it with an AssertionError; keep
        # ours and raise it from set_up_storage_reader, where DCP hands it to every rank as it is.
        try:
            decision = self._decision if self._decision is not None else self._agree_on_decision()
            self._manifest = self._given if self._given is not None else load_sharded_manifest(self.storage, decision)
            self._where = decision.manifest
            self.loaded_step = decision.epoch
            metadata = to_metadata(self._manifest)
        except FitoError as exc:
            self._error = exc
            return Metadata(state_dict_metadata={})
        metadata.storage_meta = StorageMeta(checkpoint_id=self.storage.url)
        return metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if self._error is not None:
            raise self._error

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan  # fito's planner (strict keys and dtypes) or DCP's own: see read_data

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        on = knobs.cooperative_read(has_directories(self.storage)) if self.cooperative is None else self.cooperative
        return with_shares(plans, self._manifest) if on and self._manifest is not None else plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        actions: list[Action] = []
        error: BaseException | None = None
        self.bytes_read = self.bytes_fetched = 0
        share = plan.storage_data if isinstance(plan.storage_data, Share) else None
        try:
            m = self._manifest
            assert m is not None
            if share is not None:
                self._peers = PeerReads(share, m, getattr(self.transport, "group", None), self._where, self.progress)
            if not isinstance(planner, FitoLoadPlanner):  # DCP's planner: its key rules; the cover check here
                check_cover(getattr(planner, "state_dict", {}), plan.items, only=set(m.tensors) | set(m.values))
            try:
                actions = self._read_and_verify(plan.items, planner)
            except FileNotFoundError:
                raise
            except OSError as exc:  # the OS refused a read (permissions, I/O): say so, it may be fine bytes
                raise CheckpointUnreadableError.from_os(str(exc.filename or self._where), exc) from exc
        except BaseException as exc:  # noqa: BLE001 - every rank must still vote, or the others would hang
            error = exc
        if share is not None:
            error = self._exchange(share, error)
        if not self.transport.all_ok(error is None):
            raise self._refusal(error)
        for action in actions:  # every rank verified every byte it uses: now, and only now, touch the caller
            action()
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def _exchange(self, share: Share, error: BaseException | None) -> BaseException | None:
        """The cooperative read's exchange (fito.dcp.peer_reads), once every rank read and checked its own
        blocks: a vote first, so a rank that failed is refused for its own reason, not for a missing send."""
        peers, self._peers = self._peers, None
        if error is None and (peers is None or peers.share.rank != self.transport.rank):
            error = UnsafeCheckpointError(path=self._where, unit=None, expected=f"the read plan of rank {self.transport.rank}",
                                          found=f"rank {share.rank}'s", hint="a bug in fito's read plan; nothing was restored")
        if not self.transport.all_ok(error is None):
            raise self._refusal(error)
        assert peers is not None
        try:
            error = peers.exchange()
        except FitoError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError for a lost peer
            lost = getattr(self.transport, "lost_peer", None)
            raise (lost(exc, "the cooperative read's exchange") if lost else exc) from exc
        self.bytes_read += peers.bytes_received
        return error

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False

    def verify_all(self, progress: Callable[[int], None] | None = None) -> tuple[int, list[str]]:
        """`fito verify`: read and check every byte of the decision's attempt (object sizes and headers, every
        block of every item, every value decodes), whatever world size reads it. Returns (items, errors)."""
        assert self._decision is not None, "verify_all() needs Reader(..., decision=...)"
        if self._manifest is None:
            self._manifest = self._given or load_sharded_manifest(self.storage, self._decision)
        self._where = self._decision.manifest
        m = self._manifest
        items, errors = 0, []
        for obj in m.objects:
            try:
                self._check_object(obj.rank)
            except FitoError as exc:
                errors.append(str(exc))
                continue
            pieces = [(t.fqn, c.piece) for t in m.tensors.values() for c in t.chunks if c.piece.rank == obj.rank]
            pieces += [(fqn, p) for fqn, p in m.values.items() if p.rank == obj.rank]
            for fqn, piece in pieces:
                try:
                    raw, _ = self._read_blocks(piece, fqn, 0, piece.length)
                    if fqn in m.values:
                        decode_value(raw.numpy().tobytes(), f"{self._where}: {fqn}", fqn)
                    items += 1
                except FitoError as exc:
                    errors.append(str(exc))
                if progress is not None:
                    progress(piece.length)
        return items, errors

    def read_value(self, fqn: str) -> Any:
        """One value of the decision's attempt, verified and decoded (`fito inspect` reads entry documents)."""
        assert self._decision is not None, "read_value() needs Reader(..., decision=...)"
        if self._manifest is None:
            self._manifest = self._given or load_sharded_manifest(self.storage, self._decision)
        self._where = self._decision.manifest
        piece = self._manifest.values[fqn]
        self._check_object(piece.rank)
        raw, _ = self._read_blocks(piece, fqn, 0, piece.length)
        return decode_value(raw.numpy().tobytes(), f"{self._where}: {fqn}", fqn)

    # ---------------------------------------------------------------- which step
    def _agree_on_decision(self) -> Decision:
        """Rank 0 chooses (fito.commit.decision: the same choice and errors as Checkpointer.restore) and tells
        every rank; a refusal has the same class on every rank. Without a `store` the root's log is opened
        read-only: no fence, nothing written."""
        root = self.storage.url

        def rank0() -> list[Decision]:
            store = self._store if self._store is not None else reader_store(self.storage)
            try:
                return decision.candidates(decision.read_committed(root, store), self.step, root)
            finally:
                if store is not None and store is not self._store:
                    store.close()
        return decision.agree(self.transport, root, rank0)[-1]

    # ---------------------------------------------------------------- phase 1: read and verify
    def _read_and_verify(self, items: list[ReadItem], planner: LoadPlanner) -> list[Action]:
        m = self._manifest
        assert m is not None
        index = pieces_of(m)
        by_key: dict[Any, list[ReadItem]] = defaultdict(list)
        for item in items:
            by_key[key_of(item.storage_index)].append(item)
        checked: set[int] = set()
        actions: list[Action] = []
        self._files = {}
        try:
            with BlockReads(m.algorithm, m.block_bytes, self.progress) as self._reads:
                self._verify_items(by_key, index, checked, actions, planner)
                self._reads.settle()  # every block this rank uses, checked before its vote
        finally:
            self._reads = None
            files, self._files = self._files, None
            for f in files.values():
                f.close()
        return actions

    def _verify_items(self, by_key: dict[Any, list[ReadItem]], index: dict[Any, Any], checked: set[int],
                      actions: list[Action], planner: LoadPlanner) -> None:
        for key, reqs in by_key.items():
            if key not in index:
                raise UnsafeCheckpointError(path=self._where, unit=str(key[0]), expected="a chunk the manifest lists", found=f"a read of {key}")
            piece, dtype, sizes = index[key]
            if piece.rank not in checked:
                self._check_object(piece.rank)
                checked.add(piece.rank)
            if dtype is None:  # a value: read it whole
                raw, _ = self._read_blocks(piece, key[0], 0, piece.length)
                actions += [value_action(planner, req, raw.numpy().tobytes(), self._where) for req in reqs]
            else:
                actions += self._tensor_actions(key[0], piece, dtype, sizes, reqs, planner)

    def _check_object(self, rank: int) -> None:
        m = self._manifest
        assert m is not None
        obj = m.objects[rank]
        try:
            size = self._real_size(obj.file)
            if self._files is None:
                with self.storage.open_read(obj.file) as f:
                    head = f.read(HEADER.size)
            else:
                f = self._open(rank)
                f.seek(0)
                head = f.read(HEADER.size)
        except FileNotFoundError:
            raise CheckpointCorruptError(path=where(self.storage, obj.file), unit=None, expected=f"the object of rank {rank}", found=f"no such {kind_of(self.storage)}") from None
        if size != obj.size:
            raise CheckpointCorruptError(path=where(self.storage, obj.file), unit=None, expected=f"{obj.size} bytes", found=f"{size} bytes (truncated or foreign)")
        items = sum(c.piece.rank == rank for t in m.tensors.values() for c in t.chunks) + sum(p.rank == rank for p in m.values.values())
        for what, expected, found in check_header(head, ObjectHeader(m.epoch, rank, items, m.attempt)):
            raise CheckpointCorruptError(path=where(self.storage, obj.file), unit=None, expected=f"{what} {expected!r}", found=f"{what} {found!r}")

    def _read_blocks(self, piece: Piece, fqn: str, start: int, end: int, into: torch.Tensor | None = None,
                     now: bool = True) -> tuple[torch.Tensor, int]:
        """Read the whole blocks holding bytes [start, end) of `piece` and check them (before returning, or,
        with now=False inside read_data, before its vote); return them and where they begin. `into`: a flat
        uint8 tensor of exactly that many bytes to read them into (else a new buffer)."""
        m = self._manifest
        assert m is not None
        self._check_fits(piece, fqn)  # before a byte is allocated for it
        first, last = block_span(start, end, piece.length, m.block_bytes)
        begin, stop = first * m.block_bytes, min(last * m.block_bytes, piece.length)
        buf = torch.empty(stop - begin, dtype=torch.uint8) if into is None else into
        assert buf.numel() == stop - begin
        view = memoryview(buf.numpy()) if len(buf) else memoryview(b"")
        obj = m.objects[piece.rank]
        reads = self._reads or BlockReads(m.algorithm, m.block_bytes, self.progress)  # outside a load: checked now
        runs = [(first, last, False)]
        if self._peers is not None and not now and piece.length:  # a tensor chunk in a cooperative read
            self._peers.region(piece, fqn, buf, first, last)
            runs = self._peers.split(piece, first, last)  # the received runs are filled by the exchange
        for lo, hi, received in runs:
            if received:
                continue
            a, b = lo * m.block_bytes - begin, min(hi * m.block_bytes, piece.length) - begin
            self.bytes_read += b - a
            self.bytes_fetched += b - a
            if self._files is None:
                with self.storage.open_read(obj.file) as f:
                    reads.read(f, view[a:b], piece.offset + begin + a, piece, lo, obj.file, fqn, now=True)
            else:
                reads.read(self._open(piece.rank), view[a:b], piece.offset + begin + a, piece, lo, obj.file, fqn, now=now)
        return buf, begin

    def check_fits(self, fqn: str) -> None:
        """`_check_fits` for every piece of item `fqn` (a tensor's chunks, or a value), before a caller
        allocates a buffer the manifest sized (fito.Checkpointer's restore)."""
        m = self._manifest if self._manifest is not None else self._given
        assert m is not None, "check_fits() needs the manifest"
        self._manifest = m
        pieces = [c.piece for c in m.tensors[fqn].chunks] if fqn in m.tensors else [m.values[fqn]]
        for piece in pieces:
            self._check_fits(piece, fqn)

    def _check_fits(self, piece: Piece, fqn: str) -> None:
        """The one size check of every read (Checkpointer.restore, dcp.load, verify, inspect): the piece lies
        inside its object's real size in storage (a manifest can claim any size, and the object may be a
        sparse file of that size) and a value is no bigger than a value can be. Before any buffer exists."""
        m = self._manifest
        assert m is not None
        obj = m.objects[piece.rank]
        try:
            size = self._real_size(obj.file)
        except FileNotFoundError:
            raise CheckpointCorruptError(path=where(self.storage, obj.file), unit=None, expected=f"the object of rank {piece.rank}",
                                         found=f"no such {kind_of(self.storage)}") from None
        end = piece.offset + piece.length
        if end > size or size != obj.size:
            raise CheckpointCorruptError(path=where(self.storage, obj.file), unit=fqn, expected=f"bytes [{piece.offset}, {end}) inside the object "
                                         f"of {obj.size} bytes the manifest lists", found=f"an object of {size} bytes in storage")
        if fqn in m.values and piece.length > MAX_VALUE_BYTES:
            raise CheckpointCorruptError(path=where(self.storage, obj.file), unit=fqn, expected=f"a value of at most {MAX_VALUE_BYTES} bytes",
                                         found=f"a claimed length of {piece.length} bytes (a forged or damaged manifest)")

    def _real_size(self, file: str) -> int:
        """An object's size in storage, asked once per Reader (the object checks and every read use it)."""
        if file not in self._sizes:
            self._sizes[file] = self.storage.size(file)
        return self._sizes[file]

    def _open(self, rank: int) -> BinaryIO:
        """The object of `rank`, opened once while read_data runs."""
        assert self._files is not None and self._manifest is not None
        f = self._files.get(rank)
        if f is None:
            f = self._files[rank] = self.storage.open_read(self._manifest.objects[rank].file)
        return f

    def _tensor_actions(self, fqn: str, piece: Piece, dtype: str, sizes: tuple[int, ...], reqs: list[ReadItem],
                        planner: LoadPlanner) -> list[Action]:
        torch_dtype = DTYPES[dtype]
        itemsize = torch.empty((), dtype=torch_dtype).element_size()
        strides = _contiguous_strides(sizes)
        spans = [_element_span(r.storage_offsets, r.lengths, strides) for r in reqs]
        dsts = []
        for req in reqs:
            dst = planner.resolve_tensor(req).detach()
            # DCP's own planner casts on copy, as stock DCP does; fito's checked the dtypes when it planned
            if tuple(dst.shape) != tuple(req.lengths) or (dst.dtype != torch_dtype and isinstance(planner, FitoLoadPlanner)):
                raise StateMismatchError(f"{req.dest_index.fqn}: target piece {dst.dtype}{list(dst.shape)}, checkpoint "
                                         f"{torch_dtype}{list(req.lengths)}")
            dsts.append(dst)
        actions: list[Action] = []
        whole = piece.length // itemsize
        rest = []
        for req, span, dst in zip(reqs, spans, dsts):
            if span is None:
                continue
            if self._scratch and span == (0, whole) and whole * itemsize == piece.length and dst.is_contiguous():
                # the whole chunk into its own (scratch) target: verified in place, nothing to copy later
                self._read_blocks(piece, fqn, 0, piece.length, into=dst.reshape(-1).view(torch.uint8), now=False)
                actions.append(_committer(planner, req, dst))
            else:
                rest.append((req, span, dst))
        if not rest:
            return actions
        buf, begin = self._read_blocks(piece, fqn, min(s[0] for _, s, _ in rest) * itemsize, max(s[1] for _, s, _ in rest) * itemsize,
                                       now=False)
        flat = buf.view(torch_dtype)
        for req, span, dst in rest:
            src = flat.as_strided(tuple(req.lengths), strides, span[0] - begin // itemsize)
            actions.append(_copier(planner, req, dst, src))
        return actions

    # ---------------------------------------------------------------- the vote
    def _refusal(self, error: BaseException | None) -> BaseException:
        """Every rank learns every rank's reason (one gather and one broadcast, on the failure path only)."""
        mine = "" if error is None else f"{type(error).__name__}: {error}"
        gathered = self.transport.gather(mine.encode())
        summary = json.dumps([g.decode() for g in gathered]) if gathered is not None else None
        reasons = json.loads(self.transport.broadcast(summary.encode() if summary else None))
        failed = "; ".join(f"rank {r}: {why}" for r, why in enumerate(reasons) if why)
        kind = next((why.split(":", 1)[0] for why in reasons if why), "")  # the lowest failing rank's class
        if isinstance(error, FitoError) and type(error).__name__ == kind:
            return error
        if error is not None and not isinstance(error, Exception):
            return error  # KeyboardInterrupt and friends: the peers were told, now let it through
        # every rank raises that class: their handlers take the same branch
        return refusal(kind, self._where or self.storage.url, failed or "a failure on another rank")


def _committer(planner: LoadPlanner, req: ReadItem, dst: torch.Tensor) -> Action:
    def commit() -> None:
        planner.commit_tensor(req, dst)
    return commit


def _copier(planner: LoadPlanner, req: ReadItem, dst: torch.Tensor, src: torch.Tensor) -> Action:
    def copy() -> None:
        dst.copy_(src)
        planner.commit_tensor(req, dst)
    return copy

