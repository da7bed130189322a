"""Put-if-absent objects: the one primitive the storage-native decision store (fito.coord.object_store) is
built on, on S3 (a single PUT with `If-None-Match: *`, through obstore) and on a POSIX directory shared by
several machines (a complete temporary file published with link(2), which fails if the name exists: an
exclusive create that never shows a half-written object; plain O_EXCL would show the body while it is written).

`create(key, data)` returns True if this call created `key`, False if it existed. A retried create whose
first try landed also returns False: callers put a unique id in `data` and read it back to tell (idempotent
retry). Nothing here ever writes unconditionally."""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from fito.errors import FitoError
from fito.storage.s3_objects import ENTRY_LIMIT, S3Objects, too_big as _too_big  # noqa: F401 - S3Objects: here for callers


class ConditionalWriteUnsupportedError(FitoError):
    """The storage accepted a put-if-absent onto an existing object (it ignores `If-None-Match`, or a proxy
    drops it). fito never falls back to unconditional writes: use a store that honours the condition (AWS S3,
    MinIO, SeaweedFS >= 4, R2, GCS's S3 API) or an etcd decision store beside it."""


class ConditionalObjects(Protocol):
    where: str  # for messages: the URL or directory

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` = `data` if absent, in one atomic step; True if this call created it."""

    def get(self, key: str) -> bytes | None:
        """The bytes of `key`, or None if it does not exist."""

    def list(self, prefix: str, after: str = "") -> list[str]:
        """Every key under `prefix` (as full keys) sorting after `after`, sorted."""

    def delete(self, key: str) -> None:
        """Best-effort removal of `key` (only the probe's objects are ever deleted)."""


def probe(objects: ConditionalObjects, key_prefix: str) -> None:
    """A put-if-absent repeated must fail: refuse (ConditionalWriteUnsupportedError) a store where it does not."""
    key = f"{key_prefix}probe-{secrets.token_hex(8)}"
    if not objects.create(key, b"first"):
        raise ConditionalWriteUnsupportedError(
            f"{objects.where}/{key}: a put-if-absent of a new, random object name was refused as existing; "
            "the store's conditional writes do not behave as S3's; refusing to record decisions here")
    try:
        again = objects.create(key, b"second")
        found = objects.get(key)
    finally:
        objects.delete(key)
    if again or found != b"first":
        raise ConditionalWriteUnsupportedError(
            f"{objects.where}/{key}: a put-if-absent onto an existing object succeeded (expected it to be refused "
            f"with 412 Precondition Failed; the object now holds {found!r}): this store ignores `If-None-Match: *`, "
            "so it cannot hold fito's decisions; fito never falls back to unconditional writes. Use an S3 service "
            "that supports conditional writes, or pass store=EtcdDecisionStore(...)")


class LocalObjects:
    """Put-if-absent files in `directory` (a POSIX file system, local or shared: NFS, Lustre)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).absolute()
        self.where = str(self.dir)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"{key!r}: not a key inside {self.dir}")
        return self.dir / key

    def create(self, key: str, data: bytes) -> bool:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, final)  # atomic: fails with EEXIST if the name exists, never replaces it
            created = True
        except FileExistsError:
            created = False
        except OSError as exc:
            if exc.errno != errno.EEXIST:  # NFS may lose the reply of a link that landed: the link count tells
                created = os.stat(tmp).st_nlink == 2
                if not created:
                    raise
            else:
                created = False
        finally:
            os.unlink(tmp)
        if created:
            dfd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)  # the name is durable when create returns
            finally:
                os.close(dfd)
        return created

    def get(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read(ENTRY_LIMIT + 1)
        except FileNotFoundError:
            return None
        return _too_big(str(self._path(key)), len(data)) if len(data) > ENTRY_LIMIT else data

    def list(self, prefix: str, after: str = "") -> list[str]:
        head, _, stem = prefix.rpartition("/")
        base = self.dir / head if head else self.dir
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return []
        keys = (f"{head}/{n}" if head else n for n in names if n.startswith(stem) and not n.startswith(".tmp-"))
        return sorted(k for k in keys if k > after)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass


