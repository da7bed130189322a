"""Storage with durability as explicit steps: create-exclusive, write, fsync file, fsync directory."""
from fito.storage.base import Storage
from fito.storage.localfs import LocalFS, safe_relpath

__all__ = ["LocalFS", "Storage", "safe_relpath"]
