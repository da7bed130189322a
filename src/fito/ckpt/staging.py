"""Copy a state's unit payloads into one host buffer, so a background save persists the values as they
were at the call while training goes on mutating the live tensors. The buffer is reused between saves
(at most one save is in flight), so after the first save the stall is a plain memcpy: no page faults.

A payload is host bytes (a memoryview) or a tensor on an accelerator. A device tensor is copied straight
into its slice of the buffer (one device-to-host copy, not a fresh host tensor and then a second copy),
and when any payload is on a CUDA device the buffer is page-locked (pinned), as DCP's DefaultStager does
with use_pinned_memory: the copy then runs at the link's speed instead of through the driver's bounce
buffer. The pinned buffer stays with the Checkpointer, like the unpinned one."""
from __future__ import annotations

import numpy as np
import torch

from fito.ckpt.memory import host_buffer
from fito.ckpt.shard import ALIGN


class StagingBuffer:
    def __init__(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)

    def stage(self, units: list[tuple[str, memoryview | torch.Tensor]]) -> list[tuple[str, memoryview]]:
        sizes = [p.numel() * p.element_size() if isinstance(p, torch.Tensor) else len(p) for _, p in units]
        total = sum(-(-n // ALIGN) * ALIGN for n in sizes)
        pin = any(isinstance(p, torch.Tensor) and p.device.type == "cuda" for _, p in units)
        if self._buffer.numel() < total or (pin and not self._buffer.is_pinned()):
            self._buffer = torch.empty(0, dtype=torch.uint8)  # the old one goes first: host memory is not doubled
            self._buffer = torch.empty(total, dtype=torch.uint8, pin_memory=True) if pin else host_buffer(total)
        staged, offset = [], 0
        for (name, payload), n in zip(units, sizes):
            dst = self._buffer[offset:offset + n]
            if n and isinstance(payload, torch.Tensor):  # on a device: one copy into the slice
                dst.copy_(payload.detach().contiguous().reshape(-1).view(torch.uint8))
            elif n and payload.readonly:  # small JSON bytes
                np.copyto(dst.numpy(), np.frombuffer(payload, dtype=np.uint8))
            elif n:  # tensor memory: torch copies with all intra-op threads
                dst.copy_(torch.frombuffer(payload, dtype=torch.uint8))
            staged.append((name, memoryview(dst.numpy()) if n else memoryview(b"")))
            offset += -(-n // ALIGN) * ALIGN
        return staged
