"""The tensor index of a `fito-manifest/2` step, as plain JSON for `fito inspect`: per tensor its dtype,
global shape and chunks (where each sits in the global tensor, and which rank's object holds it, i.e. which
rank wrote that replica), per value its size, per entry whether it is replicated or saved per rank
(`__rank__/<r>/...`), the packs of small tensors and what they hold, and a summary small enough to print for
a big model."""
from __future__ import annotations

from typing import Any, Mapping

from fito.ckpt.rank_local import is_pack_key, parse_key, tensor_key
from fito.format.manifest import ShardedManifest
from fito.format.objects import block_count

Docs = Mapping[tuple[int | None, str], dict[str, Any]]  # (saving rank or None, entry) -> its parsed document


def index_of(m: ShardedManifest, docs: Docs | None = None) -> dict[str, Any]:
    """The whole index (JSON-able). Bytes are payload bytes; `objects[r].size` is the file's size. A pack of
    small tensors (fito.ckpt.packs) is listed under "packs"; with its entry's document in `docs`, its members
    are listed as tensors (with "pack": the pack's name), else the pack itself is (with "pack": true)."""
    written: dict[int, int] = {o.rank: 0 for o in m.objects}
    items: dict[int, int] = {o.rank: 0 for o in m.objects}
    tensors: list[dict[str, Any]] = []
    packs: list[dict[str, Any]] = []
    for t in m.tensors.values():
        chunks = []
        for c in t.chunks:
            p = c.piece
            written[p.rank] += p.length
            items[p.rank] += 1
            chunks.append({"offsets": list(c.offsets), "sizes": list(c.sizes), "rank": p.rank, "offset": p.offset,
                           "bytes": p.length, "blocks": len(p.blocks)})
        saved_by, entry, _ = parse_key(t.fqn)
        row = {"fqn": t.fqn, "entry": entry, "saved_by": saved_by, "dtype": t.dtype, "shape": list(t.shape),
               "bytes": sum(c["bytes"] for c in chunks), "chunks": chunks}
        if not is_pack_key(t.fqn):
            tensors.append(row)
            continue
        members = _members(t.fqn, m, (docs or {}).get((saved_by, entry)), row)
        packs.append({**row, "members": None if members is None else len(members)})
        tensors.extend(members if members is not None else [{**row, "pack": True}])
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
            "packs": len(packs),
            "chunks": sum(len(t["chunks"]) for t in tensors), "object_bytes": m.total_bytes,
            "writers": [r for r in sorted(written) if items[r]],
        },
        "objects": [{"rank": o.rank, "file": o.file, "size": o.size, "items": items[o.rank], "bytes": written[o.rank]}
                    for o in m.objects],
        "entries": {"replicated": sorted(replicated),
                    "rank_local": {name: sorted(ranks) for name, ranks in sorted(entries.items())}},
        "tensors": tensors,
        "packs": packs,
        "values": values,
    }


def _members(fqn: str, m: ShardedManifest, doc: dict[str, Any] | None, pack: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tensors packed in pack `fqn`, each with the box and bytes it takes in the pack's object."""
    n = int(fqn.rpartition("/")[2])
    if doc is None or len(pack["chunks"]) != 1 or n >= len(doc["pack_bytes"]) or doc["pack_bytes"][n] != pack["bytes"]:
        return None
    chunk = pack["chunks"][0]
    out = []
    for i, (where, offset, length) in sorted(doc["packed"].items(), key=lambda kv: kv[1][1]):
        if where != n:
            continue
        tag, dtype, shape = doc["specs"][i]
        first = offset // m.block_bytes
        blocks = block_count(offset + length, m.block_bytes) - first if length else 0
        out.append({"fqn": tensor_key(pack["entry"], pack["saved_by"], doc["keys"][i]), "entry": pack["entry"],
                    "saved_by": pack["saved_by"], "dtype": dtype if tag == "T" else f"numpy {dtype}", "shape": list(shape),
                    "bytes": length, "chunks": [{"offsets": [0] * len(shape), "sizes": list(shape), "rank": chunk["rank"],
                                                 "offset": chunk["offset"] + offset, "bytes": length, "blocks": blocks}],
                    "pack": fqn})
    return out


def chunk_text(chunk: dict[str, Any]) -> str:
    """`[0:4, 0:8] r1`: the box of the global tensor a chunk covers, and the rank whose object holds it."""
    box = ", ".join(f"{o}:{o + s}" for o, s in zip(chunk["offsets"], chunk["sizes"]))
    return f"[{box}] r{chunk['rank']}"
