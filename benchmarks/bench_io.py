"""I/O helpers the benchmark scripts share: the raw durable write (the floor saves are compared with), durable
fsync of a path and dropping the page cache."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

CHUNK = 32 << 20  # bytes per read or write call


def write_durably(path: Path, buffers: Iterable[memoryview], writeback: int = 0) -> None:
    """Write `buffers` to the new file `path`, then fsync it and its directory: what a durable save must do.
    `writeback`: also start the disk on every this many bytes as they are written, in writes of that size
    (fito's LocalFS file, fito.storage.writeback; 0: the plain way, everything goes to the disk at the fsync)."""
    from fito.storage.writeback import WritebackFile

    with WritebackFile(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), window=writeback) as f:
        for mv in buffers:
            while len(mv):
                mv = mv[f.write(mv[:writeback or CHUNK]):]
        os.fsync(f.fileno())
    fsync_path(path.parent, directory=True)


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_caches() -> bool:
    """Write back, then drop the page cache so a timed read hits the disk; False where that is not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False
