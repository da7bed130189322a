"""The reads every test storage wrapper passes straight to the real storage it wraps (`inner`): the fault
injector (fito.testing.faults) and the recorder (fito.testing.recording) change how objects are written, never
how they are read, so those reads live here once."""
from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO


class ReadsThrough:
    """Reads, sizes, existence and listings of `self.inner`, unchanged."""

    inner: Any

    @property
    def url(self) -> str:
        return self.inner.url

    def path(self, rel: str) -> Path:
        return self.inner.path(rel)

    def read_bytes(self, rel: str, limit: int) -> bytes:
        return self.inner.read_bytes(rel, limit)

    def open_read(self, rel: str) -> BinaryIO:
        return self.inner.open_read(rel)

    def size(self, rel: str) -> int:
        return self.inner.size(rel)

    def exists(self, rel: str) -> bool:
        return self.inner.exists(rel)

    def listdir(self, rel: str) -> list[str]:
        return self.inner.listdir(rel)

    def entries(self, rel: str) -> Any:  # LocalFS's typed listing, where it has one
        return self.inner.entries(rel)

    def list(self, prefix: str = "") -> Any:
        return self.inner.list(prefix)
