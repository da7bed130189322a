"""The storage interface the Checkpointer uses: the whole I/O vocabulary of a save, a restore and a GC.

Who calls what, in which order (every name is relative to the storage's `url` and names an object of the
layout in `fito.protocol.messages`; a "directory" is a name prefix, which an object store does not create):

1. Save, every rank, for its own objects of attempt (e, a):
   `makedirs(attempt prefix)` -> `create(object)` and write it (a new object, never an existing one) ->
   `persist(object)`; only then is the object vouched for (READY).
   If the rank fails before READY, it deletes its own partial object with `delete` (best effort).
2. Save, the coordinator (rank 0), after every rank's READY: `write_bytes(manifest)` -> `persist(manifest)`;
   then the decision store publishes (the commit point). On an abort decided before the commit was sent, it
   deletes the attempt's objects by name with `delete` (best effort; GC removes what is left).
3. Restore and verify, every rank, reading only: `read_bytes(manifest, limit)`, `size(object)`,
   `open_read(object)` (ranged reads by seek + readinto). Nothing here may write: a restore must work on
   a read-only root and on a full disk.
4. GC, the coordinator after a durable commit (or `fito gc`): `list("epochs")` (every object under the
   prefix, with size and time), then `delete` of the attempt prefixes its plan names. Attempt ages come from
   the time in the attempt's name (fito.protocol.layout), not from the store's clock.

Identity: `url`, a string (`s3://bucket/prefix`; for a local directory its plain absolute path, as every
message and `fito inspect` have always shown it). Nothing above this seam needs a local path: a POSIX
backend's own extras (LocalFS: `root`, `path()`, `entries()`, `remove_dir()`, links) stay below it.
A storage may name its unit in messages with a `kind` attribute ("file" on LocalFS, "object" on S3; see
fito.storage.listing.kind_of): errors then speak of objects on an object store.

Errors: an operation that fails raises OSError (errno set: ENOSPC, EIO, EROFS, ...) or a FitoError for
refused names; the Checkpointer reports which phase, object and rank failed."""
from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO, NamedTuple, Protocol, runtime_checkable


class ObjectInfo(NamedTuple):
    """One stored object as `Storage.list` reports it."""

    key: str  # relative to the storage's url ("epochs/000000000003/f2-.../rank-0.fito")
    size: int
    mtime: float  # seconds since the epoch, as the store reports the last modification


class DirEntry(NamedTuple):
    """One name directly under a prefix (fito.storage.listing.children)."""

    name: str
    kind: str  # dir | link | file | other (a POSIX backend reports links; an object store: dir or file)
    mtime: float


@runtime_checkable
class Storage(Protocol):
    url: str

    # ---- save: writing and persisting (steps 1 and 2) ----
    def makedirs(self, rel: str) -> None:
        """Create the directory `rel` and its missing parents, durably (nothing to do on an object store)."""

    def create(self, rel: str) -> BinaryIO:
        """A writable handle on a NEW object `rel`; fails if it exists (nothing committed is overwritten)."""

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Create `rel` with exactly `data` (small objects: the manifest)."""

    def persist(self, rel: str) -> None:
        """Make the object `rel` durable: its bytes and the name that finds it survive a crash once this
        returns (a POSIX backend fsyncs the file and its directory; that detail stays below this seam)."""

    # ---- restore and verify: reading (step 3) ----
    def read_bytes(self, rel: str, limit: int) -> bytes:
        """The whole object `rel`, refusing one larger than `limit` bytes."""

    def open_read(self, rel: str) -> BinaryIO:
        """A readable handle on the regular object `rel` (seek + readinto for ranged reads)."""

    def size(self, rel: str) -> int:
        """Size of `rel` in bytes."""

    def exists(self, rel: str) -> bool:
        """Whether `rel` exists under the url."""

    # ---- listing and deletion (failed attempts, step 4) ----
    def list(self, prefix: str = "") -> Iterable[ObjectInfo]:
        """Every object under the prefix `prefix` (relative to the url; "" for all), with its size and time."""

    def delete(self, rel: str) -> None:
        """Delete the object `rel`, or every object under the prefix `rel/` (an attempt); gone already is fine.
        A link is unlinked, never followed."""
