"""A fault in the sending path of a cooperative restore's exchange (fito.dcp.peer_reads): the owner read and
verified its blocks, then one byte changes on the way to a receiver, which must refuse it (and so every rank
refuses the restore, and nothing is applied anywhere). Test use only; this process's sends only."""
from __future__ import annotations

import os
import signal
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


@contextmanager
def die_in_transit() -> Iterator[None]:
    """While inside, this process is SIGKILLed at its first send of the exchange: after it read and checked its
    own blocks, while its peers wait for its messages (they must learn it is gone, not hang)."""
    def die(tag: int, receiver: int, data: torch.Tensor) -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGKILL)
        return data  # pragma: no cover - never reached
    peer_reads.SEND_FAULTS.append(die)
    try:
        yield
    finally:
        peer_reads.SEND_FAULTS.remove(die)
