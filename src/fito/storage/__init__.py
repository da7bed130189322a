"""Storage with durability as explicit steps: create-exclusive, write, persist (a POSIX backend: fsync file, then directory)."""
import os
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from fito.storage.base import DirEntry, ObjectInfo, Storage
from fito.storage.localfs import LocalFS, safe_relpath

__all__ = ["DirEntry", "LocalFS", "ObjectInfo", "Storage", "open_storage", "safe_relpath", "url_of"]


def _s3(url: str, create: bool, options: "Mapping[str, Any] | None") -> Storage:
    try:
        import obstore  # noqa: F401 - imported only for s3:// roots
    except ImportError as exc:
        raise ImportError(f"{url}: S3 roots need obstore: pip install 'fito-ckpt[s3]'") from exc
    from fito.storage.s3 import S3Storage

    return S3Storage(url, storage_options=options)  # type: ignore[return-value]


def _file(url: str, create: bool, options: "Mapping[str, Any] | None") -> Storage:
    return LocalFS(url, create=create)  # file:///abs/path: the same directory as /abs/path


# URL scheme -> opener(url, create, storage_options). A root without a scheme is a local path.
SCHEMES: "dict[str, Callable[[str, bool, Mapping[str, Any] | None], Storage]]" = {"s3": _s3, "file": _file}


def open_storage(root: "str | os.PathLike[str] | Storage", *, create: bool = True,
                 storage_options: "Mapping[str, Any] | None" = None) -> Storage:
    """The Storage for `root`: an `s3://bucket/prefix` URL opens S3Storage (configured by the AWS_* environment
    and `storage_options`), a path opens LocalFS (created when `create`); a Storage object is used as is.
    The one place above the seam that picks a backend (the scheme table SCHEMES)."""
    if isinstance(root, str):
        scheme, sep, _ = root.partition("://")
        if sep and scheme in SCHEMES:
            return SCHEMES[scheme](root, create, storage_options)
        if sep and "/" not in scheme:
            raise ValueError(f"{root!r}: no storage for the scheme {scheme!r}:// (known: "
                             f"{', '.join(sorted(SCHEMES))}, or a local path)")
    if isinstance(root, (str, os.PathLike)):
        return LocalFS(root, create=create)
    return root


def url_of(root: "str | os.PathLike[str]") -> str:
    """The `url` a storage opened on `root` has, without opening it: `s3://bucket/prefix` without a trailing
    slash, a local directory (a path or `file://` URL) as its plain absolute path."""
    if isinstance(root, str):
        scheme, sep, rest = root.partition("://")
        if sep and scheme == "file":
            root = rest
        elif sep:
            return f"{scheme}://{rest.strip('/')}"
    return str(Path(root).absolute())
