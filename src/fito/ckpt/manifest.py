"""The manifest: every unit of every rank of one attempt, with sizes, hashes and epoch tags. Written by the
coordinator after all READYs; its hash goes into the decision record, so a manifest is trusted only if the
decision vouches for its exact bytes. Parsing treats it as hostile input anyway."""
from __future__ import annotations

import json
import reprlib
import time
from dataclasses import dataclass
from typing import Any, NoReturn, Sequence

from fito import __version__
from fito.format.hashing import ALGORITHMS
from fito.errors import UnsafeCheckpointError
from fito.protocol.messages import Ready, UnitEntry, shard_path
from fito.format.names import safe_relpath

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


def _int(x: Any) -> bool:
    """A JSON integer, not a bool (isinstance(True, int) holds in Python) nor a float."""
    return type(x) is int


def parse(data: bytes, *, where: str, epoch: int, attempt: str) -> Manifest:
    """Validate every field; the manifest must describe exactly the attempt its decision names."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _bad(where, "JSON", f"unparsable bytes ({exc})")
    except RecursionError:  # deeply nested arrays: json's C parser gives up on the stack, say so
        _bad(where, "a manifest of bounded depth", "nesting too deep to parse")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        _bad(where, f"format {FORMAT!r}", _short(doc.get("format") if isinstance(doc, dict) else type(doc).__name__))
    if not _int(doc.get("epoch")) or doc["epoch"] != epoch or doc.get("attempt") != attempt:
        _bad(where, f"epoch {epoch} attempt {attempt}", f"epoch {_short(doc.get('epoch'))} attempt {_short(doc.get('attempt'))}")
    algorithm = doc.get("hash")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        _bad(where, f"hash algorithm in {sorted(ALGORITHMS)}", _short(algorithm))
    world = doc.get("world_size")
    ranks_doc = doc.get("ranks")
    if not _int(world) or world < 1 or not isinstance(ranks_doc, list) or len(ranks_doc) != world:
        _bad(where, "world_size >= 1 and one entry per rank", f"world_size {_short(world)}")
    ranks = []
    for i, r in enumerate(ranks_doc):
        ranks.append(_rank(r, i, where=where, epoch=epoch, attempt=attempt, algorithm=algorithm))
    version = doc.get("fito_version", "?")
    return Manifest(epoch, attempt, world, algorithm, tuple(ranks), version if isinstance(version, str) else "?")


def _rank(r: Any, index: int, *, where: str, epoch: int, attempt: str, algorithm: str) -> RankShard:
    if not isinstance(r, dict) or not _int(r.get("rank")) or r["rank"] != index:
        _bad(where, f"rank entry {index}", _short(r))
    file, size, units = r.get("file"), r.get("size"), r.get("units")
    if not isinstance(file, str):
        _bad(where, "a file name", _short(file))
    safe_relpath(file)
    if file != shard_path(epoch, attempt, index):
        # Units may only come from this attempt's own directory: no `../`, no other epoch's files.
        _bad(where, f"rank {index} file {shard_path(epoch, attempt, index)}", _short(file))
    if not _int(size) or size < 0 or not isinstance(units, list):
        _bad(where, f"rank {index}: a size and a unit list", f"size {_short(size)}, units {type(units).__name__}")
    out = []
    end = 0
    for u in units:
        if not (isinstance(u, list) and len(u) == 5 and isinstance(u[0], str) and all(_int(x) and x >= 0 for x in u[1:3])
                and isinstance(u[3], str) and u[3].startswith(f"{algorithm}:") and _int(u[4])):
            _bad(where, f"rank {index}: a unit [name, offset, length, {algorithm}:hash, epoch]", _short(u))
        name, offset, length, digest, tag = u
        if offset < end or offset + length > size:
            # In file order and disjoint: a reader's work is bounded by the shard's real size.
            _bad(where, f"rank {index}: unit {name!r} after byte {end} and inside the {size}-byte shard",
                 f"offset {offset} + length {length}")
        end = offset + length
        out.append(UnitEntry(name, offset, length, digest, tag))
    return RankShard(index, file, size, tuple(out))


def _short(x: Any) -> str:
    """repr of untrusted data, bounded in length and depth (a plain repr of deep nesting recurses)."""
    return reprlib.repr(x)


def _bad(where: str, expected: str, found: str) -> NoReturn:
    raise UnsafeCheckpointError(path=where, unit=None, expected=expected, found=found,
                                hint="the manifest is damaged, foreign or hostile; nothing was restored")
