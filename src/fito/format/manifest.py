"""Manifest v2 for sharded state: the tensor index (fqn -> dtype, global shape, chunks; each chunk's bytes ->
rank object, offset, length, block hashes, epoch tag), non-tensor values (JSON items), the objects of the
attempt, and DCP's flatten mapping. JSON only; never pickle.

The coordinator writes it after every READY; its hash goes into the decision record. Parsing treats it as
hostile anyway: every size and type is checked before use, nesting is bounded, names are confined to the
attempt's own objects. Bytes only: no torch, no I/O."""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, NoReturn, Sequence

from fito import __version__
from fito.errors import UnsafeCheckpointError
from fito.format.hashing import ALGORITHMS
from fito.format.objects import ALIGN, HEADER, block_count, digest_hex_length
from fito.protocol.messages import shard_path
from fito.format.names import safe_relpath

FORMAT = "fito-manifest/2"
MAX_MANIFEST_BYTES = 256 << 20
MAX_INT = 1 << 62
MAX_DIMS = 64
MAX_NAME = 4096

# Bytes per element of every dtype fito stores (names as torch spells them without "torch.").
DTYPE_BYTES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint8": 1, "bool": 1, "complex64": 8, "complex128": 16,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1,
    "float4_e2m1fn_x2": 1, "uint16": 2, "uint32": 4, "uint64": 8, "complex32": 4,
}

PathPart = str | int


@dataclass(frozen=True)
class Piece:
    """Where one item's bytes are, and what vouches for them."""

    rank: int  # whose object holds them
    offset: int
    length: int
    blocks: tuple[str, ...]  # hex digest of each block of `length`, in order
    tag: int  # epoch tag the writing rank vouched for


@dataclass(frozen=True)
class Chunk:
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    piece: Piece


@dataclass(frozen=True)
class TensorEntry:
    fqn: str
    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class ObjectEntry:
    rank: int
    file: str
    size: int


@dataclass(frozen=True)
class ShardedManifest:
    epoch: int
    attempt: str
    algorithm: str
    block_bytes: int
    objects: tuple[ObjectEntry, ...]  # one per saving rank, in rank order
    tensors: Mapping[str, TensorEntry]
    values: Mapping[str, Piece]  # fqn -> the JSON bytes of a non-tensor value
    flatten: Mapping[str, tuple[PathPart, ...]] = field(default_factory=dict)  # DCP's planner_data
    fito_version: str = __version__

    @property
    def world_size(self) -> int:
        return len(self.objects)

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)


def chunk_bytes(dtype: str, sizes: Sequence[int]) -> int:
    return math.prod(sizes) * DTYPE_BYTES[dtype]


FORMAT_PEEK = re.compile(rb'\s*\{\s*"format"\s*:\s*"(fito-manifest/[0-9]+)"')


def format_of(data: bytes) -> str | None:
    """The format a manifest names first (both fito formats write it first), without parsing the rest."""
    found = FORMAT_PEEK.match(data[:256])
    return found.group(1).decode() if found else None


# ---------------------------------------------------------------- build
def build(m: ShardedManifest) -> bytes:
    doc = {
        "format": FORMAT, "fito_version": m.fito_version, "epoch": m.epoch, "step": m.epoch, "attempt": m.attempt,
        "world_size": m.world_size, "hash": m.algorithm, "block_bytes": m.block_bytes, "created": time.time(),
        "objects": [{"rank": o.rank, "file": o.file, "size": o.size} for o in m.objects],
        "tensors": [
            {"fqn": t.fqn, "dtype": t.dtype, "shape": list(t.shape),
             "chunks": [{"offsets": list(c.offsets), "sizes": list(c.sizes), **_piece_doc(c.piece)} for c in t.chunks]}
            for t in m.tensors.values()
        ],
        "values": [{"fqn": fqn, **_piece_doc(p)} for fqn, p in m.values.items()],
        "flatten": [[fqn, list(path)] for fqn, path in m.flatten.items()],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _piece_doc(p: Piece) -> dict[str, Any]:
    return {"rank": p.rank, "offset": p.offset, "length": p.length, "tag": p.tag, "blocks": list(p.blocks)}


# ---------------------------------------------------------------- parse
def parse(data: bytes, *, where: str, epoch: int, attempt: str) -> ShardedManifest:
    """Validate every field; the manifest must describe exactly the attempt its decision names."""
    doc = _load_json(data, where)
    p = _Parser(where, epoch, attempt)
    if not isinstance(doc, dict):
        p.bad("a JSON object", type(doc).__name__)
    if doc.get("format") != FORMAT:
        p.bad(f"format {FORMAT!r}", repr(doc.get("format"))[:80],
              hint="a step written by fito.Checkpointer (format fito-manifest/1) is restored with Checkpointer.restore"
              if doc.get("format") == "fito-manifest/1" else "")
    if doc.get("epoch") != epoch or doc.get("attempt") != attempt:
        p.bad(f"epoch {epoch} attempt {attempt}", f"epoch {doc.get('epoch')!r} attempt {doc.get('attempt')!r}")
    p.algorithm = doc.get("hash")
    if p.algorithm not in ALGORITHMS:
        p.bad(f"hash algorithm in {sorted(ALGORITHMS)}", repr(p.algorithm)[:80])
    p.hex_length = digest_hex_length(p.algorithm)
    p.block_bytes = p.integer(doc.get("block_bytes"), "block_bytes", minimum=64)
    world = p.integer(doc.get("world_size"), "world_size", minimum=1)
    objects = p.objects(p.array(doc.get("objects"), "objects"), world)
    tensors: dict[str, TensorEntry] = {}
    for t in p.array(doc.get("tensors"), "tensors"):
        entry = p.tensor(t)
        p.claim(entry.fqn)
        tensors[entry.fqn] = entry
    values: dict[str, Piece] = {}
    for v in p.array(doc.get("values"), "values"):
        fqn = p.name(v.get("fqn") if isinstance(v, dict) else None, "value fqn")
        p.claim(fqn)
        values[fqn] = p.piece(v, fqn)
    flatten: dict[str, tuple[PathPart, ...]] = {}
    for pair in p.array(doc.get("flatten"), "flatten"):
        if not (isinstance(pair, list) and len(pair) == 2):
            p.bad("a [fqn, path] pair", repr(pair)[:80])
        fqn = p.name(pair[0], "flatten fqn")
        if fqn in flatten:
            p.bad(f"one flatten entry for {fqn!r}", "two")
        flatten[fqn] = p.path(pair[1], fqn)
    return ShardedManifest(epoch, attempt, p.algorithm, p.block_bytes, objects, tensors, values, flatten,
                           str(doc.get("fito_version", "?"))[:40])


def _overlap(chunks: list[Chunk]) -> tuple[Chunk, Chunk] | None:
    """Two non-empty chunks whose boxes intersect, if any. Sorted along dim 0, each chunk is compared only with
    those that start before it ends there: O(n log n) for the usual layouts (row shards, row x column grids)."""
    boxes = sorted((c for c in chunks if c.offsets and all(c.sizes)), key=lambda c: c.offsets)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b.offsets[0] >= a.offsets[0] + a.sizes[0]:
                break
            if all(bo < ao + asz and ao < bo + bsz for ao, asz, bo, bsz in zip(a.offsets, a.sizes, b.offsets, b.sizes)):
                return a, b
    return None


def _load_json(data: bytes, where: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise ValueError("duplicate key in a JSON object")
        return out

    def no_constants(name: str) -> NoReturn:
        raise ValueError(f"non-JSON constant {name}")

    try:
        return json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: hostile nesting
        raise UnsafeCheckpointError(path=where, unit=None, expected="a JSON manifest", found=f"{type(exc).__name__}: {str(exc)[:120]}",
                                    hint="the manifest is damaged, foreign or hostile; nothing was restored") from None


class _Parser:
    def __init__(self, where: str, epoch: int, attempt: str) -> None:
        self.where, self.epoch, self.attempt = where, epoch, attempt
        self.algorithm = ""
        self.hex_length = 0
        self.block_bytes = 0
        self.objects_: tuple[ObjectEntry, ...] = ()
        self.names: set[str] = set()

    def bad(self, expected: str, found: str, hint: str = "") -> NoReturn:
        raise UnsafeCheckpointError(path=self.where, unit=None, expected=expected, found=found,
                                    hint=hint or "the manifest is damaged, foreign or hostile; nothing was restored")

    def integer(self, value: Any, what: str, minimum: int = 0) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value < MAX_INT:
            self.bad(f"{what}: an integer >= {minimum}", repr(value)[:80])
        return value

    def array(self, value: Any, what: str) -> list[Any]:
        if not isinstance(value, list):
            self.bad(f"{what}: a list", type(value).__name__)
        return value

    def name(self, value: Any, what: str) -> str:
        if not isinstance(value, str) or not value or len(value) > MAX_NAME:
            self.bad(f"{what}: a non-empty string of at most {MAX_NAME} characters", repr(value)[:80])
        return value

    def claim(self, fqn: str) -> None:
        if fqn in self.names:
            self.bad(f"one entry for {fqn!r}", "two")
        self.names.add(fqn)

    def objects(self, docs: list[Any], world: int) -> tuple[ObjectEntry, ...]:
        if len(docs) != world:
            self.bad(f"{world} objects (one per rank)", f"{len(docs)}")
        out = []
        for rank, o in enumerate(docs):
            if not isinstance(o, dict) or o.get("rank") != rank:
                self.bad(f"object entry of rank {rank}", repr(o)[:80])
            file = o.get("file")
            expected = shard_path(self.epoch, self.attempt, rank)
            if not isinstance(file, str) or file != expected:
                # Objects may only be this attempt's own: no `../`, no other step's files.
                self.bad(f"rank {rank} object {expected}", repr(file)[:120])
            safe_relpath(file)
            out.append(ObjectEntry(rank, file, self.integer(o.get("size"), f"rank {rank} object size", HEADER.size)))
        self.objects_ = tuple(out)
        return self.objects_

    def piece(self, d: Any, fqn: str) -> Piece:
        if not isinstance(d, dict):
            self.bad(f"{fqn}: a piece record", type(d).__name__)
        rank = self.integer(d.get("rank"), f"{fqn}: rank")
        if rank >= len(self.objects_):
            self.bad(f"{fqn}: a rank below {len(self.objects_)}", str(rank))
        offset = self.integer(d.get("offset"), f"{fqn}: offset", HEADER.size)
        length = self.integer(d.get("length"), f"{fqn}: length")
        if offset % ALIGN or offset + length > self.objects_[rank].size:
            self.bad(f"{fqn}: an aligned range inside the {self.objects_[rank].size}-byte object of rank {rank}",
                     f"offset {offset} length {length}")
        tag = d.get("tag")
        if tag != self.epoch:
            self.bad(f"{fqn}: epoch tag {self.epoch}", f"epoch tag {tag!r}")
        blocks = self.array(d.get("blocks"), f"{fqn}: blocks")
        if len(blocks) != block_count(length, self.block_bytes):
            self.bad(f"{fqn}: {block_count(length, self.block_bytes)} block hashes", str(len(blocks)))
        for b in blocks:
            if not (isinstance(b, str) and len(b) == self.hex_length and all(c in "0123456789abcdef" for c in b)):
                self.bad(f"{fqn}: a {self.hex_length}-digit hex block hash", repr(b)[:80])
        return Piece(rank, offset, length, tuple(blocks), tag)

    def dims(self, value: Any, what: str, rank: int | None = None) -> tuple[int, ...]:
        dims = self.array(value, what)
        if len(dims) > MAX_DIMS or (rank is not None and len(dims) != rank):
            self.bad(f"{what}: {rank if rank is not None else f'at most {MAX_DIMS}'} dimensions", str(len(dims)))
        return tuple(self.integer(x, what) for x in dims)

    def tensor(self, t: Any) -> TensorEntry:
        if not isinstance(t, dict):
            self.bad("a tensor entry", type(t).__name__)
        fqn = self.name(t.get("fqn"), "tensor fqn")
        dtype = t.get("dtype")
        if dtype not in DTYPE_BYTES:
            self.bad(f"{fqn}: a dtype in {sorted(DTYPE_BYTES)}", repr(dtype)[:80])
        shape = self.dims(t.get("shape"), f"{fqn}: shape")
        chunks = []
        volume = 0
        for c in self.array(t.get("chunks"), f"{fqn}: chunks"):
            if not isinstance(c, dict):
                self.bad(f"{fqn}: a chunk record", type(c).__name__)
            offsets = self.dims(c.get("offsets"), f"{fqn}: chunk offsets", len(shape))
            sizes = self.dims(c.get("sizes"), f"{fqn}: chunk sizes", len(shape))
            if any(o + s > n for o, s, n in zip(offsets, sizes, shape)):
                self.bad(f"{fqn}: chunks inside the shape {list(shape)}", f"offsets {list(offsets)} sizes {list(sizes)}")
            piece = self.piece(c, fqn)
            if piece.length != chunk_bytes(dtype, sizes):
                self.bad(f"{fqn}: {chunk_bytes(dtype, sizes)} bytes for {dtype}{list(sizes)}", f"{piece.length} bytes")
            volume += math.prod(sizes)
            chunks.append(Chunk(offsets, sizes, piece))
        if volume != math.prod(shape):
            self.bad(f"{fqn}: chunks covering all {math.prod(shape)} elements of {list(shape)}", f"{volume} elements")
        clash = _overlap(chunks)  # inside the shape, the right volume and disjoint: an exact cover
        if clash:
            self.bad(f"{fqn}: chunks that do not overlap", f"offsets {list(clash[0].offsets)} sizes {list(clash[0].sizes)} and "
                     f"offsets {list(clash[1].offsets)} sizes {list(clash[1].sizes)}")
        return TensorEntry(fqn, dtype, shape, tuple(chunks))

    def path(self, value: Any, fqn: str) -> tuple[PathPart, ...]:
        parts = self.array(value, f"{fqn}: flatten path")
        if not parts or len(parts) > MAX_DIMS:
            self.bad(f"{fqn}: a flatten path of 1 to {MAX_DIMS} parts", str(len(parts)))
        for part in parts:
            if isinstance(part, bool) or not isinstance(part, (str, int)) or (isinstance(part, int) and not 0 <= part < MAX_INT):
                self.bad(f"{fqn}: flatten path parts that are strings or list indices", repr(part)[:80])
        return tuple(parts)
