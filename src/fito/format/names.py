"""Name checks for root-relative paths read from untrusted records (a manifest, a decision): the one rule every
storage and every parser applies before a name reaches the file system or an object store."""
from __future__ import annotations

from pathlib import PurePosixPath

from fito.errors import UnsafeCheckpointError


def safe_relpath(rel: str) -> PurePosixPath:
    """Validate a root-relative POSIX path from an untrusted record (manifest, decision)."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or "\\" in rel or "\x00" in rel or any(part in ("..", ".", "") for part in rel.split("/")):
        raise UnsafeCheckpointError(
            path=rel or "<empty>", unit=None, expected="a relative path inside the checkpoint root",
            found=f"{rel!r}", hint="the manifest is hostile or damaged; nothing was read or restored",
        )
    return p
