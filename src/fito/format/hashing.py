"""Content hashes for units, blocks and manifests (bytes only: no torch, no I/O).

xxh3-128 is the default: units are protected against accidental corruption (bit rot, torn and truncated
writes, swapped files), where it runs ~4x faster than blake3 on this hardware (see BENCHMARKS.md);
blake3 is available when checkpoints may be tampered with by someone who can also forge a fast hash."""
from __future__ import annotations

from typing import Callable, Protocol

import blake3
import xxhash

from fito.errors import UnsafeCheckpointError


class StreamingHash(Protocol):
    def update(self, data: bytes | memoryview) -> object: ...
    def hexdigest(self) -> str: ...


ALGORITHMS: dict[str, Callable[[], StreamingHash]] = {
    "xxh3-128": xxhash.xxh3_128,
    "blake3": blake3.blake3,
}
DEFAULT_ALGORITHM = "xxh3-128"


def new_hash(algorithm: str) -> StreamingHash:
    try:
        return ALGORITHMS[algorithm]()
    except KeyError:
        raise UnsafeCheckpointError(
            path="manifest", unit=None, expected=f"one of the hash algorithms {sorted(ALGORITHMS)}",
            found=repr(algorithm),
        ) from None


def digest(algorithm: str, *chunks: bytes | memoryview) -> str:
    """'algo:hex' of the concatenation of `chunks`."""
    h = new_hash(algorithm)
    for chunk in chunks:
        h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"
