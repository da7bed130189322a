"""The one place that chooses a checkpoint root's default decision store.

- Object storage (S3Storage, anything with `decision_objects`): the storage-native store beside the objects
  (fito.coord.object_store); a SQLite file cannot live on an object store, and one beside it on some machine's
  disk would let a second machine commit beside the first.
- A local directory: the SQLite log `root/decisions.sqlite` (one machine; see docs for NFS/Lustre roots, where
  `ObjectDecisionStore.for_storage(LocalFS(root))` is the safe choice across machines, or etcd)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fito.coord.base import DecisionStore
from fito.coord.sqlite import SqliteDecisionStore


def default_store(storage: Any, *, create: bool = True, readonly: bool = False) -> DecisionStore:
    if getattr(storage, "decision_objects", None) is not None:
        from fito.coord.object_store import ObjectDecisionStore

        return ObjectDecisionStore.for_storage(storage, readonly=readonly)
    root = getattr(storage, "root", None)
    if not isinstance(root, Path):  # neither objects nor a local directory: no safe place for a log
        raise ValueError(f"{getattr(storage, 'url', storage)}: no default decision store for this storage (it has "
                         "no local directory and no decision_objects); pass store= (fito.coord: etcd, or "
                         "ObjectDecisionStore over conditional objects)")
    return SqliteDecisionStore(sqlite_log_path(root), create=create, readonly=readonly)


def sqlite_log_path(root: str | Path) -> Path:
    """Where a local root's SQLite log lives (`fito recover-log` rebuilds it there)."""
    return Path(root) / SqliteDecisionStore.FILENAME


def reader_store(storage: Any) -> DecisionStore | None:
    """The store a reader (restore, inspect, verify, export) opens, read-only, where it was given none: None
    for a local directory (fito.commit.decision.read_committed opens its SQLite log itself, with the errors
    for a missing root or a lost log), else the storage's default store, read-only (the caller closes it)."""
    if getattr(storage, "decision_objects", None) is None and isinstance(getattr(storage, "root", None), Path):
        return None
    return default_store(storage, create=False, readonly=True)
