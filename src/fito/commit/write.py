"""This rank's object of an attempt, as the executor writes it for a WriteShard command: the header, then each
of the plan's items on a 64-byte boundary, hashed block by block as it is written."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Callable

from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItemType

from fito.format.manifest import Piece
from fito.format.objects import HEADER, ObjectHeader, block_digest, padding
from fito.plan.save import item_bytes

OVERLAP_BYTES = 1 << 20  # a block at least this big is hashed in a helper thread while it is written


def write_object(f: BinaryIO, header: ObjectHeader, plan: SavePlan, planner: SavePlanner, block_bytes: int,
                 algorithm: str, pieces: list[Piece], progress: Callable[[int], None] | None = None) -> int:
    """Header, then each item on a 64-byte boundary, hashed block by block as it is written (a large block
    in a helper thread during its own write: both release the GIL). Returns the size."""
    write_all(f, memoryview(header.pack()))
    offset = HEADER.size
    resize = getattr(progress, "resize", None)  # a bar sized to this rank's share of the replicas
    planned = planned_bytes(plan)
    if resize is not None:
        resize(planned)
    hasher: ThreadPoolExecutor | None = None
    try:
        for item in plan.items:
            raw = item_bytes(item, planner)
            raw = raw.cast("B") if raw.format != "B" or raw.ndim != 1 else raw
            if resize is not None and item.type == WriteItemType.BYTE_IO:  # a value's size is known only now
                planned += len(raw)
                resize(planned)
            blocks = []
            for start in range(0, max(len(raw), 1), block_bytes):
                block = raw[start:start + block_bytes]
                if len(block) < OVERLAP_BYTES:  # small: a thread hand-off would cost more than the hash
                    blocks.append(block_digest(algorithm, block))
                    write_all(f, block)
                else:
                    hasher = hasher or ThreadPoolExecutor(1, thread_name_prefix="fito-hash")
                    pending = hasher.submit(block_digest, algorithm, block)
                    write_all(f, block)
                    blocks.append(pending.result())
                if progress is not None:
                    progress(len(block))
            pieces.append(Piece(header.rank, offset, len(raw), tuple(blocks), header.epoch))
            offset += len(raw)
            pad = padding(offset)
            if pad:
                write_all(f, memoryview(bytes(pad)))
                offset += pad
    finally:
        if hasher is not None:
            hasher.shutdown()
    return offset


def planned_bytes(plan: SavePlan) -> int:
    """The bytes of the tensors in this rank's plan (a value's size is known once it is serialized)."""
    total = 0
    for item in plan.items:
        if item.tensor_data is not None:
            total += math.prod(item.tensor_data.chunk.sizes) * item.tensor_data.properties.dtype.itemsize
    return total


def write_all(f: BinaryIO, data: memoryview) -> None:
    while len(data):
        data = data[f.write(data):]
