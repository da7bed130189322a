"""The manifest a committed decision names: read in bounded memory, checked against the decision's hash
before anything parses it, then parsed (fito-manifest/2) or handed over as bytes (any format)."""
from __future__ import annotations

from fito.coord.base import Decision
from fito.errors import CheckpointCorruptError, UnsafeCheckpointError
from fito.format import manifest as manifest_fmt
from fito.format.hashing import ALGORITHMS, digest
from fito.format.manifest import ShardedManifest
from fito.storage.base import Storage
from fito.storage.listing import kind_of, where


def load_sharded_manifest(storage: Storage, d: Decision) -> ShardedManifest:
    """Read the manifest a decision names, check its bytes against the decision's hash, and parse it."""
    return manifest_fmt.parse(manifest_bytes(storage, d), where=where(storage, d.manifest), epoch=d.epoch,
                             attempt=d.attempt)


def manifest_bytes(storage: Storage, d: Decision) -> bytes:
    """The bytes of the manifest a decision names, checked against the decision's hash (any format)."""
    algorithm = d.manifest_hash.split(":", 1)[0]
    if algorithm not in ALGORITHMS:
        raise UnsafeCheckpointError(path=d.manifest, unit=None, expected="a known manifest hash", found=repr(d.manifest_hash)[:80])
    try:
        data = storage.read_bytes(d.manifest, manifest_fmt.MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise CheckpointCorruptError(path=where(storage, d.manifest), unit=None, expected=f"the manifest of step {d.epoch}",
                                     found=f"no such {kind_of(storage)}") from None
    found = digest(algorithm, data)
    if found != d.manifest_hash:
        raise CheckpointCorruptError(path=where(storage, d.manifest), unit=None, expected=f"manifest hash {d.manifest_hash}",
                                     found=found)
    return data
