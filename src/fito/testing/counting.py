"""A Storage that counts what is read through it: every read of every object, as (object, offset, bytes),
so a test can tell how many times each stored byte was fetched (a cooperative restore: once, whatever the
number of ranks). Everything else goes to the wrapped storage unchanged."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, BinaryIO

from fito.storage.base import Storage


class CountingStorage:
    """`CountingStorage(inner)`: `reads` lists (object, offset, bytes) of every read, in order; `total()` sums
    them, `of(objects)` sums those of the named objects."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.root: Path = inner.root
        self.reads: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()  # BlockReads reads and hashes in two threads

    def record(self, rel: str, offset: int, n: int) -> None:
        if n:
            with self._lock:
                self.reads.append((rel, offset, n))

    def total(self) -> int:
        return sum(n for _, _, n in self.reads)

    def of(self, objects: Any) -> int:
        names = set(objects)
        return sum(n for rel, _, n in self.reads if rel in names)

    def read_bytes(self, rel: str, limit: int) -> bytes:
        data = self.inner.read_bytes(rel, limit)
        self.record(rel, 0, len(data))
        return data

    def open_read(self, rel: str) -> BinaryIO:
        return _CountingFile(self, rel, self.inner.open_read(rel))  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:  # writes, listing, sizes: unchanged
        return getattr(self.inner, name)


class _CountingFile:
    def __init__(self, storage: CountingStorage, rel: str, f: BinaryIO) -> None:
        self._storage, self._rel, self._f = storage, rel, f

    def read(self, n: int = -1) -> bytes:
        at = self._f.tell()
        data = self._f.read(n)
        self._storage.record(self._rel, at, len(data))
        return data

    def readinto(self, buf: Any) -> int:
        at = self._f.tell()
        n = self._f.readinto(buf) or 0
        self._storage.record(self._rel, at, n)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "_CountingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
