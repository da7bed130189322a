"""How ranks talk during a save or restore: gather READY to the coordinator (rank 0), broadcast its word.
Messages are JSON bytes carried in uint8 tensors, never pickled objects.

Under torch.distributed (gloo), a rank that dies makes the collective fail on the survivors (the peer's
socket closes) or time out with the process group's timeout: either way an exception, never a hang."""
from __future__ import annotations

from typing import Protocol

import torch
import torch.distributed as dist


class Transport(Protocol):
    rank: int
    world_size: int

    def gather(self, payload: bytes) -> list[bytes] | None:
        """Every rank's payload on rank 0 (in rank order); None elsewhere."""

    def broadcast(self, payload: bytes | None) -> bytes:
        """Rank 0's payload on every rank."""

    def all_ok(self, ok: bool) -> bool:
        """True on every rank iff it is True on every rank."""


class LocalTransport:
    rank = 0
    world_size = 1

    def gather(self, payload: bytes) -> list[bytes] | None:
        return [payload]

    def broadcast(self, payload: bytes | None) -> bytes:
        assert payload is not None
        return payload

    def all_ok(self, ok: bool) -> bool:
        return ok


class ProcessGroupTransport:
    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def gather(self, payload: bytes) -> list[bytes] | None:
        length = torch.tensor([len(payload)], dtype=torch.int64)
        lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(lengths, length, group=self.group)
        longest = max(int(n) for n in lengths)
        buf = torch.zeros(longest, dtype=torch.uint8)
        buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else buf[:0]
        bufs = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        dist.all_gather(bufs, buf, group=self.group)
        if self.rank != 0:
            return None
        return [bytes(b[: int(n)].numpy()) for b, n in zip(bufs, lengths)]

    def broadcast(self, payload: bytes | None) -> bytes:
        length = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64)
        dist.broadcast(length, src=0, group=self.group)
        buf = torch.zeros(int(length), dtype=torch.uint8)
        if self.rank == 0 and payload:
            buf[:] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        if int(length):
            dist.broadcast(buf, src=0, group=self.group)
        return bytes(buf.numpy())

    def all_ok(self, ok: bool) -> bool:
        flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
        return bool(flag.item())


def default_transport(group: dist.ProcessGroup | None = None) -> Transport:
    """Under torch.distributed, checkpoint traffic gets its own gloo group (created collectively here), so a
    background save's collectives never interleave with the training loop's on the same group."""
    if dist.is_available() and dist.is_initialized():
        return ProcessGroupTransport(group if group is not None else dist.new_group(backend="gloo"))
    return LocalTransport()
