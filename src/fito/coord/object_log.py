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
import time
from pathlib import Path
from typing import Any, Protocol

from fito.errors import FitoError


ENTRY_LIMIT = 64 << 10  # a decision record is a few hundred bytes


def _too_big(where: str, size: int) -> bytes:
    from fito.errors import DecisionLogDamagedError

    raise DecisionLogDamagedError(path=where, unit=None, expected=f"a decision-log entry of at most {ENTRY_LIMIT} bytes",
                                  found=f"{size} bytes", hint="refused, never repaired; something other than fito "
                                  "wrote under the decision prefix")


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


def _failed(where: str, exc: BaseException, doing: str) -> OSError:
    from fito.storage.s3 import store_error

    return store_error(where, exc, doing)


class S3Objects:
    """Put-if-absent objects under `prefix` of an obstore store (single PUTs with `If-None-Match: *`)."""

    def __init__(self, store: Any, prefix: str, where: str) -> None:
        self.store, self.prefix, self.where = store, prefix.strip("/") + "/" if prefix.strip("/") else "", where

    def create(self, key: str, data: bytes) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        for attempt in range(8):
            try:
                obstore.put(self.store, self.prefix + key, data, mode="create", use_multipart=False)
                return True
            except (AlreadyExistsError, PreconditionError):
                return False
            except Exception as exc:  # noqa: BLE001 - 409 ConditionalRequestConflict: another create in flight
                if "409" not in str(exc) or attempt == 7:
                    raise _failed(f"{self.where}/{self.prefix}{key}", exc, "write the decision-log entry") from None
                time.sleep(0.01 * 2 ** attempt)
        raise AssertionError("unreachable")

    def get(self, key: str) -> bytes | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            result = obstore.get(self.store, self.prefix + key)
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:  # noqa: BLE001 - network, auth, 5xx after the retries
            raise _failed(f"{self.where}/{self.prefix}{key}", exc, "read the decision-log entry") from None
        if result.meta["size"] > ENTRY_LIMIT:  # refused before the body is read: bounded memory
            return _too_big(f"{self.where}/{self.prefix}{key}", result.meta["size"])
        return bytes(result.bytes())

    def list(self, prefix: str, after: str = "") -> list[str]:
        import obstore

        n = len(self.prefix)
        offset = self.prefix + after if after else None  # S3 start-after: only the keys past the known tail
        try:
            keys = [o["path"][n:] for batch in obstore.list(self.store, prefix=self.prefix + prefix, offset=offset,
                                                            chunk_size=1000) for o in batch]
        except Exception as exc:  # noqa: BLE001 - network, auth, 5xx after the retries
            raise _failed(f"{self.where}/{self.prefix}{prefix}", exc, "list the decision log") from None
        return sorted(k for k in keys if k > after)

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self.store, self.prefix + key)
        except Exception:  # noqa: BLE001 - best effort: a leftover probe object is harmless
            pass
