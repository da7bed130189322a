"""The tensor index of a `fito-manifest/2` step, as plain JSON for `fito inspect`: per tensor its dtype,
global shape and chunks (where each sits in the global tensor, and which rank's object holds it, i.e. which
rank wrote that replica), per value its size, per entry whether it is replicated or saved per rank
(`__rank__/<r>/...`), and a summary small enough to print for a big model."""
from __future__ import annotations

from typing import Any

from fito.ckpt.rank_local import parse_key
from fito.format.manifest import ShardedManifest


def index_of(m: ShardedManifest) -> dict[str, Any]:
    """The whole index (JSON-able). Bytes are payload bytes; `objects[r].size` is the file's size."""
    written: dict[int, int] = {o.rank: 0 for o in m.objects}
    items: dict[int, int] = {o.rank: 0 for o in m.objects}
    tensors = []
    for t in m.tensors.values():
        chunks = []
        for c in t.chunks:
            p = c.piece
            written[p.rank] += p.length
            items[p.rank] += 1
            chunks.append({"offsets": list(c.offsets), "sizes": list(c.sizes), "rank": p.rank, "offset": p.offset,
                           "bytes": p.length, "blocks": len(p.blocks)})
        saved_by, entry, _ = parse_key(t.fqn)
        tensors.append({"fqn": t.fqn, "entry": entry, "saved_by": saved_by, "dtype": t.dtype, "shape": list(t.shape),
                        "bytes": sum(c["bytes"] for c in chunks), "chunks": chunks})
    values = []
    for fqn, p in m.values.items():
        written[p.rank] += p.length
        items[p.rank] += 1
        saved_by, entry, is_doc = parse_key(fqn)
        values.append({"fqn": fqn, "entry": entry, "saved_by": saved_by, "document": is_doc, "rank": p.rank,
                       "bytes": p.length})
    entries: dict[str, set[int]] = {}
    replicated: set[str] = set()
    for row in [*tensors, *values]:
        if row["saved_by"] is None:
            replicated.add(row["entry"])
        else:
            entries.setdefault(row["entry"], set()).add(row["saved_by"])
    return {
        "format": "fito-manifest/2", "world_size": m.world_size, "hash": m.algorithm, "block_bytes": m.block_bytes,
        "summary": {
            "tensors": len(tensors), "tensor_bytes": sum(t["bytes"] for t in tensors), "values": len(values),
            "chunks": sum(len(t["chunks"]) for t in tensors), "object_bytes": m.total_bytes,
            "writers": [r for r in sorted(written) if items[r]],
        },
        "objects": [{"rank": o.rank, "file": o.file, "size": o.size, "items": items[o.rank], "bytes": written[o.rank]}
                    for o in m.objects],
        "entries": {"replicated": sorted(replicated),
                    "rank_local": {name: sorted(ranks) for name, ranks in sorted(entries.items())}},
        "tensors": tensors,
        "values": values,
    }


def chunk_text(chunk: dict[str, Any]) -> str:
    """`[0:4, 0:8] r1`: the box of the global tensor a chunk covers, and the rank whose object holds it."""
    box = ", ".join(f"{o}:{o + s}" for o, s in zip(chunk["offsets"], chunk["sizes"]))
    return f"[{box}] r{chunk['rank']}"
