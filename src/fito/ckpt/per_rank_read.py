"""The read path of the v1 per-rank format (`fito-manifest/1`: each rank one shard file of units, the state
tree as unit 0). Saves write the sharded format now; checkpoints in this one stay restorable, verified the same
way: manifest bytes against the decision's hash, then headers and declared sizes before any payload is read."""
from __future__ import annotations

import json
import math
import reprlib
from typing import Any, Callable

import numpy as np
import torch

from fito.ckpt import manifest as manifest_mod
from fito.format.hashing import ALGORITHMS, digest
from fito.ckpt.shard import ShardReader
from fito.plan.tree import DTYPES, array_specs, decode, numpy_dtype
from fito.coord.base import Decision
from fito.errors import CheckpointCorruptError, CheckpointUnreadableError, UnsafeCheckpointError
from fito.storage.base import Storage

STATE_UNIT = "__state__"
STATE_FORMAT = "fito-state/1"
MAX_STATE_BYTES = 1 << 30  # the JSON state tree of one rank: refused unread beyond this


def load_manifest(storage: Storage, d: Decision) -> manifest_mod.Manifest:
    """Read the manifest a decision names, check its bytes against the decision's hash, and parse it."""
    if not isinstance(d.manifest, str) or not isinstance(d.manifest_hash, str):
        raise UnsafeCheckpointError(path=str(d.manifest), unit=None, expected="a manifest path and hash (strings)",
                                    found=f"{type(d.manifest).__name__}, {type(d.manifest_hash).__name__}")
    algorithm = d.manifest_hash.split(":", 1)[0]
    if algorithm not in ALGORITHMS:
        raise UnsafeCheckpointError(path=d.manifest, unit=None, expected="a known manifest hash", found=repr(d.manifest_hash))
    try:
        data = storage.read_bytes(d.manifest, manifest_mod.MAX_MANIFEST_BYTES)  # Storage: FitoErrors only
    except OSError as exc:  # another Storage may raise plain OSError
        raise CheckpointUnreadableError.from_os(d.manifest, exc) from None
    found = digest(algorithm, data)
    if found != d.manifest_hash:
        raise CheckpointCorruptError(path=d.manifest, unit=None, expected=f"manifest hash {d.manifest_hash}", found=found)
    m = manifest_mod.parse(data, where=d.manifest, epoch=d.epoch, attempt=d.attempt)
    for shard in m.ranks:
        for u in shard.units:
            if u.epoch != d.epoch:
                raise CheckpointCorruptError(path=shard.file, unit=u.name, expected=f"epoch tag {d.epoch}", found=f"epoch tag {u.epoch}")
    return m


def load_shard(storage: Storage, m: manifest_mod.Manifest, shard: manifest_mod.RankShard,
               progress: Callable[[int], None] | None = None, *, keep: bool = True) -> dict[str, Any]:
    """Read and verify one rank's shard of a parsed manifest, and rebuild its saved mapping.

    Bounded work on hostile input: the state tree (unit 0, capped at MAX_STATE_BYTES) is read and verified
    first; it names every array's dtype and shape, and each must account exactly for the bytes the manifest
    declares for its unit before anything is allocated. Each array is then read into its own fresh, owned,
    contiguous tensor (or numpy array): no view into a shared read buffer ever reaches user code.
    keep=False (`fito verify`): the same checks, but payloads only pass through a few scratch chunks, so memory
    stays bounded whatever the shard's size; the arrays in the returned tree are None."""
    units, where = shard.units, shard.file
    if not units or units[0].name != STATE_UNIT:
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected="the state tree as unit 0", found=repr(units[0].name if units else None))
    with ShardReader(storage, where, size=shard.size, epoch=m.epoch, rank=shard.rank, units=units,
                     algorithm=m.algorithm, progress=progress) as reader:
        doc, specs = parse_state(reader.read_bytes(0, MAX_STATE_BYTES), len(units) - 1, where=where)
        makers = [_array(*spec, reader.payload_length(i + 1), where=where, unit=units[i + 1].name) for i, spec in enumerate(specs)]
        arrays: list[Any] = [None] * len(makers)

        def target(index: int, nbytes: int) -> memoryview:
            arrays[index - 1], buffer = makers[index - 1]()
            return buffer
        reader.read_into(range(1, len(units)), target if keep else None)  # returns once every hash matched
    for i, a in enumerate(arrays):
        if a is None and keep:  # empty arrays: nothing was read
            arrays[i] = makers[i]()[0]
    return decode_state(doc, arrays, where=where)


def parse_state(data: bytes | bytearray, count: int, *, where: str) -> tuple[dict[str, Any], list[tuple[str, str, list[int]]]]:
    """The verified state-tree document and the (tag, dtype, shape) of each of its `count` arrays, in order."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected="JSON", found=str(exc)) from None
    except RecursionError:
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected="a state tree of bounded depth",
                                    found="nesting too deep to parse") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected=f"format {STATE_FORMAT}", found=reprlib.repr(doc))
    specs: dict[int, tuple[str, str, list[int]]] = {}
    try:
        array_specs(doc.get("tree"), specs)
    except RecursionError:
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected="a state tree of bounded depth",
                                    found="nesting too deep to walk") from None
    except UnsafeCheckpointError as exc:  # the tree walker knows the node, not the file: name the file too
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected=exc.expected, found=exc.found) from None
    if sorted(specs) != list(range(count)):
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected=f"{count} arrays", found=f"{len(specs)}")
    return doc, [specs[i] for i in range(count)]


def decode_state(doc: dict[str, Any], arrays: list[Any], *, where: str) -> dict[str, Any]:
    """Rebuild the saved mapping from a parsed state document and its verified arrays."""
    try:
        tree = decode(doc["tree"], arrays, where)
    except RecursionError:
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected="a state tree of bounded depth",
                                    found="nesting too deep to decode") from None
    if not isinstance(tree, dict):
        raise UnsafeCheckpointError(path=where, unit=STATE_UNIT, expected="a mapping of names", found=type(tree).__name__)
    return tree


MAX_DIMS = 64  # numpy's limit; torch's is lower still in practice
MAX_EXTENT = 1 << 62  # bytes spanned by a shape (zero dims counted as one): numpy and torch strides must fit int64


def _array(tag: str, dtype: str, shape: list[int], nbytes: int, *, where: str, unit: str) -> Callable[[], tuple[Any, memoryview]]:
    """Check that `dtype` x `shape` is exactly the unit's declared `nbytes`; return a maker of a fresh array
    and the writable view of its bytes. Nothing is allocated until the maker is called."""
    itemsize = DTYPES[dtype].itemsize if tag == "T" else numpy_dtype(dtype).itemsize
    if len(shape) > MAX_DIMS or not all(type(s) is int and s >= 0 for s in shape) or \
            math.prod(max(s, 1) for s in shape) * itemsize > MAX_EXTENT:
        raise UnsafeCheckpointError(path=where, unit=unit, expected=f"a shape of at most {MAX_DIMS} non-negative int "
                                    f"dims spanning at most {MAX_EXTENT} bytes", found=reprlib.repr(shape))
    expected = math.prod(shape) * itemsize  # Python ints: no overflow, unlike np.prod
    if expected != nbytes:
        raise UnsafeCheckpointError(path=where, unit=unit, expected=f"{expected} bytes for {dtype}{shape}", found=f"{nbytes} bytes declared")
    if tag == "N":
        np_dtype = numpy_dtype(dtype)

        def make_numpy() -> tuple[Any, memoryview]:
            a = np.empty(shape, dtype=np_dtype)
            return a, memoryview(a.reshape(-1).view(np.uint8))
        return make_numpy
    torch_dtype = DTYPES[dtype]

    def make_tensor() -> tuple[Any, memoryview]:
        t = torch.empty(shape, dtype=torch_dtype)
        return t, memoryview(t.view(-1).view(torch.uint8).numpy())
    return make_tensor
