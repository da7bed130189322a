"""Internal sizes that users should not need to see, in one place. Each can be overridden by an environment
variable (inherited by spawned ranks) or, in one process, by the `override` context manager in tests.

Readers take no layout size from these (every size of the format is recorded in the manifest); they only
tune how reads are issued (FITO_READ_RUN_BYTES)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

_DEFAULTS = {
    # Block of an item's payload that carries its own hash: a resharding reader reads and verifies whole
    # blocks only, so smaller blocks waste less reading, larger ones shrink the manifest (16 bytes each).
    "FITO_BLOCK_BYTES": 8 << 20,
    # Plain tensors of an entry up to this size are packed into a few items (fito.ckpt.packs): one DCP item
    # per tensor costs planning, manifest and read work that dwarfs a small tensor's bytes. 0: no packing.
    "FITO_PACK_LEAF_BYTES": 64 << 10,
    # Cap of one pack: a restore reads a pack whole before copying its members out.
    "FITO_PACK_BYTES": 32 << 20,
    # One read call of a restore: the disk streams long reads faster (1 GB here: 8 MiB reads 0.70-0.85 s,
    # 64 MiB 0.58 s); each run is hashed while the next is read, so it also bounds the unverified lag.
    "FITO_READ_RUN_BYTES": 64 << 20,
    # A new local object asks the kernel to start writing each window of this many bytes as soon as it is
    # written (fito.storage.writeback), so the disk works during the copy instead of after it. 0: off.
    "FITO_WRITEBACK_BYTES": 8 << 20,
    # How long a rank whose collective failed waits for the other ranks to say, through the rendezvous
    # store, that they are alive (fito.commit.transport.lost_ranks); who stays silent is named as lost.
    # Milliseconds; only paid on a failure of 3 or more ranks (with 2, the peer is the one lost).
    "FITO_PEER_WAIT_MS": 5000,
    # A restore on several ranks reads each stored block that several ranks need once, and the owner sends
    # it to the others over the process group (fito.plan.coop). 2 (auto): on for object storage (every GET
    # is billed and the network is the limit), off for a local directory (ranks of one machine share its page
    # cache, so the exchange and the second hash only add time: 1.2-1.4x measured); 1: on (a POSIX root shared
    # by several machines); 0: every rank reads all it needs from storage.
    "FITO_COOPERATIVE_READ": 2,
    # One message of that exchange (rounded down to whole blocks, at least one): what a receiver stages in
    # host memory at most per message in flight (8 at once).
    "FITO_EXCHANGE_BYTES": 16 << 20,
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


def at_least(name: str, minimum: int, rule: str) -> int:
    """The knob `name`, refused with `rule` (what to use instead) below `minimum`."""
    value = get(name)
    if value < minimum:
        raise ValueError(f"{name}={value}: use {rule}")
    return value


def block_bytes() -> int:
    """Block size for new objects: a positive multiple of 64 (so every dtype's elements stay whole)."""
    value = at_least("FITO_BLOCK_BYTES", 64, "a positive multiple of 64 bytes")
    if value % 64:
        raise ValueError(f"FITO_BLOCK_BYTES={value}: use a positive multiple of 64 bytes")
    return value


def pack_leaf_bytes() -> int:
    """Largest plain tensor packed with others (0: packing off)."""
    return at_least("FITO_PACK_LEAF_BYTES", 0, "0 (no packing) or a positive number of bytes")


def pack_bytes() -> int:
    """Cap of one pack (a tensor bigger than the cap, but packable, gets a pack of its own)."""
    return at_least("FITO_PACK_BYTES", 1, "a positive number of bytes")


def read_run_bytes() -> int:
    """Bytes read by one call when a restore reads a long span (rounded down to whole blocks, at least one)."""
    return at_least("FITO_READ_RUN_BYTES", 1, "a positive number of bytes")


def peer_wait_s() -> float:
    return at_least("FITO_PEER_WAIT_MS", 0, "a non-negative number of milliseconds") / 1000


def writeback_bytes() -> int:
    """Window after which a new local object's written bytes are handed to the disk (0: only at fsync)."""
    return at_least("FITO_WRITEBACK_BYTES", 0, "0 (off) or a positive number of bytes")


def cooperative_read(directories: bool) -> bool:
    """Whether a restore on several ranks reads each shared block once; `directories`: the root is a local
    (POSIX) directory rather than object storage."""
    value = get("FITO_COOPERATIVE_READ")
    if value not in (0, 1, 2):
        raise ValueError(f"FITO_COOPERATIVE_READ={value}: use 2 (auto, the default: on for object storage, off for "
                         "a local directory), 1 (on) or 0 (every rank reads from storage)")
    return value == 1 or (value == 2 and not directories)


def exchange_bytes() -> int:
    return at_least("FITO_EXCHANGE_BYTES", 1, "a positive number of bytes")


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
