"""The manifest: every unit of every rank of one attempt, with sizes, hashes and epoch tags. Written by the
coordinator after all READYs; its hash goes into the decision record, so a manifest is trusted only if the
decision vouches for its exact bytes. Parsing treats it as hostile input anyway."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

from fito import __version__
from fito.ckpt.hashing import ALGORITHMS
from fito.errors import UnsafeCheckpointError
from fito.protocol.messages import Ready, UnitEntry, shard_path
from fito.storage.localfs import safe_relpath

FORMAT = "fito-manifest/1"
MAX_MANIFEST_BYTES = 256 << 20


@dataclass(frozen=True)
class RankShard:
    rank: int
    file: str
    size: int
    units: tuple[UnitEntry, ...]


@dataclass(frozen=True)
class Manifest:
    epoch: int
    attempt: str
    world_size: int
    algorithm: str
    ranks: tuple[RankShard, ...]
    fito_version: str = __version__

    def shard(self, rank: int) -> RankShard:
        return self.ranks[rank]

    @property
    def total_bytes(self) -> int:
        return sum(r.size for r in self.ranks)


def build(epoch: int, attempt: str, readies: Sequence[Ready], algorithm: str) -> bytes:
    doc = {
        "format": FORMAT,
        "fito_version": __version__,
        "epoch": epoch,
        "step": epoch,
        "attempt": attempt,
        "world_size": len(readies),
        "hash": algorithm,
        "created": time.time(),
        "ranks": [
            {"rank": r.rank, "file": r.file, "size": r.size,
             "units": [[u.name, u.offset, u.length, u.hash, u.epoch] for u in r.units]}
            for r in sorted(readies, key=lambda r: r.rank)
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def parse(data: bytes, *, where: str, epoch: int, attempt: str) -> Manifest:
    """Validate every field; the manifest must describe exactly the attempt its decision names."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _bad(where, "JSON", f"unparsable bytes ({exc})")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        _bad(where, f"format {FORMAT!r}", repr(doc.get("format") if isinstance(doc, dict) else type(doc).__name__))
    if doc.get("epoch") != epoch or doc.get("attempt") != attempt:
        _bad(where, f"epoch {epoch} attempt {attempt}", f"epoch {doc.get('epoch')!r} attempt {doc.get('attempt')!r}")
    algorithm = doc.get("hash")
    if algorithm not in ALGORITHMS:
        _bad(where, f"hash algorithm in {sorted(ALGORITHMS)}", repr(algorithm))
    world = doc.get("world_size")
    ranks_doc = doc.get("ranks")
    if not isinstance(world, int) or world < 1 or not isinstance(ranks_doc, list) or len(ranks_doc) != world:
        _bad(where, "world_size >= 1 and one entry per rank", f"world_size {world!r}")
    ranks = []
    for i, r in enumerate(ranks_doc):
        ranks.append(_rank(r, i, where=where, epoch=epoch, attempt=attempt))
    return Manifest(epoch, attempt, world, algorithm, tuple(ranks), str(doc.get("fito_version", "?")))


def _rank(r: Any, index: int, *, where: str, epoch: int, attempt: str) -> RankShard:
    if not isinstance(r, dict) or r.get("rank") != index:
        _bad(where, f"rank entry {index}", repr(r)[:100])
    file, size, units = r.get("file"), r.get("size"), r.get("units")
    if not isinstance(file, str):
        _bad(where, "a file name", repr(file))
    safe_relpath(file)
    if file != shard_path(epoch, attempt, index):
        # Units may only come from this attempt's own directory: no `../`, no other epoch's files.
        _bad(where, f"rank {index} file {shard_path(epoch, attempt, index)}", repr(file))
    if not isinstance(size, int) or size < 0 or not isinstance(units, list):
        _bad(where, "a size and a unit list", f"size {size!r}")
    out = []
    for u in units:
        if not (isinstance(u, list) and len(u) == 5 and isinstance(u[0], str) and all(isinstance(x, int) and x >= 0 for x in u[1:3])
                and isinstance(u[3], str) and isinstance(u[4], int)):
            _bad(where, "a unit [name, offset, length, hash, epoch]", repr(u)[:100])
        name, offset, length, digest, tag = u
        if offset + length > size:
            _bad(where, f"unit {name!r} inside the {size}-byte shard", f"offset {offset} + length {length}")
        out.append(UnitEntry(name, offset, length, digest, tag))
    return RankShard(index, file, size, tuple(out))


def _bad(where: str, expected: str, found: str) -> None:
    raise UnsafeCheckpointError(path=where, unit=None, expected=expected, found=found,
                                hint="the manifest is damaged, foreign or hostile; nothing was restored")

