"""Storage with durability as explicit steps: create-exclusive, write, persist (a POSIX backend: fsync file, then directory)."""
import os

from fito.storage.base import Storage
from fito.storage.localfs import LocalFS, safe_relpath

__all__ = ["LocalFS", "Storage", "open_storage", "safe_relpath"]


def open_storage(root: "str | os.PathLike[str] | Storage", *, create: bool = True) -> Storage:
    """The Storage for `root`: a path opens LocalFS (created when `create`); a Storage object is used as is.
    The one place above the seam that picks a backend, so S3 can be added here."""
    if isinstance(root, (str, os.PathLike)):
        return LocalFS(root, create=create)
    return root
