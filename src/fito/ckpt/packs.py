"""Small plain tensors of an entry packed into a few DCP items ("packs"), and back.

One DCP item per tensor costs planning (WriteItems, ReadItems, metadata), a manifest record, a read and a
hash each; for 20,000 tensors of 1 KiB that is seconds for 20 MB. So at save, inside each entry, the plain
(non-DTensor) tensors of at most `knobs.pack_leaf_bytes()` each are copied, in leaf order, into flat uint8
tensors of at most `knobs.pack_bytes()` (item names: fito.ckpt.rank_local.pack_path). Big tensors and
DTensors stay items of their own: DCP shards, deduplicates and balances them.

The entry's document (fito.ckpt.entries, format fito-entry/2) records the layout:
    "packs": [{"bytes": <pack length>, "members": [[<leaf index>, <offset>, <length>], ...]}, ...]
Packs are built after the rank-local vote, from the same leaves it hashed, so a replicated entry's packs are
byte-identical on every rank and written once; a rank-local entry's packs get its per-rank names. A pack is
a private copy of the live tensors: a background save need not stage it again.

At restore the layout is checked against the document's own tensor references before anything is read
(leaf indices in range and used once, each member inside its pack, of exactly its dtype x shape bytes, no
two members overlapping), the packs against the manifest by the caller; each pack is read and verified like
any item, then every member gets its own owned, contiguous tensor (or numpy array) holding its bytes."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from fito import knobs
from fito.ckpt.rank_local import is_pack_path, pack_path
from fito.plan.tree import DTYPES, numpy_dtype
from fito.format.hashing import DEFAULT_ALGORITHM, digest

MAX_BYTES = 1 << 62
Spec = tuple[str, str, list[int]]  # (tag "T" | "N", dtype, shape) of a tensor reference (fito.plan.tree)
Item = tuple[str, torch.Tensor, str | None]  # (path in the entry, tensor, its digest if already known)


# ---------------------------------------------------------------- save
def build(keys: Sequence[str], leaves: Sequence[torch.Tensor], digests: Sequence[str | None]
          ) -> tuple[list[dict[str, Any]], list[Item]]:
    """(the layout for the document, or [] when nothing is packed; the entry's DCP tensors). A pack's digest,
    when every member's is known, is the digest of theirs: equal on two ranks exactly when the bytes are."""
    limit, cap = knobs.pack_leaf_bytes(), knobs.pack_bytes()
    small = [i for i, t in enumerate(leaves) if limit and not isinstance(t, DTensor) and _nbytes(t) <= limit]
    if len(small) < 2:  # one small tensor gains nothing from a pack
        return [], list(zip(keys, leaves, digests))
    groups: list[list[int]] = []
    size = cap
    for i in small:
        n = _nbytes(leaves[i])
        if size + n > cap:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    layout: list[dict[str, Any]] = []
    packed = set(small)
    items: list[Item] = [(k, t, d) for i, (k, t, d) in enumerate(zip(keys, leaves, digests)) if i not in packed]
    for n, group in enumerate(groups):
        parts = [_flat_bytes(leaves[i]) for i in group]
        members, offset = [], 0
        for i, part in zip(group, parts):
            members.append([i, offset, part.numel()])
            offset += part.numel()
        pack = torch.empty(offset, dtype=torch.uint8)
        if offset:
            torch.cat([p for p in parts if p.numel()], out=pack)
        known = [digests[i] for i in group]
        d = digest(DEFAULT_ALGORITHM, *(k.encode() for k in known)) if all(known) else None  # type: ignore[union-attr]
        layout.append({"bytes": offset, "members": members})
        items.append((pack_path(n), pack, d))
    return layout, items


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _flat_bytes(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous().reshape(-1).view(torch.uint8)


# ---------------------------------------------------------------- restore
def parse_layout(raw: Any, keys: list[str], specs: dict[int, Spec], bad: Callable[[str, Any], Exception]
                 ) -> tuple[dict[int, tuple[int, int, int]], list[int]]:
    """({leaf index: (pack, offset, length)}, [bytes of each pack]) of an untrusted document's "packs"."""
    if not isinstance(raw, list) or len(raw) > len(keys):
        raise bad(f"packs: a list of at most {len(keys)} packs", type(raw).__name__)
    packed: dict[int, tuple[int, int, int]] = {}
    sizes: list[int] = []
    for n, p in enumerate(raw):
        if not isinstance(p, dict) or set(p) != {"bytes", "members"} or not _int(p["bytes"]) or not isinstance(p["members"], list):
            raise bad(f"pack {n}: {{\"bytes\": an integer, \"members\": a list}}", p)
        size = p["bytes"]
        spans = []
        for m in p["members"]:
            if not (isinstance(m, list) and len(m) == 3 and all(_int(x) for x in m)):
                raise bad(f"pack {n}: members [leaf index, offset, length]", m)
            leaf, offset, length = m
            if leaf >= len(keys) or leaf in packed:
                raise bad(f"pack {n}: a member that is one of the {len(keys)} tensor references, packed once", leaf)
            want = spec_bytes(specs[leaf])
            if length != want or offset + length > size:
                raise bad(f"pack {n}: member {leaf} of {want} bytes inside the pack's {size}",
                          f"offset {offset} length {length}")
            packed[leaf] = (n, offset, length)
            if length:
                spans.append((offset, length, leaf))
        spans.sort()
        for (a, la, leaf_a), (b, _, leaf_b) in zip(spans, spans[1:]):
            if b < a + la:
                raise bad(f"pack {n}: members that do not overlap", f"members {leaf_a} and {leaf_b} at {a} and {b}")
        sizes.append(size)
    if packed:
        clash = [keys[i] for i in range(len(keys)) if i not in packed and is_pack_path(keys[i])]
        if clash:
            raise bad("tensor names other than the packs'", clash[:3])
    return packed, sizes


def spec_bytes(spec: Spec) -> int:
    tag, dtype, shape = spec
    size = DTYPES[dtype].itemsize if tag == "T" else numpy_dtype(dtype).itemsize
    return math.prod(shape) * size


def unpack(spec: Spec, pack: torch.Tensor, offset: int, length: int, template: torch.Tensor | None) -> Any:
    """A packed member as user code gets it: an owned tensor of its own (or a numpy array), or, when the live
    state holds a DTensor there (saved plain, restored sharded), this rank's part of it, cut locally."""
    tag, dtype, shape = spec
    if tag == "T":
        t = torch.empty(shape, dtype=DTYPES[dtype])
        if length:
            t.view(-1).view(torch.uint8).copy_(pack[offset:offset + length])
        if isinstance(template, DTensor):
            return distribute_tensor(t, template.device_mesh, template.placements, src_data_rank=None)
        return t
    array = np.empty(shape, dtype=numpy_dtype(dtype))
    if length:
        torch.from_numpy(array.reshape(-1).view(np.uint8)).copy_(pack[offset:offset + length])
    return array


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < MAX_BYTES
