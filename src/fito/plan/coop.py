"""The cooperative read plan: each stored block that several ranks need is fetched from storage by one of them
(its owner) and sent to the others, who verify it again (fito.dcp.peer_reads runs the exchange).

Pure (no I/O, no collectives). DCP's global planning step hands the coordinator every rank's read requests;
from them and the manifest `plan_shares` builds every rank's `Share`, and DCP scatters them, so every rank
acts on the same plan. Only tensor chunks take part (values are small and decoded on the spot).

How owners are chosen: for each stored chunk, the block range each rank needs (the hull of its requests,
whole blocks: the unit a hash vouches for) is cut where any rank's range starts or ends; a run of blocks
needed by two or more ranks is cut into units of at most `unit_bytes` and each unit goes to the needer that
has the fewest bytes to fetch so far (largest units first; ties to the lowest rank). Owners are always
needers: an owner reads into the buffer it needs anyway, so the exchange sends from it and costs no memory.
Blocks only one rank needs are read by it, as before."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from torch.distributed.checkpoint.planner import LoadPlan

from fito import knobs
from fito.plan.tree import DTYPES
from fito.format.manifest import Piece, ShardedManifest
from fito.format.objects import block_span
from fito.plan.metadata import key_of, pieces_of

PieceId = tuple[int, int]  # (object's rank, offset): a non-empty piece's place, the same on every rank


@dataclass(frozen=True)
class Message:
    """One chunk of a transfer: blocks [lo, hi) of a piece, sent by `owner` to each of `receivers`, tagged
    `tag` (unique in the plan; messages are exchanged in windows of consecutive tags)."""

    tag: int
    piece: PieceId
    lo: int
    hi: int
    owner: int
    receivers: tuple[int, ...]


@dataclass(frozen=True)
class Share:
    """One rank's part of the cooperative read plan: the blocks it receives instead of reading them
    ({piece: [(lo, hi), ...]}) and the messages it sends or receives, in tag order."""

    rank: int
    world_size: int
    remote: dict[PieceId, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    window: int = 8  # messages in flight at once (consecutive tags), bounding scratch memory


def contiguous_strides(sizes: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(sizes):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def element_span(offsets: Any, lengths: Any, strides: tuple[int, ...]) -> tuple[int, int] | None:
    """[first, last] + 1 flat element indices of a box in a row-major chunk (None for an empty box)."""
    if any(n == 0 for n in lengths):
        return None
    first = sum(o * s for o, s in zip(offsets, strides))
    last = sum((o + n - 1) * s for o, n, s in zip(offsets, lengths, strides))
    return first, last + 1


def needed_blocks(piece: Piece, itemsize: int, sizes: Sequence[int], boxes: Sequence[tuple[Any, Any]],
                  block_bytes: int) -> tuple[int, int] | None:
    """The blocks [first, last) a rank reads of one chunk for its requests' (offsets, lengths) boxes: the hull
    of their byte spans, as fito.dcp.Reader reads them. None if it needs none of its bytes."""
    strides = contiguous_strides(sizes)
    spans = [s for s in (element_span(o, n, strides) for o, n in boxes) if s is not None]
    if not spans or not piece.length:
        return None
    return block_span(min(s[0] for s in spans) * itemsize, max(s[1] for s in spans) * itemsize, piece.length, block_bytes)


def span_bytes(piece: Piece, lo: int, hi: int, block_bytes: int) -> int:
    return min(hi * block_bytes, piece.length) - lo * block_bytes


def plan_shares(needs: Sequence[dict[PieceId, tuple[int, int]]], pieces: dict[PieceId, Piece], block_bytes: int, *,
                unit_bytes: int, chunk_bytes: int, window: int = 8) -> list[Share] | None:
    """Every rank's Share, from each rank's needed blocks per piece (`needs[rank]`); None if no block is
    needed by two ranks (nothing to share: the plain read path, with no extra collective)."""
    world = len(needs)
    unit = max(1, unit_bytes // block_bytes)
    chunk = max(1, chunk_bytes // block_bytes)
    load = [0] * world  # bytes each rank fetches from storage
    units: list[tuple[PieceId, int, int, tuple[int, ...]]] = []
    for pid in sorted({p for n in needs for p in n}):
        ranges = {r: n[pid] for r, n in enumerate(needs) if pid in n and n[pid][0] < n[pid][1]}
        cuts = sorted({b for lo, hi in ranges.values() for b in (lo, hi)})
        for a, b in zip(cuts, cuts[1:]):
            needers = tuple(r for r, (lo, hi) in ranges.items() if lo <= a and b <= hi)
            if len(needers) == 1:
                load[needers[0]] += span_bytes(pieces[pid], a, b, block_bytes)
            elif needers:
                units += [(pid, lo, min(lo + unit, b), needers) for lo in range(a, b, unit)]
    if not units:
        return None
    owners: dict[tuple[PieceId, int], int] = {}
    for pid, lo, hi, needers in sorted(units, key=lambda u: (-span_bytes(pieces[u[0]], u[1], u[2], block_bytes), u[0], u[1])):
        owner = min(needers, key=lambda r: (load[r], r))
        load[owner] += span_bytes(pieces[pid], lo, hi, block_bytes)
        owners[(pid, lo)] = owner
    remote: list[dict[PieceId, list[tuple[int, int]]]] = [{} for _ in range(world)]
    messages: list[list[Message]] = [[] for _ in range(world)]
    tag = 0
    for pid, lo, hi, needers in units:  # piece and block order: the order every rank exchanges in
        owner = owners[(pid, lo)]
        receivers = tuple(r for r in needers if r != owner)
        for r in receivers:
            remote[r].setdefault(pid, []).append((lo, hi))
        for c in range(lo, hi, chunk):
            m = Message(tag, pid, c, min(c + chunk, hi), owner, receivers)
            tag += 1
            for r in (owner, *receivers):
                messages[r].append(m)
    return [Share(r, world, {p: tuple(v) for p, v in remote[r].items()}, tuple(messages[r]), window)
            for r in range(world)]


def fetch_bytes(shares: Sequence[Share] | None, needs: Sequence[dict[PieceId, tuple[int, int]]],
                pieces: dict[PieceId, Piece], block_bytes: int) -> list[int]:
    """Bytes each rank fetches from storage under `shares` (None: every rank reads all it needs)."""
    out = []
    for r, n in enumerate(needs):
        total = sum(span_bytes(pieces[p], lo, hi, block_bytes) for p, (lo, hi) in n.items() if lo < hi)
        if shares is not None:
            total -= sum(span_bytes(pieces[p], lo, hi, block_bytes) for p, v in shares[r].remote.items() for lo, hi in v)
        out.append(total)
    return out



def needs_of(items: Sequence[Any], index: dict[Any, tuple[Piece, str | None, tuple[int, ...]]],
             block_bytes: int) -> dict[PieceId, tuple[int, int]]:
    """One rank's needed blocks per tensor piece, from its DCP ReadItems and `fito.plan.metadata.pieces_of`
    (keys it does not know, and values, are left out: the reader refuses or reads them itself)."""
    boxes: dict[Any, list[tuple[Any, Any]]] = {}
    for item in items:
        boxes.setdefault(key_of(item.storage_index), []).append((item.storage_offsets, item.lengths))
    out: dict[PieceId, tuple[int, int]] = {}
    for key, bx in boxes.items():
        if key not in index or index[key][1] is None or index[key][1] not in DTYPES:
            continue
        piece, dtype, sizes = index[key]
        span = needed_blocks(piece, DTYPES[dtype].itemsize, sizes, bx, block_bytes)
        if span is not None:
            out[(piece.rank, piece.offset)] = span
    return out


def with_shares(plans: list[LoadPlan], m: ShardedManifest) -> list[LoadPlan]:
    """DCP's global load step (coordinator): every rank's plan with its Share as `storage_data`, or the plans
    as they are when one rank loads or no block is needed twice."""
    if len(plans) < 2:
        return plans
    index = pieces_of(m)
    needs = [needs_of(p.items, index, m.block_bytes) for p in plans]
    pieces = {(p.rank, p.offset): p for p, _, _ in index.values()}
    shares = plan_shares(needs, pieces, m.block_bytes, unit_bytes=knobs.read_run_bytes(), chunk_bytes=knobs.exchange_bytes())
    if shares is None:
        return plans
    return [dataclasses.replace(p, storage_data=s) for p, s in zip(plans, shares)]
