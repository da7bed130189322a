"""Conditional objects on an obstore store (single PUTs with `If-None-Match: *`): what the storage-native
decision log (fito.coord.object_store) is written through on S3. Here, in storage/, because it is the S3
backend's own handle (S3Storage.decision_objects); the log's format and rules live in fito.coord."""
from __future__ import annotations

import time
from typing import Any

ENTRY_LIMIT = 64 << 10  # a decision record is a few hundred bytes


def too_big(where: str, size: int) -> bytes:
    from fito.errors import DecisionLogDamagedError

    raise DecisionLogDamagedError(path=where, unit=None, expected=f"a decision-log entry of at most {ENTRY_LIMIT} bytes",
                                  found=f"{size} bytes", hint="refused, never repaired; something other than fito "
                                  "wrote under the decision prefix")


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
            return too_big(f"{self.where}/{self.prefix}{key}", result.meta["size"])
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
