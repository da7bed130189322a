"""Internal sizes that users should not need to see, in one place. Each can be overridden by an environment
variable (inherited by spawned ranks) or, in one process, by the `override` context manager in tests.

Readers never use these: every size that matters for reading is recorded in the manifest."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

_DEFAULTS = {
    # Block of an item's payload that carries its own hash: a resharding reader reads and verifies whole
    # blocks only, so smaller blocks waste less reading, larger ones shrink the manifest (16 bytes each).
    "FITO_BLOCK_BYTES": 8 << 20,
}
_overrides: dict[str, int] = {}


def get(name: str) -> int:
    if name in _overrides:
        return _overrides[name]
    raw = os.environ.get(name)
    if raw is None:
        return _DEFAULTS[name]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an integer number of bytes") from None
    return value


def block_bytes() -> int:
    """Block size for new objects: a positive multiple of 64 (so every dtype's elements stay whole)."""
    value = get("FITO_BLOCK_BYTES")
    if value < 64 or value % 64:
        raise ValueError(f"FITO_BLOCK_BYTES={value}: use a positive multiple of 64 bytes")
    return value


@contextmanager
def override(**values: int) -> Iterator[None]:
    """`with override(FITO_BLOCK_BYTES=4096): ...` (this process only)."""
    saved = dict(_overrides)
    _overrides.update(values)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)
