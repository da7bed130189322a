"""Large host buffers backed by transparent huge pages where the kernel offers them (madvise mode).

A fresh 1 GB buffer costs 262,144 page faults with 4 KiB pages; with 2 MiB pages it costs 512. On this
machine that took first-touch of 1 GB from ~0.9-2.7 s down to ~0.2-0.3 s, which is most of the gap between
a restore (or a cold async stall) and a read into memory that is already mapped."""
from __future__ import annotations

import mmap

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
