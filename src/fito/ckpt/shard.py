"""One rank's shard file for one attempt: a sequence of units, each a 64-byte header carrying its epoch tag,
rank, index, payload length and name hash, then the payload, padded to 64 bytes.

Writing streams payloads straight from tensor memory while a second thread hashes the same bytes, so the
file is written and hashed in one pass. Reading fills one preallocated buffer and verifies every unit
(header fields, then content hash) before any tensor is handed out."""
from __future__ import annotations

import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Callable, Sequence

import torch
import xxhash

from fito.ckpt.hashing import new_hash
from fito.ckpt.memory import host_buffer
from fito.errors import CheckpointCorruptError
from fito.protocol.messages import ShardWritten, UnitEntry
from fito.storage.localfs import LocalFS

MAGIC = b"FITOUNT1"
HEADER = struct.Struct("<8sQIIQQ24x")  # magic, epoch, rank, index, payload length, xxh64(name)
ALIGN = 64
CHUNK = 32 << 20  # hash/write granularity: big enough for full-speed syscalls, small enough to overlap

Progress = Callable[[int], None]


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a CPU tensor without copying when it is already contiguous."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy())


def _write_all(f: BinaryIO, data: memoryview) -> None:
    while len(data):
        n = f.write(data)
        data = data[n:]


def write_shard(
    storage: LocalFS, rel: str, *, epoch: int, rank: int, units: Sequence[tuple[str, memoryview]],
    algorithm: str, progress: Progress | None = None,
) -> ShardWritten:
    entries: list[tuple[str, int, int, Future[str]]] = []
    offset = 0
    with storage.create(rel) as f, ThreadPoolExecutor(1, thread_name_prefix="fito-hash") as hasher:
        for index, (name, payload) in enumerate(units):
            payload = payload.cast("B") if payload.format != "B" or payload.ndim != 1 else payload
            header = HEADER.pack(MAGIC, epoch, rank, index, len(payload), xxhash.xxh64_intdigest(name.encode()))
            h = new_hash(algorithm)
            h.update(header)
            _write_all(f, memoryview(header))
            for start in range(0, len(payload), CHUNK):
                chunk = payload[start:start + CHUNK]
                hasher.submit(h.update, chunk)  # one worker: updates stay in order
                _write_all(f, chunk)
                if progress:
                    progress(len(chunk))
            length = HEADER.size + len(payload)
            pad = -length % ALIGN
            if pad:
                _write_all(f, memoryview(bytes(pad)))
            entries.append((name, offset, length, hasher.submit(h.hexdigest)))
            offset += length + pad
    units_out = tuple(UnitEntry(name, off, length, f"{algorithm}:{fut.result()}", epoch) for name, off, length, fut in entries)
    return ShardWritten(rel, offset, units_out)


@dataclass
class VerifiedShard:
    """A shard whose every unit matched its manifest entry; `payload(i)` views unit i's bytes.

    Units are read into one buffer per state entry ("model", "optim", ...), so tensors that alias their
    buffer after restore (optimizer moments do) keep only their own entry's bytes alive, not the shard's."""

    views: list[torch.Tensor]  # unit i's bytes, header included

    def payload(self, index: int) -> torch.Tensor:
        return self.views[index][HEADER.size:]


def entry_spans(units: Sequence[UnitEntry]) -> list[tuple[int, int]]:
    """[first, last) unit index ranges of consecutive units belonging to the same state entry."""
    spans: list[tuple[int, int]] = []
    for i, u in enumerate(units):
        if spans and units[i - 1].name.split("/", 1)[0] == u.name.split("/", 1)[0]:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def read_shard(
    storage: LocalFS, rel: str, *, size: int, epoch: int, rank: int, units: Sequence[UnitEntry],
    algorithm: str, progress: Progress | None = None,
) -> VerifiedShard:
    try:
        found_size = storage.size(rel)
    except FileNotFoundError:
        raise CheckpointCorruptError(path=rel, unit=None, expected=f"a shard file of {size} bytes", found="no such file") from None
    if found_size != size:
        raise CheckpointCorruptError(path=rel, unit=None, expected=f"{size} bytes", found=f"{found_size} bytes (truncated or foreign)")
    views: list[torch.Tensor] = []
    digests: list[Future[str]] = []
    with storage.open_read(rel) as f, ThreadPoolExecutor(1, thread_name_prefix="fito-hash") as hasher:
        for first, last in entry_spans(units):
            base = units[first].offset
            buffer = host_buffer(max(u.offset + u.length for u in units[first:last]) - base)
            for u in units[first:last]:
                view = buffer[u.offset - base:u.offset - base + u.length]
                target = memoryview(view.numpy())
                f.seek(u.offset)
                got = 0
                while got < u.length:
                    n = f.readinto(target[got:got + CHUNK])
                    if not n:
                        break
                    got += n
                    if progress:
                        progress(n)
                _check_header(rel, u, target[:got], epoch=epoch, rank=rank, index=len(digests))
                digests.append(hasher.submit(_hash, algorithm, target))  # hashed while the next unit is read
                views.append(view)
        for u, fut in zip(units, digests):
            found = f"{algorithm}:{fut.result()}"
            if found != u.hash:
                raise CheckpointCorruptError(path=rel, unit=u.name, expected=f"content hash {u.hash}", found=found)
    return VerifiedShard(views)


def _hash(algorithm: str, data: memoryview) -> str:
    h = new_hash(algorithm)
    h.update(data)
    return h.hexdigest()


def _check_header(rel: str, u: UnitEntry, data: memoryview, *, epoch: int, rank: int, index: int) -> None:
    if len(data) < HEADER.size:
        raise CheckpointCorruptError(path=rel, unit=u.name, expected=f"{u.length} bytes", found=f"{len(data)} bytes")
    magic, tag, hrank, hindex, length, name_hash = HEADER.unpack_from(data)
    checks = [
        ("unit magic", MAGIC, magic),
        ("epoch tag", epoch, tag),
        ("rank", rank, hrank),
        ("unit index", index, hindex),
        ("payload length", u.length - HEADER.size, length),
        ("name hash", xxhash.xxh64_intdigest(u.name.encode()), name_hash),
    ]
    for what, expected, found in checks:
        if expected != found:
            raise CheckpointCorruptError(path=rel, unit=u.name, expected=f"{what} {expected!r}", found=f"{what} {found!r}")
