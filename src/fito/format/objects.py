"""One object per (step, attempt, rank): a 64-byte header, then the rank's items, each starting on a 64-byte
boundary, as raw bytes. Every item's payload is cut into fixed-size blocks and each block has its own hash,
kept in the manifest, so a reader that needs only part of an item (resharding) reads and verifies just the
blocks that hold that part.

Bytes only: no torch, no I/O. The executor (fito.dcp) does the reading and writing."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import xxhash

from fito.format.hashing import new_hash

MAGIC = b"FITOOBJ2"
# magic, epoch tag, rank, item count, xxh64(attempt id); padded to 64 bytes
HEADER = struct.Struct("<8sQIIQ32x")
ALIGN = 64


@dataclass(frozen=True)
class ObjectHeader:
    epoch: int
    rank: int
    items: int
    attempt: str

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, self.epoch, self.rank, self.items, attempt_hash(self.attempt))


def attempt_hash(attempt: str) -> int:
    return xxhash.xxh64_intdigest(attempt.encode())


def check_header(data: bytes | memoryview, expected: ObjectHeader) -> list[tuple[str, object, object]]:
    """[(field, expected, found)] for every header field that differs from `expected` (empty: it matches)."""
    if len(data) < HEADER.size:
        return [("header length", HEADER.size, len(data))]
    magic, epoch, rank, items, attempt = HEADER.unpack_from(data)
    checks = [
        ("object magic", MAGIC, magic),
        ("epoch tag", expected.epoch, epoch),
        ("rank", expected.rank, rank),
        ("item count", expected.items, items),
        ("attempt", attempt_hash(expected.attempt), attempt),
    ]
    return [(what, e, f) for what, e, f in checks if e != f]


def padding(offset: int) -> int:
    """Bytes of zeros that bring `offset` to the next item boundary."""
    return -offset % ALIGN


def block_count(length: int, block_bytes: int) -> int:
    """Blocks of an item of `length` bytes. An empty item has one (empty) block, so it is vouched for too."""
    return max(1, -(-length // block_bytes))


def block_span(start: int, end: int, length: int, block_bytes: int) -> tuple[int, int]:
    """[first, last) block indices holding bytes [start, end) of an item of `length` bytes."""
    if not 0 <= start <= end <= length:
        raise ValueError(f"byte range [{start}, {end}) outside an item of {length} bytes")
    if start == end:
        return (0, 0) if length else (0, 1)
    return start // block_bytes, -(-end // block_bytes)


def block_digest(algorithm: str, data: bytes | memoryview) -> str:
    """Hex digest of one block (the manifest stores hex only; the algorithm is named once per manifest)."""
    h = new_hash(algorithm)
    h.update(data)
    return h.hexdigest()


def item_digest(algorithm: str, blocks: Sequence[str]) -> str:
    """One 'algo:hex' for a whole item: the hash of its block hashes, what a READY names per item."""
    h = new_hash(algorithm)
    h.update("\n".join(blocks).encode())
    return f"{algorithm}:{h.hexdigest()}"


def digest_hex_length(algorithm: str) -> int:
    return len(new_hash(algorithm).hexdigest())
