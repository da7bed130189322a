"""The storage interface the Checkpointer uses: the whole I/O vocabulary of a save, a restore and a GC.

Who calls what, in which order (every path is relative to the root and names an object of the layout in
`fito.protocol.messages`):

1. Save, every rank, for its own objects of attempt (e, a):
   `makedirs(attempt dir)` -> `create(object)` and write it (a new object, never an existing one) ->
   `persist(object)`; only then is the object vouched for (READY).
   If the rank fails before READY, it deletes its own partial object with `remove` (best effort).
2. Save, the coordinator (rank 0), after every rank's READY: `write_bytes(manifest)` -> `persist(manifest)`;
   then the decision store publishes (the commit point). On an abort decided before the
   commit was sent, it deletes the attempt with `remove_tree` (best effort; GC removes what is left).
3. Restore and verify, every rank, reading only: `read_bytes(manifest, limit)`, `size(object)`,
   `open_read(object)` (ranged reads by seek + readinto). Nothing here may write: a restore must work on
   a read-only root and on a full disk.
4. GC, the coordinator after a durable commit (or `fito gc`): `listdir` the epochs, `remove_tree` the
   attempts its plan names.

Errors: an operation that fails raises OSError (errno set: ENOSPC, EIO, EROFS, ...) or a FitoError for
refused paths; the Checkpointer reports which phase, object and rank failed.

`root` and `path()` are local-file-system notions (the default decision log lives at `root`, the GC grace
period reads an mtime); an object store will replace them with its own location and object info."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable


@runtime_checkable
class Storage(Protocol):
    root: Path

    # ---- save: writing and persisting (steps 1 and 2) ----
    def makedirs(self, rel: str) -> None:
        """Create the directory `rel` and its missing parents, durably."""

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
        """Whether `rel` exists inside the root."""

    # ---- deletion and listing (failed attempts, step 4) ----
    def remove(self, rel: str) -> None:
        """Delete the single object `rel` (a link is unlinked, never followed); gone already is fine."""

    def remove_tree(self, rel: str) -> None:
        """Delete the directory `rel` and everything in it."""

    def listdir(self, rel: str) -> list[str]:
        """Sorted names directly in directory `rel` ([] if it does not exist)."""

    def path(self, rel: str) -> Path:
        """Local path of `rel`, confined to the root (local storages only; see the module docstring)."""
