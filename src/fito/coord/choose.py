"""The one place that chooses a checkpoint root's default decision store.

- Object storage (S3Storage, anything with `decision_objects`): the storage-native store beside the objects
  (fito.coord.object_store); a SQLite file cannot live on an object store, and one beside it on some machine's
  disk would let a second machine commit beside the first.
- A local directory: the SQLite log `root/decisions.sqlite` (one machine; see docs for NFS/Lustre roots, where
  `ObjectDecisionStore.for_storage(LocalFS(root))` is the safe choice across machines, or etcd)."""
from __future__ import annotations

from typing import Any

from fito.coord.base import DecisionStore


def default_store(storage: Any, *, create: bool = True, readonly: bool = False) -> DecisionStore:
    if getattr(storage, "decision_objects", None) is not None:
        from fito.coord.object_store import ObjectDecisionStore

        return ObjectDecisionStore.for_storage(storage, readonly=readonly)
    from fito.coord.sqlite import SqliteDecisionStore

    return SqliteDecisionStore(storage.root / SqliteDecisionStore.FILENAME, create=create, readonly=readonly)
