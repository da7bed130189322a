"""Host memory: large buffers backed by transparent huge pages where the kernel offers them (madvise mode),
and Python's cyclic garbage collector paused while a save or restore makes many small objects.

A fresh 1 GB buffer costs 262,144 page faults with 4 KiB pages; with 2 MiB pages it costs 512. On this
machine that took first-touch of 1 GB from ~0.9-2.7 s down to ~0.2-0.3 s, which is most of the gap between
a restore (or a cold async stall) and a read into memory that is already mapped."""
from __future__ import annotations

import gc
import mmap
from contextlib import contextmanager
from typing import Iterator

import torch

HUGE_PAGE_THRESHOLD = 8 << 20


def host_buffer(nbytes: int) -> torch.Tensor:
    """An uninitialised uint8 tensor of `nbytes`; the tensor keeps its mapping alive."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_PAGE_THRESHOLD or advice is None:
        return torch.empty(nbytes, dtype=torch.uint8)
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(advice)
    except OSError:  # kernel without THP: ordinary pages still work
        pass
    return torch.frombuffer(region, dtype=torch.uint8)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off for the duration (and back on only if it was on). A state of 20,000 small
    tensors makes hundreds of thousands of small objects (tree nodes, tensors, JSON) in a save or restore,
    which triggers full collections; each walks every object of the process (0.15-0.3 s with torch loaded),
    for nothing: what a save or restore makes holds no cycles and is freed by reference counting."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
