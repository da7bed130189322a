"""Checkpoints on S3 and S3-compatible object stores, through obstore (`pip install 'fito-ckpt[s3]'`).

Configured by the standard AWS environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ALLOW_HTTP) and `storage_options=`, a mapping of
obstore S3 options (endpoint, access_key_id, region, allow_http, ...) that wins over the environment.

- Data objects are new, uniquely named objects (step, attempt, rank in the name): written by a plain
  multipart upload, parts in parallel. The object becomes visible only when the upload completes; a writer
  that fails (or is killed) midway never completes it, so no partial object is ever visible. Once complete it
  is durable (S3 acknowledges durably), so `persist` does nothing.
- Ranged GETs: `open_read` returns a seekable handle whose reads are ranged GETs, a large read split into
  parallel ranges, so a resharding reader fetches only its bytes.
- Bounded retries with exponential backoff on throttling (503 SlowDown, 429) and 5xx, in obstore's client
  (`max_retries`, `retry_timeout`).
- `list(prefix)` gives every object under a prefix with its size and modification time.
The decision log for an S3 root lives beside the objects (`decision_objects`, fito.coord.object_store)."""
from __future__ import annotations

import io
import os
import queue
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from fito.errors import CheckpointCorruptError, CheckpointUnreadableError, UnsafeCheckpointError
from fito.storage.base import DirEntry, ObjectInfo
from fito.storage.listing import children_of
from fito.storage.localfs import safe_relpath

PART_BYTES = 16 << 20
CONCURRENCY = 8
READ_SPLIT = 16 << 20  # a read larger than this is fetched as parallel ranges
MAX_RETRIES = 5
RETRY_TIMEOUT_S = 60.0
DECISIONS = "decisions.d"  # the decision log's objects, under the root


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; the prefix has no leading or trailing slash."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r}: expected an s3://bucket/prefix URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{url!r}: no bucket in the URL (expected s3://bucket/prefix)")
    prefix = prefix.strip("/")
    if prefix:
        safe_relpath(prefix)  # no "..", "." or empty parts
    return bucket, prefix


class S3Storage:
    """The Storage protocol (fito.storage.base) on an S3 bucket and prefix. Identity: `url` (s3://bucket/prefix).

    `root` is the same string (there is no local path for an object store: code that would make one, a SQLite
    log at root/..., fails loudly instead of writing beside the current directory)."""

    kind = "object"  # the word messages use for one stored unit

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None, part_bytes: int = PART_BYTES,
                 concurrency: int = CONCURRENCY, max_retries: int = MAX_RETRIES,
                 retry_timeout_s: float = RETRY_TIMEOUT_S) -> None:
        from obstore.store import S3Store

        self.bucket, self.prefix = parse_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.root = self.url
        self.part_bytes, self.concurrency = part_bytes, concurrency
        options = {k: str(v) for k, v in (storage_options or {}).items()}
        # obstore reads AWS_* itself, except AWS_ENDPOINT_URL and AWS_ALLOW_HTTP under some names: pass them on
        for key, env in (("endpoint", "AWS_ENDPOINT_URL"), ("allow_http", "AWS_ALLOW_HTTP"), ("region", "AWS_REGION")):
            if key not in options and os.environ.get(env):
                options[key] = os.environ[env]
        self._options = options
        self._retry = {"max_retries": max_retries, "backoff": {"init_backoff": timedelta(milliseconds=100),
                       "max_backoff": timedelta(seconds=5), "base": 2.0},
                       "retry_timeout": timedelta(seconds=retry_timeout_s)}
        self.store = S3Store(self.bucket, prefix=self.prefix or None, config=options, retry_config=self._retry)

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    def decision_objects(self) -> Any:
        """Where this root's storage-native decision log lives (fito.coord.object_store)."""
        from fito.storage.s3_objects import S3Objects

        return S3Objects(self.store, DECISIONS, f"{self.url}/{DECISIONS}")  # messages name the log's objects

    # ---- names ----
    def _key(self, rel: str) -> str:
        return str(safe_relpath(rel))

    def where(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    # ---- save ----
    def makedirs(self, rel: str) -> None:
        """Nothing to do: an object store has no directories."""
        safe_relpath(rel)

    def create(self, rel: str) -> BinaryIO:
        """A handle whose bytes go up as a multipart upload (parts in parallel), completed on a clean close and
        abandoned (never visible) when the block writing it raises. Refuses a name that exists already."""
        key = self._key(rel)
        try:
            there = self._there(key)
        except Exception as exc:  # noqa: BLE001 - network, auth, 5xx after the retries
            raise _write_failed(self.where(rel), exc) from None
        if there:
            raise FileExistsError(f"{self.where(rel)}: the object exists already; fito never overwrites one")
        return _Upload(self.store, key, self.where(rel), self.part_bytes, self.concurrency)  # type: ignore[return-value]

    def write_bytes(self, rel: str, data: bytes) -> None:
        import obstore

        try:
            obstore.put(self.store, self._key(rel), data, use_multipart=False)
        except Exception as exc:  # noqa: BLE001 - network, auth, 5xx after the retries
            raise _write_failed(self.where(rel), exc) from None

    def persist(self, rel: str) -> None:
        """Nothing to do: a completed upload is durable when S3 acknowledges it."""

    # ---- restore and verify ----
    def _head(self, rel: str, doing: str = "read the object") -> dict[str, Any]:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return obstore.head(self.store, self._key(rel))
        except (NotFoundError, FileNotFoundError):
            raise CheckpointCorruptError(path=self.where(rel), unit=None, expected="an object written by fito",
                                         found="no such object") from None
        except Exception as exc:  # noqa: BLE001 - auth, network: unreadable, not corrupt
            raise _unreadable(self.where(rel), exc, doing) from None

    def size(self, rel: str) -> int:
        return int(self._head(rel)["size"])

    def _there(self, key: str) -> bool:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            obstore.head(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return False
        return True

    def exists(self, rel: str) -> bool:
        try:
            return self._there(self._key(rel))
        except UnsafeCheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - network, auth, 5xx after the retries
            raise _unreadable(self.where(rel), exc, "say whether the object exists") from None

    def read_bytes(self, rel: str, limit: int) -> bytes:
        size = self.size(rel)
        if size > limit:  # refused before anything is read or allocated
            raise UnsafeCheckpointError(path=self.where(rel), unit=None, expected=f"at most {limit} bytes",
                                        found=f"{size} bytes")
        with self.open_read(rel) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise UnsafeCheckpointError(path=self.where(rel), unit=None, expected=f"at most {limit} bytes",
                                        found="a larger object")
        return data

    def open_read(self, rel: str) -> BinaryIO:
        return _RangedReader(self.store, self._key(rel), self.where(rel), self.size(rel), self.concurrency)  # type: ignore[return-value]

    # ---- listing and deletion ----
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under `prefix` (relative to the root), with size and modification time, sorted."""
        import obstore

        base = self._key(prefix.rstrip("/")) + "/" if prefix.strip("/") else ""
        try:
            out = [ObjectInfo(o["path"], int(o["size"]), _seconds(o["last_modified"]))
                   for batch in obstore.list(self.store, prefix=base or None, chunk_size=1000) for o in batch]
        except Exception as exc:  # noqa: BLE001 - network, auth, 5xx after the retries
            raise store_error(self.where(base.rstrip("/")) if base else self.url, exc, "list the objects") from None
        return sorted(out)

    def listdir(self, rel: str) -> list[str]:
        """The names directly under `rel`, from the objects there (not the store's "directories": SeaweedFS
        keeps reporting a prefix whose objects are all deleted)."""
        return [e.name for e in self.entries(rel)]

    def entries(self, rel: str) -> list[DirEntry]:
        """The names directly under `rel`: "dir" for a prefix, with the newest modification time below it (an
        attempt being written keeps a recent time), "file" for an object."""
        return children_of(self.list(rel), rel)

    def remove(self, rel: str) -> None:
        import obstore

        try:
            obstore.delete(self.store, self._key(rel))  # S3's DELETE of a missing key succeeds
        except Exception as exc:  # noqa: BLE001 - network, auth (no delete permission), 5xx after the retries
            raise store_error(self.where(rel), exc, "delete the object") from None

    def delete(self, rel: str) -> None:
        """Delete the object `rel` and every object under the prefix `rel/` (an attempt); gone already is fine."""
        self.remove_tree(rel)
        self.remove(rel)

    def remove_tree(self, rel: str) -> None:
        import obstore

        keys = [o.key for o in self.list(rel)]
        try:
            for i in range(0, len(keys), 1000):
                obstore.delete(self.store, keys[i:i + 1000])
        except Exception as exc:  # noqa: BLE001 - network, auth (no delete permission), 5xx after the retries
            raise store_error(self.where(rel), exc, f"delete the {len(keys)} objects under the prefix") from None

    def remove_dir(self, rel: str) -> bool:
        """An object store has no empty directories: True if nothing is under `rel` (gone), False otherwise."""
        return not self.list(rel)

    def path(self, rel: str) -> PurePosixPath:
        raise NotImplementedError(f"{self.where(rel)}: an object on S3 has no local path")


def _seconds(t: datetime) -> float:
    return t.timestamp()


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


def _unreadable(where: str, exc: BaseException, doing: str = "read the object") -> CheckpointUnreadableError:
    return CheckpointUnreadableError(path=where, unit=None, expected=f"the S3 endpoint to {doing}",
                                     found=_first_line(exc) + " (after bounded retries)",
                                     hint="check the endpoint, the credentials (AWS_* or storage_options) and that "
                                          "the server is up; nothing was changed by this read")


def store_error(where: str, exc: BaseException, doing: str) -> OSError:
    """An S3 call that failed after obstore's bounded retries (network, auth, 5xx), in words an operator acts on."""
    return OSError(f"{where}: could not {doing} after bounded retries: {_first_line(exc)}; check the endpoint, the "
                   "credentials (AWS_* or storage_options) and that the server is up")


def _write_failed(where: str, exc: BaseException) -> OSError:
    return OSError(f"{where}: upload failed after bounded retries: {_first_line(exc)}; the object is not visible "
                   "(an incomplete upload never is); check the endpoint, the credentials and that the server is up")


class _Abort(Exception):
    """Fed to the upload in place of the next part: obstore then never completes it."""


class _Upload(io.RawIOBase):
    """Bytes written here stream to obstore's multipart put (in a thread) through a bounded queue of parts."""

    def __init__(self, store: Any, key: str, where: str, part_bytes: int, concurrency: int) -> None:
        super().__init__()
        self._where, self._part = where, part_bytes
        self._buf = bytearray()
        self._q: queue.Queue = queue.Queue(maxsize=2)  # bounded memory: the parts in flight are obstore's
        self._error: BaseException | None = None
        self.uploaded = 0
        import obstore

        def run() -> None:
            try:
                obstore.put(store, key, self._parts(), chunk_size=part_bytes, max_concurrency=concurrency,
                            use_multipart=True)
            except BaseException as exc:  # noqa: BLE001 - reported by write/close
                self._error = exc
        self._thread = threading.Thread(target=run, name="fito-s3-upload", daemon=True)
        self._thread.start()

    def _parts(self) -> Any:
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, _Abort):
                raise item
            yield item

    def _send(self, item: Any) -> None:
        while self._thread.is_alive():
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        self._raise()

    def _raise(self) -> None:
        if self._error is not None and not isinstance(self._error, _Abort):
            raise _write_failed(self._where, self._error) from self._error

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        """Copies `b` once, into part-sized buffers handed to the upload whole (a large write never doubles)."""
        self._raise()
        view = memoryview(b).cast("B")
        at = 0
        while at < len(view):
            take = min(self._part - len(self._buf), len(view) - at)
            self._buf += view[at:at + take]
            at += take
            if len(self._buf) == self._part:
                self._send(self._buf)
                self.uploaded += self._part
                self._buf = bytearray()
        return len(view)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buf:
                self._send(self._buf)
                self.uploaded += len(self._buf)
                self._buf = bytearray()
            self._send(None)
            self._thread.join()
            self._raise()
        finally:
            super().close()

    def abort(self) -> None:
        if not self.closed:
            try:
                if self._thread.is_alive():
                    self._q.put(_Abort())
                self._thread.join()
            finally:
                super().close()

    def __del__(self) -> None:  # dropped without close (an error on the way): never complete the upload
        if hasattr(self, "_thread"):
            self.abort()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class _RangedReader(io.RawIOBase):
    """A seekable, read-only handle on one object; each read is one ranged GET, a large one parallel GETs."""

    def __init__(self, store: Any, key: str, where: str, size: int, concurrency: int) -> None:
        super().__init__()
        self._store, self._key, self._where, self._size, self._conc = store, key, where, size, concurrency
        self._pos = 0
        self.fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all the rest for -1) in one ranged fetch, not in 8 KiB GETs as RawIOBase would."""
        want = self._size - self._pos if size is None or size < 0 else min(size, max(0, self._size - self._pos))
        buf = bytearray(want)
        n = self.readinto(buf) if want else 0
        return bytes(buf[:n])

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b: Any) -> int:
        import obstore

        view = memoryview(b).cast("B")
        end = min(self._size, self._pos + len(view))
        if end <= self._pos:
            return 0
        starts = list(range(self._pos, end, READ_SPLIT))
        ends = [min(s + READ_SPLIT, end) for s in starts]
        try:
            if len(starts) == 1:
                parts = [obstore.get_range(self._store, self._key, start=starts[0], end=ends[0])]
            else:
                parts = obstore.get_ranges(self._store, self._key, starts=starts, ends=ends, coalesce=0)
        except Exception as exc:  # noqa: BLE001 - network or auth: the object is unreadable, not corrupt
            raise _unreadable(self._where, exc) from None
        got = 0
        for part in parts:
            m = memoryview(part)
            view[got:got + len(m)] = m
            got += len(m)
        self._pos += got
        self.fetched += got
        return got
