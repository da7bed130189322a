"""A fault in the sending path of a cooperative restore's exchange (fito.dcp.peer_reads): the owner read and
verified its blocks, then one byte changes on the way to a receiver, which must refuse it (and so every rank
refuses the restore, and nothing is applied anywhere). Test use only; this process's sends only."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from fito.dcp import peer_reads


@contextmanager
def corrupt_in_transit(*, messages: int = 1) -> Iterator[list[int]]:
    """While inside, the first `messages` messages this process sends arrive with one byte flipped (the
    owner's own bytes stay whole). Yields the list of the tags it flipped."""
    flipped: list[int] = []

    def flip(tag: int, receiver: int, data: torch.Tensor) -> torch.Tensor:
        if len(flipped) >= messages or not data.numel():
            return data
        flipped.append(tag)
        out = data.clone()
        out[out.numel() // 2] ^= 0x01
        return out
    peer_reads.SEND_FAULTS.append(flip)
    try:
        yield flipped
    finally:
        peer_reads.SEND_FAULTS.remove(flip)
