"""Copy a state's unit payloads into one host buffer, so a background save persists the values as they
were at the call while training goes on mutating the live tensors. The buffer is reused between saves
(at most one save is in flight), so after the first save the stall is a plain memcpy: no page faults."""
from __future__ import annotations

import numpy as np
import torch

from fito.ckpt.memory import host_buffer
from fito.ckpt.shard import ALIGN


class StagingBuffer:
    def __init__(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)

    def stage(self, units: list[tuple[str, memoryview]]) -> list[tuple[str, memoryview]]:
        sizes = [len(u) for _, u in units]
        total = sum(-(-n // ALIGN) * ALIGN for n in sizes)
        if self._buffer.numel() < total:
            self._buffer = host_buffer(total)
        staged, offset = [], 0
        for (name, payload), n in zip(units, sizes):
            dst = self._buffer[offset:offset + n]
            if n and payload.readonly:  # small JSON bytes
                np.copyto(dst.numpy(), np.frombuffer(payload, dtype=np.uint8))
            elif n:  # tensor memory: torch copies with all intra-op threads
                dst.copy_(torch.frombuffer(payload, dtype=torch.uint8))
            staged.append((name, memoryview(dst.numpy()) if n else memoryview(b"")))
            offset += -(-n // ALIGN) * ALIGN
        return staged
