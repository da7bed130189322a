"""Names under a prefix, derived from `Storage.list` (what every storage has), and the word messages use for
one stored unit. A POSIX backend that has real directories and links (LocalFS: `directories = True`) answers
from its own typed listing instead, so an empty directory or a link is seen as what it is."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fito.storage.base import DirEntry, ObjectInfo


def kind_of(storage: Any) -> str:
    """"file" on a local file system, "object" on an object store (or any storage that does not say)."""
    kind = getattr(storage, "kind", None)
    return kind if isinstance(kind, str) and kind else "object"


def has_directories(storage: Any) -> bool:
    return bool(getattr(storage, "directories", False))


def children_of(infos: Iterable[ObjectInfo], base: str) -> list[DirEntry]:
    """The names directly under `base` among `infos`: "dir" for a prefix (with the newest time below it, so an
    attempt being written looks recent), "file" for an object."""
    base = base.strip("/")
    cut = len(base) + 1 if base else 0
    newest: dict[str, tuple[str, float]] = {}
    for o in infos:
        if base and not o.key.startswith(base + "/"):
            continue
        name, sep, _ = o.key[cut:].partition("/")
        kind = "dir" if sep else "file"
        was, t = newest.get(name, (kind, 0.0))
        newest[name] = ("dir" if "dir" in (was, kind) else kind, max(t, o.mtime))
    return sorted(DirEntry(n, k, t) for n, (k, t) in newest.items())


def children(storage: Any, rel: str) -> list[DirEntry]:
    """The names directly under `rel` ([] if nothing is there)."""
    if has_directories(storage):
        return list(storage.entries(rel))
    return children_of(storage.list(rel), rel)


def names(storage: Any, rel: str) -> list[str]:
    """Sorted names directly under `rel` (listdir for any storage)."""
    return [e.name for e in children(storage, rel)]


def two_levels(storage: Any, top: str) -> list[tuple[str, str, float]]:
    """(path, kind, mtime) of every name directly under `top` and, for each "dir" among them, every name
    directly under it: the GC plan's listing (`epochs` and its step directories), from ONE listing of the
    prefix on an object store."""
    if has_directories(storage):
        out: list[tuple[str, str, float]] = []
        for e in storage.entries(top):
            rel = f"{top}/{e.name}"
            out.append((rel, e.kind, e.mtime))
            if e.kind == "dir":
                out.extend((f"{rel}/{a.name}", a.kind, a.mtime) for a in storage.entries(rel))
        return out
    infos = list(storage.list(top))
    groups: dict[str, list[ObjectInfo]] = {}
    for o in infos:
        first = o.key[len(top) + 1:].partition("/")[0]
        groups.setdefault(first, []).append(o)
    out = []
    for e in children_of(infos, top):
        rel = f"{top}/{e.name}"
        out.append((rel, e.kind, e.mtime))
        if e.kind == "dir":
            out.extend((f"{rel}/{a.name}", a.kind, a.mtime) for a in children_of(groups[e.name], rel))
    return out


def where(storage: Any, rel: str) -> str:
    """How a message names `rel`: the root-relative path in a local directory (as messages always have), the
    full URL on an object store (s3://bucket/prefix/epochs/...), which is what an operator looks up there."""
    return rel if has_directories(storage) else f"{storage.url}/{rel}"
