"""The exchange step of a cooperative read (the plan: fito.plan.coop): owners send the blocks they read and
verified to the ranks that need them too, over the load's gloo group; each receiver checks every block's
hash against the manifest again before it may be used (a receiver does not trust the owner).

Order inside fito.dcp.Reader.read_data, on every rank:
1. read from storage every block it needs except those its Share says it receives (`split`), into its own
   buffers, registered here (`region`); check them (BlockReads.settle);
2. vote: if any rank failed, none exchanges (the refusal names the real failure, not a missing send);
3. `exchange()`: messages in windows of consecutive tags, every send and receive of a window posted at once
   (isend/irecv, tag = the message's), then awaited; so no rank waits on one that waits on it. A message
   goes straight from the owner's buffer into the receiver's when one host buffer holds it, else through a
   scratch chunk of host memory (at most one per message of a window: bounded), which also stages a
   device buffer. Received blocks are checked before they are copied anywhere else; a damaged one is
   recorded, the exchange goes on (the peers still wait for its messages), and the error is returned;
4. vote again (read_data's own): only if every rank verified every byte it uses is anything applied.

`SEND_FAULTS` is for tests only (fito.testing.faults.corrupt_in_transit): each is called with (tag,
receiver, bytes to send) and returns the bytes to send instead."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist

from fito.errors import CheckpointCorruptError, FitoError, UnsafeCheckpointError
from fito.format.manifest import Piece, ShardedManifest
from fito.format.objects import block_digest
from fito.plan.coop import Message, PieceId, Share, span_bytes

SEND_FAULTS: list[Callable[[int, int, torch.Tensor], torch.Tensor]] = []
HINT = ("the owner read and verified these bytes, so they changed between ranks; nothing was restored on any rank. "
        "Retry; if it recurs, FITO_COOPERATIVE_READ=0 makes every rank read all it needs from storage")


class PeerReads:
    """One read_data's cooperative part on one rank: which blocks it receives, and where its read buffers
    are (a region: a flat uint8 tensor holding blocks [first, last) of a piece)."""

    def __init__(self, share: Share, m: ShardedManifest, group: Any, where: str,
                 progress: Callable[[int], None] | None = None) -> None:
        self.share, self.m, self.group, self.where, self.progress = share, m, group, where, progress
        self.pieces: dict[PieceId, Piece] = {}
        for t in m.tensors.values():
            for c in t.chunks:
                self.pieces[(c.piece.rank, c.piece.offset)] = c.piece
        self.regions: dict[PieceId, list[tuple[torch.Tensor, int, int]]] = {}
        self.bytes_received = 0
        self.fqns: dict[PieceId, str] = {}

    def split(self, piece: Piece, first: int, last: int) -> list[tuple[int, int, bool]]:
        """Blocks [first, last) of `piece` as runs (lo, hi, received?) in order."""
        remote = self.share.remote.get((piece.rank, piece.offset), ())
        out, at = [], first
        for lo, hi in sorted(remote):
            lo, hi = max(lo, first), min(hi, last)
            if lo >= hi:
                continue
            if at < lo:
                out.append((at, lo, False))
            out.append((lo, hi, True))
            at = hi
        if at < last:
            out.append((at, last, False))
        return out

    def region(self, piece: Piece, fqn: str, buf: torch.Tensor, first: int, last: int) -> None:
        pid = (piece.rank, piece.offset)
        self.regions.setdefault(pid, []).append((buf, first, last))
        self.fqns[pid] = fqn

    def exchange(self) -> FitoError | None:
        """Run every message of this rank's Share; the first damaged or missing block, or None."""
        error: FitoError | None = None
        me, window = self.share.rank, max(1, self.share.window)
        by_window: dict[int, list[Message]] = {}
        for msg in self.share.messages:
            by_window.setdefault(msg.tag // window, []).append(msg)
        for w in sorted(by_window):
            works, received = [], []
            for msg in by_window[w]:
                if msg.owner == me:
                    data, problem = self._outgoing(msg)
                    error = error or problem
                    for r in msg.receivers:
                        out = data
                        for fault in SEND_FAULTS:
                            out = fault(msg.tag, r, out)
                        works.append(dist.isend(out, dst=self._peer(r), group=self.group, tag=msg.tag))
                elif me in msg.receivers:
                    into, direct = self._incoming(msg)
                    works.append(dist.irecv(into, src=self._peer(msg.owner), group=self.group, tag=msg.tag))
                    received.append((msg, into, direct))
            for work in works:
                work.wait()
            for msg, into, direct in received:
                problem = self._check(msg, into)
                if problem is None:
                    self._deliver(msg, into, direct)
                error = error or problem
                self.bytes_received += into.numel()
                if self.progress is not None:
                    self.progress(into.numel())
        return error

    # ---------------------------------------------------------------- buffers
    def _span(self, msg: Message) -> tuple[Piece, int, int]:
        """The piece and the byte range [start, stop) of the piece the message carries."""
        piece = self.pieces[msg.piece]
        start = msg.lo * self.m.block_bytes
        return piece, start, start + span_bytes(piece, msg.lo, msg.hi, self.m.block_bytes)

    def _views(self, msg: Message) -> list[tuple[torch.Tensor, int, int]]:
        """(region view, byte offset in the message, length) for every region holding part of the message."""
        piece, start, stop = self._span(msg)
        out = []
        for buf, first, last in self.regions.get(msg.piece, []):
            begin = first * self.m.block_bytes
            lo, hi = max(start, begin), min(stop, begin + buf.numel())
            if lo < hi:
                out.append((buf[lo - begin:hi - begin], lo - start, hi - lo))
        return out

    def _outgoing(self, msg: Message) -> tuple[torch.Tensor, FitoError | None]:
        piece, start, stop = self._span(msg)
        views = self._views(msg)
        whole = [v for v, at, n in views if at == 0 and n == stop - start and v.device.type == "cpu"]
        if whole:
            return whole[0], None
        data = torch.zeros(stop - start, dtype=torch.uint8)  # through host memory: a device buffer, or pieces
        covered = 0
        for view, at, n in views:
            data[at:at + n].copy_(view)
            covered += n
        if covered < stop - start:  # the plan and this rank's reads disagree: the receivers will refuse zeros
            return data, UnsafeCheckpointError(
                path=self.where, unit=f"{self.fqns.get(msg.piece, msg.piece)} blocks [{msg.lo}, {msg.hi})",
                expected="the blocks this rank owns in the cooperative read plan, read from storage",
                found=f"{covered} of {stop - start} bytes read", hint="a bug in fito's read plan; nothing was restored")
        return data, None

    def _incoming(self, msg: Message) -> tuple[torch.Tensor, bool]:
        piece, start, stop = self._span(msg)
        for view, at, n in self._views(msg):
            if at == 0 and n == stop - start and view.device.type == "cpu":
                return view, True  # received in place; checked there before anything reads it
        return torch.empty(stop - start, dtype=torch.uint8), False

    def _check(self, msg: Message, data: torch.Tensor) -> FitoError | None:
        piece, _, _ = self._span(msg)
        size, raw = self.m.block_bytes, memoryview(data.numpy()) if data.numel() else memoryview(b"")
        for i, b in enumerate(range(msg.lo, msg.hi)):
            got = block_digest(self.m.algorithm, raw[i * size:(i + 1) * size])
            if got != piece.blocks[b]:
                return CheckpointCorruptError(
                    path=self.m.objects[piece.rank].file, unit=f"{self.fqns.get(msg.piece, msg.piece)} block {b}",
                    expected=f"{self.m.algorithm}:{piece.blocks[b]}",
                    found=f"{self.m.algorithm}:{got} in the bytes received from rank {msg.owner}", hint=HINT)
        return None

    def _deliver(self, msg: Message, data: torch.Tensor, direct: bool) -> None:
        """Copy checked bytes into every region that holds part of them (but the one they arrived in)."""
        for view, at, n in self._views(msg):
            if direct and view.data_ptr() == data.data_ptr():
                continue
            view.copy_(data[at:at + n])

    def _peer(self, rank: int) -> int:
        """A rank of the load's group as torch.distributed's send and recv name it (a global rank)."""
        return rank if self.group is None else dist.get_global_rank(self.group, rank)
