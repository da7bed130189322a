"""One rank's shard file for one attempt: a sequence of units, each a 64-byte header carrying its epoch tag,
rank, index, payload length and name hash, then the payload, padded to 64 bytes.

Writing streams payloads straight from tensor memory while a second thread hashes the same bytes, so the
file is written and hashed in one pass. Reading checks each unit's header before its payload is allocated,
reads the payload straight into the caller's own buffer (one per tensor) and verifies every content hash
before any of them is handed out."""
from __future__ import annotations

import os
import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Callable, Sequence

import xxhash

from fito.format.hashing import new_hash
from fito.errors import CheckpointCorruptError, CheckpointUnreadableError, UnsafeCheckpointError
from fito.protocol.messages import ShardWritten, UnitEntry
from fito.storage.base import Storage

MAGIC = b"FITOUNT1"
HEADER = struct.Struct("<8sQIIQQ24x")  # magic, epoch, rank, index, payload length, xxh64(name)
ALIGN = 64
CHUNK = 32 << 20  # hash/write granularity: big enough for full-speed syscalls, small enough to overlap
READ_AHEAD = 2 * CHUNK  # a reader waits for the hasher beyond this many bytes read but not yet hashed
RING = 3  # chunk buffers of a verify-only read: one being read while up to two are hashed

Progress = Callable[[int], None]


def _write_all(f: BinaryIO, data: memoryview) -> None:
    while len(data):
        n = f.write(data)
        data = data[n:]


def write_shard(
    storage: Storage, rel: str, *, epoch: int, rank: int, units: Sequence[tuple[str, memoryview]],
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


Target = Callable[[int, int], memoryview]  # (unit index, payload bytes) -> writable buffer of exactly that size


class ShardReader:
    """Reads one rank's shard of one attempt, unit by unit, verifying as it goes; bounded work on hostile input.

    The file's real size is checked against the manifest when it is opened. For each unit the 64-byte header
    is read and checked (magic, epoch tag, rank, index, payload length, name hash) BEFORE its payload is
    allocated or read, then the payload goes straight into the buffer the caller allocated for it (its own
    tensor: no shared read buffer, no extra copy) while a second thread hashes header + payload. A caller
    must not use any payload before `read_into` returned: that is when every hash has matched."""

    def __init__(self, storage: Storage, rel: str, *, size: int, epoch: int, rank: int,
                 units: Sequence[UnitEntry], algorithm: str, progress: Progress | None = None) -> None:
        self.rel, self.epoch, self.rank, self.units = rel, epoch, rank, tuple(units)
        self.algorithm, self.progress = algorithm, progress
        new_hash(algorithm)  # an unknown algorithm is refused before the file is opened
        try:
            self._f = storage.open_read(rel)  # LocalFS: links, FIFOs, missing files are FitoErrors already
        except OSError as exc:  # another Storage may raise plain OSError (EIO, EACCES)
            raise CheckpointUnreadableError.from_os(rel, exc) from None
        try:
            try:
                found = self._f.seek(0, os.SEEK_END)  # the real size, from the handle that will be read
            except OSError as exc:
                raise CheckpointUnreadableError.from_os(rel, exc) from None
            if found != size:
                raise CheckpointCorruptError(path=rel, unit=None, expected=f"{size} bytes",
                                             found=f"{found} bytes (truncated or foreign)")
        except BaseException:
            self._f.close()
            raise

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def payload_length(self, index: int) -> int:
        """The payload size the manifest declares for unit `index` (header excluded)."""
        u = self.units[index]
        if u.length < HEADER.size:
            raise CheckpointCorruptError(path=self.rel, unit=u.name, expected=f"at least a {HEADER.size}-byte unit header",
                                         found=f"a {u.length}-byte unit")
        return u.length - HEADER.size

    def read_bytes(self, index: int, limit: int) -> bytearray:
        """Unit `index`'s payload, read whole and verified now; refused unread if it declares more than `limit`."""
        length = self.payload_length(index)
        if length > limit:
            raise UnsafeCheckpointError(path=self.rel, unit=self.units[index].name, expected=f"at most {limit} bytes",
                                        found=f"{length} bytes declared")
        header = self._header(index)
        data = bytearray(length)
        self._read(memoryview(data), self.units[index].offset + HEADER.size, self.units[index])
        self._compare(index, f"{self.algorithm}:{_hash(self.algorithm, header, data)}")
        return data

    def read_into(self, indices: Sequence[int], target: Target | None) -> None:
        """Read units `indices` (in order), each into `target(index, payload_length)`, and verify every hash.

        target=None only verifies: payloads pass through a ring of RING chunk buffers, so memory stays at
        RING x CHUNK whatever the shard's size (`fito verify`)."""
        digests: list[tuple[int, Future[str]]] = []
        pending: deque[tuple[Future[object], int]] = deque()  # chunk updates the hasher may not have done yet
        ahead = 0
        ring = [memoryview(bytearray(CHUNK)) for _ in range(RING)] if target is None else []
        slot = 0
        with ThreadPoolExecutor(1, thread_name_prefix="fito-hash") as hasher:
            for index in indices:
                length = self.payload_length(index)
                header = self._header(index)  # checked before anything is allocated for the payload
                buffer = None
                if target is not None:
                    buffer = target(index, length) if length else memoryview(bytearray())
                    if buffer.nbytes != length or buffer.readonly or buffer.format != "B" or buffer.ndim != 1:
                        raise ValueError(f"target for unit {index} is not a writable flat {length}-byte buffer")
                h = new_hash(self.algorithm)
                h.update(header)
                offset = self.units[index].offset + HEADER.size
                for start in range(0, length, CHUNK):  # hash each chunk while the next one is read
                    if buffer is not None:
                        chunk = buffer[start:start + CHUNK]
                    else:
                        chunk, slot = ring[slot][:min(CHUNK, length - start)], (slot + 1) % RING
                    self._read(chunk, offset + start, self.units[index])
                    pending.append((hasher.submit(h.update, chunk), len(chunk)))  # one worker: updates stay in order
                    ahead += len(chunk)
                    # Bounded read-ahead; with the ring, also never refill a slot the hasher has not finished.
                    while ahead > READ_AHEAD or (ring and len(pending) >= RING):
                        fut, n = pending.popleft()
                        fut.result()
                        ahead -= n
                digests.append((index, hasher.submit(h.hexdigest)))
            for index, fut in digests:
                self._compare(index, f"{self.algorithm}:{fut.result()}")

    # ---- pieces ----
    def _header(self, index: int) -> bytes:
        u = self.units[index]
        header = bytearray(HEADER.size)
        self._read(memoryview(header), u.offset, u)
        _check_header(self.rel, u, header, epoch=self.epoch, rank=self.rank, index=index)
        return bytes(header)

    def _read(self, target: memoryview, offset: int, u: UnitEntry) -> None:
        try:
            self._f.seek(offset)
            got = 0
            while got < len(target):
                n = self._f.readinto(target[got:])
                if not n:
                    raise CheckpointCorruptError(path=self.rel, unit=u.name, expected=f"{len(target)} bytes at offset {offset}",
                                                 found=f"end of file after {got} (the file shrank while being read)")
                got += n
                if self.progress:
                    self.progress(n)
        except OSError as exc:
            raise CheckpointUnreadableError.from_os(self.rel, exc) from None

    def _compare(self, index: int, found: str) -> None:
        u = self.units[index]
        if found != u.hash:
            raise CheckpointCorruptError(path=self.rel, unit=u.name, expected=f"content hash {u.hash}", found=found)


def _hash(algorithm: str, *data: bytes | bytearray | memoryview) -> str:
    h = new_hash(algorithm)
    for d in data:
        h.update(d)
    return h.hexdigest()


def _check_header(rel: str, u: UnitEntry, data: bytes | bytearray, *, epoch: int, rank: int, index: int) -> None:
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
