"""DCP's Metadata <-> fito's manifest v2 (torch-aware, no I/O). What the coordinator expects to be covered,
what it writes, and what a reader gives back to DCP: nothing here is pickled."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata, ChunkStorageMetadata, Metadata, MetadataIndex, TensorProperties, TensorStorageMetadata,
)

from fito.plan.tree import DTYPES, dtype_name
from fito.format.manifest import Chunk, ObjectEntry, Piece, ShardedManifest, TensorEntry, chunk_bytes
from fito.protocol.coverage import Key


def key_of(index: MetadataIndex) -> Key:
    offset = index.offset
    return (index.fqn, None if offset is None else tuple(int(x) for x in offset))


def expected_items(metadata: Metadata) -> dict[Key, int | None]:
    """Every item the global plan saves, with its byte length (None for values: their JSON size is unknown)."""
    out: dict[Key, int | None] = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            dtype = dtype_name(md.properties.dtype)
            for c in md.chunks:
                out[(fqn, tuple(int(x) for x in c.offsets))] = chunk_bytes(dtype, [int(s) for s in c.sizes])
        else:
            out[(fqn, None)] = None
    return out


def expected_of_plans(plans: Sequence[Any]) -> dict[Key, int | None]:
    """What the coordinator expects, from the global plan DCP hands it before anything is written (the same
    items as expected_items(metadata): DCP builds the metadata from these plans)."""
    out: dict[Key, int | None] = {}
    for plan in plans:
        for item in plan.items:
            td = item.tensor_data
            out[key_of(item.index)] = (None if td is None else
                                       chunk_bytes(dtype_name(td.properties.dtype), [int(x) for x in td.chunk.sizes]))
    return out


def to_manifest(epoch: int, attempt: str, algorithm: str, block_bytes: int, metadata: Metadata,
                pieces: Mapping[Key, Piece], objects: Sequence[ObjectEntry]) -> ShardedManifest:
    """The manifest of a covered save (`pieces` holds exactly the keys of expected_items(metadata))."""
    tensors: dict[str, TensorEntry] = {}
    values: dict[str, Piece] = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            chunks = tuple(
                Chunk(tuple(int(x) for x in c.offsets), tuple(int(x) for x in c.sizes), pieces[(fqn, tuple(int(x) for x in c.offsets))])
                for c in md.chunks
            )
            tensors[fqn] = TensorEntry(fqn, dtype_name(md.properties.dtype), tuple(int(x) for x in md.size), chunks)
        else:
            values[fqn] = pieces[(fqn, None)]
    flatten = {fqn: tuple(path) for fqn, path in (metadata.planner_data or {}).items()}
    return ShardedManifest(epoch, attempt, algorithm, block_bytes, tuple(objects), tensors, values, flatten)


def to_metadata(m: ShardedManifest) -> Metadata:
    """DCP's view of a parsed manifest (chunks and dtypes only; where the bytes are stays with the reader)."""
    sdm: dict[str, Any] = {}
    for fqn, t in m.tensors.items():
        sdm[fqn] = TensorStorageMetadata(
            properties=TensorProperties(dtype=DTYPES[t.dtype]), size=torch.Size(t.shape),
            chunks=[ChunkStorageMetadata(offsets=torch.Size(c.offsets), sizes=torch.Size(c.sizes)) for c in t.chunks],
        )
    for fqn in m.values:
        sdm[fqn] = BytesStorageMetadata()
    return Metadata(state_dict_metadata=sdm, planner_data=dict(m.flatten))


def pieces_of(m: ShardedManifest) -> dict[Key, tuple[Piece, str | None, tuple[int, ...]]]:
    """key -> (piece, dtype or None for a value, chunk sizes)."""
    out: dict[Key, tuple[Piece, str | None, tuple[int, ...]]] = {}
    for fqn, t in m.tensors.items():
        for c in t.chunks:
            out[(fqn, c.offsets)] = (c.piece, t.dtype, c.sizes)
    for fqn, p in m.values.items():
        out[(fqn, None)] = (p, None, ())
    return out
