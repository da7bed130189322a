"""Single-file mutations of a committed root, for tests/test_mutation_fuzz.py. Each mutation takes a seeded
`random.Random` and a `Root` (a copy of a committed root and what is known about it), damages exactly one
file (or one decision record), and returns the root-relative names it touched. Families with several
variants pick the variant by `Root.seed`, so N consecutive seeds cover all N variants.

"Hostile but consistent" mutations (`forge_*`) recompute every hash the change invalidates and re-vouch the
manifest in the decision log, so only the deeper checks (parsing, bounds, headers, shapes) can catch them.
`forge_v2_*` do the same to the sharded format (fito-manifest/2 and its per-rank objects). They only ever
break structure; they never forge different values that are structurally valid (no check
could tell those from a real checkpoint)."""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import xxhash

from fito.format.hashing import digest
from fito.ckpt.shard import ALIGN, HEADER, MAGIC
from fito.format.objects import HEADER as OBJECT_HEADER, block_digest
from fito.protocol.layout import attempt_dir

DB = "decisions.sqlite"


@dataclass
class Root:
    path: Path
    attempts: dict[int, str]  # committed step -> attempt id
    outside: Path  # a directory outside the root (link targets)
    seed: int = 0  # picks the variant of a mutation family, so consecutive seeds cover every variant
    rank: int = 0  # whose object the families that damage "the" object damage (a root of several ranks)

    def variant(self, options: list[Any]) -> Any:
        return options[self.seed % len(options)]

    def attempt(self, step: int) -> str:
        return attempt_dir(step, self.attempts[step])

    def shard(self, step: int, rank: int | None = None) -> str:
        return f"{self.attempt(step)}/rank-{self.rank if rank is None else rank:05d}.fito"

    def manifest(self, step: int) -> str:
        return f"{self.attempt(step)}/manifest.json"

    @property
    def steps(self) -> list[int]:
        return sorted(self.attempts)


def _step(rng: random.Random, root: Root) -> int:
    """Mostly the newest step (what restore reads first), sometimes an older one."""
    steps = root.steps
    return steps[-1] if rng.random() < 0.7 else rng.choice(steps[:-1])


def _file(rng: random.Random, root: Root, step: int | None = None) -> str:
    step = _step(rng, root) if step is None else step
    return rng.choice([root.shard(step), root.shard(step), root.manifest(step)])


# ---------------------------------------------------------------- raw damage
def bit_flip(rng: random.Random, root: Root) -> list[str]:
    rel = _file(rng, root)
    data = bytearray((root.path / rel).read_bytes())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    (root.path / rel).write_bytes(bytes(data))
    return [rel]


def truncation(rng: random.Random, root: Root) -> list[str]:
    rel = _file(rng, root)
    p = root.path / rel
    os.truncate(p, rng.randrange(p.stat().st_size))
    return [rel]


def extension(rng: random.Random, root: Root) -> list[str]:
    rel = _file(rng, root)
    with open(root.path / rel, "ab") as f:
        f.write(rng.randbytes(rng.choice([1, 63, 64, 4096])))
    return [rel]


def deletion(rng: random.Random, root: Root) -> list[str]:
    rel = _file(rng, root)
    (root.path / rel).unlink()
    return [rel]


def _other_step(rng: random.Random, root: Root, step: int) -> int:
    return rng.choice([s for s in root.steps if s != step])


def other_epochs_file(rng: random.Random, root: Root) -> list[str]:
    step = _step(rng, root)
    other = _other_step(rng, root, step)
    role = rng.choice(["shard", "manifest"])
    rel, src = getattr(root, role)(step), getattr(root, role)(other)
    shutil.copyfile(root.path / src, root.path / rel)
    return [rel]


def symlink_in_root(rng: random.Random, root: Root) -> list[str]:
    step = _step(rng, root)
    other = _other_step(rng, root, step)
    role = rng.choice(["shard", "manifest"])
    rel = getattr(root, role)(step)
    target = root.path / getattr(root, role)(rng.choice([step, other]))
    keep = root.outside / f"kept-{step}-{role}"
    shutil.copyfile(root.path / rel, keep)  # the link may point at the file's own (moved) bytes
    (root.path / rel).unlink()
    os.symlink(keep if target == root.path / rel else target, root.path / rel)
    return [rel]


def symlink_out_of_root(rng: random.Random, root: Root) -> list[str]:
    rel = _file(rng, root)
    copy = root.outside / Path(rel).name
    shutil.copyfile(root.path / rel, copy)  # the same bytes, but outside the root
    (root.path / rel).unlink()
    os.symlink(copy, root.path / rel)
    return [rel]


def symlinked_attempt_dir(rng: random.Random, root: Root) -> list[str]:
    step = _step(rng, root)
    rel = root.attempt(step)
    moved = root.outside / f"attempt-{step}"
    shutil.move(root.path / rel, moved)
    os.symlink(moved, root.path / rel, target_is_directory=True)
    return [rel]


def directory_instead_of_file(rng: random.Random, root: Root) -> list[str]:
    rel = _file(rng, root)
    (root.path / rel).unlink()
    (root.path / rel).mkdir()
    return [rel]


def swapped_units(rng: random.Random, root: Root) -> list[str]:
    """Two units of the same length trade places inside the shard (headers travel with them)."""
    step = _step(rng, root)
    units = _manifest(root, step)["ranks"][0]["units"]
    by_length: dict[int, list[list[Any]]] = {}
    for u in units:
        by_length.setdefault(u[2], []).append(u)
    a, b = rng.sample(max(by_length.values(), key=len), 2)
    rel = root.shard(step)
    data = bytearray((root.path / rel).read_bytes())
    ua, ub = bytes(data[a[1]:a[1] + a[2]]), bytes(data[b[1]:b[1] + b[2]])
    data[a[1]:a[1] + a[2]], data[b[1]:b[1] + b[2]] = ub, ua
    (root.path / rel).write_bytes(bytes(data))
    return [rel]


def zeroed_header_field(rng: random.Random, root: Root) -> list[str]:
    """One field of one unit header zeroed, the bytes otherwise as written (hashes not recomputed)."""
    step = _step(rng, root)
    u = rng.choice(_manifest(root, step)["ranks"][0]["units"])
    start, size = rng.choice(_HEADER_FIELDS)
    rel = root.shard(step)
    data = bytearray((root.path / rel).read_bytes())
    data[u[1] + start:u[1] + start + size] = bytes(size)
    (root.path / rel).write_bytes(bytes(data))
    return [rel]


_HEADER_FIELDS = [(0, 8), (8, 8), (16, 4), (20, 4), (24, 8), (32, 8)]  # magic epoch rank index length name-hash


# ---------------------------------------------------------------- decision log
def _db(root: Root) -> sqlite3.Connection:
    return sqlite3.connect(root.path / DB, isolation_level=None)


def decision_log_damage(rng: random.Random, root: Root) -> list[str]:
    p = root.path / DB
    how = root.variant(["delete", "truncate", "flip", "garbage", "symlink-out"])
    if how == "delete":
        p.unlink()
    elif how == "truncate":
        os.truncate(p, rng.randrange(p.stat().st_size))
    elif how == "flip":
        data = bytearray(p.read_bytes())
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(data))
    elif how == "garbage":
        p.write_bytes(rng.randbytes(p.stat().st_size))
    else:
        copy = root.outside / DB
        shutil.copyfile(p, copy)
        p.unlink()
        os.symlink(copy, p)
    return [DB]


def decision_record_edit(rng: random.Random, root: Root) -> list[str]:
    step = _step(rng, root)
    other = _other_step(rng, root, step)
    edits = [
        ("manifest", root.manifest(other)), ("manifest", "../../etc/passwd"), ("manifest", "/etc/passwd"),
        ("manifest", ""), ("manifest_hash", "xxh3-128:" + "0" * 32), ("manifest_hash", "md5:00"),
        ("manifest_hash", ""), ("epoch", other), ("epoch", -1), ("epoch", 1 << 62), ("attempt", root.attempts[other]),
        ("attempt", "../x"), ("outcome", "abort"), ("retired", 1), ("seq", -5),
    ]
    column, value = root.variant(edits)
    with _db(root) as db:
        db.execute(f"UPDATE decisions SET {column} = ? WHERE epoch = ? AND outcome = 'commit'", (value, step))
    return [DB]


# ---------------------------------------------------------------- hostile but consistent
def _manifest(root: Root, step: int) -> dict[str, Any]:
    return json.loads((root.path / root.manifest(step)).read_bytes())


def _vouch(root: Root, step: int, data: bytes) -> None:
    """Write `data` as step's manifest and re-vouch its hash in the decision log."""
    (root.path / root.manifest(step)).write_bytes(data)
    with _db(root) as db:
        db.execute("UPDATE decisions SET manifest_hash = ? WHERE epoch = ? AND outcome = 'commit'",
                   (digest("xxh3-128", data), step))


def _deep(depth: int, leaf: str = "0", kind: str = "[") -> str:
    close = {"[": "]", "{": "}"}[kind]
    if kind == "[":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + close * depth


def forge_manifest(rng: random.Random, root: Root) -> list[str]:
    """A manifest rewritten with one hostile change, its hash re-vouched in the decision log."""
    step = root.steps[-1]
    m = _manifest(root, step)
    r0 = m["ranks"][0]
    units = r0["units"]
    i = rng.randrange(len(units))
    big = rng.choice([1 << 31, 1 << 40, (1 << 63) - 1, 1 << 64, 10 ** 30])
    edits: list[Callable[[], Any]] = [
        lambda: _raw(rng.randbytes(rng.randrange(1, 400))),
        lambda: _raw(b"\xff\xfe" + json.dumps(m).encode()),
        lambda: _raw(_deep(2000, kind="[").encode()),
        lambda: _raw(_deep(100_000, kind="{").encode()),
        lambda: r0.__setitem__("units", [*units[:1], DEEP, *units[1:]]),  # a 50,000-deep unit entry
        lambda: r0.__setitem__("size", big),
        lambda: units[i].__setitem__(2, big),
        lambda: (r0.__setitem__("size", big), units[i].__setitem__(2, big - units[i][1])),
        lambda: units[i].__setitem__(1, rng.choice([-1, 1 << 62, r0["size"]])),
        lambda: units[i].__setitem__(rng.choice([1, 2]), rng.choice([True, 1.5, "64", None, [], float("nan")])),
        lambda: units[i].__setitem__(4, _other_step(rng, root, step)),
        lambda: units[i].__setitem__(0, rng.choice(["", "x" * 100_000, "../x", units[(i + 1) % len(units)][0]])),
        lambda: r0.__setitem__("units", units[:i] + units[i + 1:]),
        lambda: r0.__setitem__("units", units + [units[i]]),
        lambda: r0.__setitem__("units", [units[0]] + [[f"u{k}", 0, 1, units[0][3], step] for k in range(50_000)]),
        lambda: (units.__setitem__(i, units[(i + 1) % len(units)][:]), None),
        lambda: m.__setitem__("world_size", rng.choice([0, 2, 10 ** 12, "1", True, None])),
        lambda: m.__setitem__("ranks", rng.choice([[], {}, None, [r0, r0], "x"])),
        lambda: r0.__setitem__("file", rng.choice(["../../etc/passwd", "/etc/passwd", root.shard(_other_step(rng, root, step)), ""])),
        lambda: r0.__setitem__("rank", rng.choice([1, -1, "0", None])),
        lambda: m.__setitem__("hash", rng.choice(["md5", "", None, 7])),
        lambda: m.__setitem__("epoch", rng.choice([_other_step(rng, root, step), "1", None])),
        lambda: m.__setitem__("format", rng.choice(["fito-manifest/2", "", None])),
        lambda: m.__setitem__("ranks", [r0, *([{"rank": 1, "file": r0["file"], "size": 0, "units": []}] * rng.choice([0, 1]))]),
    ]
    result = root.variant(edits)()
    data = result.data if isinstance(result, _raw) else json.dumps(m, allow_nan=True).encode()
    data = data.replace(json.dumps(DEEP).encode(), _deep(50_000).encode())  # json.dumps itself cannot nest that deep
    _vouch(root, step, data)
    return [root.manifest(step), DB]


DEEP = "<deeply nested list>"


class _raw:
    def __init__(self, data: bytes) -> None:
        self.data = data


def _units(root: Root, step: int) -> tuple[dict[str, Any], list[list[Any]], bytes]:
    m = _manifest(root, step)
    return m, m["ranks"][0]["units"], (root.path / root.shard(step)).read_bytes()


def _rebuild(root: Root, step: int, m: dict[str, Any], parts: list[tuple[str, bytes, dict[str, int]]]) -> None:
    """Write step's shard from (name, payload, header overrides), recompute every hash, re-vouch."""
    out, entries = bytearray(), []
    for index, (name, payload, override) in enumerate(parts):
        fields = {"epoch": step, "rank": 0, "index": index, "length": len(payload),
                  "name": xxhash.xxh64_intdigest(name.encode()), **override}
        header = HEADER.pack(MAGIC if "magic" not in override else b"\0" * 8, fields["epoch"], fields["rank"],
                             fields["index"], fields["length"], fields["name"])
        unit = header + payload
        entries.append([name, len(out), len(unit), digest(m["hash"], unit), step])
        out += unit + bytes(-len(unit) % ALIGN)
    (root.path / root.shard(step)).write_bytes(bytes(out))
    m["ranks"][0]["size"], m["ranks"][0]["units"] = len(out), entries
    _vouch(root, step, json.dumps(m).encode())


def _parts(units: list[list[Any]], data: bytes) -> list[tuple[str, bytes, dict[str, int]]]:
    return [(u[0], data[u[1] + HEADER.size:u[1] + u[2]], {}) for u in units]


def forge_header(rng: random.Random, root: Root) -> list[str]:
    """One header field changed (zeroed or pointed elsewhere), every hash recomputed to match."""
    step = root.steps[-1]
    m, units, data = _units(root, step)
    parts = _parts(units, data)
    i = rng.randrange(len(parts))
    field = root.variant(["magic", "epoch", "rank", "index", "length", "name"])
    value = {"magic": 0, "epoch": rng.choice([0, _other_step(rng, root, step), step + 1000]),
             "rank": rng.choice([1, 0xFFFFFFFF]), "index": rng.choice([i + 1, 0xFFFFFFFF]),
             "length": rng.choice([0, (1 << 64) - 1, 1 << 40]), "name": 0}[field]  # never the true value
    parts[i] = (parts[i][0], parts[i][1], {field: value})
    _rebuild(root, step, m, parts)
    return [root.shard(step), root.manifest(step), DB]


def forge_state_tree(rng: random.Random, root: Root) -> list[str]:
    """The state tree (unit 0) replaced by hostile JSON, every hash recomputed."""
    step = root.steps[-1]
    m, units, data = _units(root, step)
    parts = _parts(units, data)
    doc = json.loads(parts[0][1])
    tree = doc["tree"]
    first = _first_tensor(tree)
    edits: list[Callable[[], Any]] = [
        lambda: _raw(rng.randbytes(rng.randrange(1, 300))),
        lambda: _raw(('{"format":"%s","tree":%s}' % (doc["format"], _deep(2000, '{"v":0}'))).encode()),
        lambda: _raw(('{"format":"%s","tree":%s}' % (doc["format"], _deep(200_000, '{"v":0}'))).encode()),
        lambda: _raw(('{"format":"%s","tree":{"d":{"model":%s}}}' % (doc["format"], '{"l":[' * 5000 + ']}' * 5000)).encode()),
        lambda: doc.__setitem__("format", "fito-state/9"),
        lambda: first.__setitem__("shape", rng.choice([[1 << 40, 1 << 40], [-1], [3.5], ["2"], [0], [1 << 62] * 4])),
        lambda: first.__setitem__("dtype", rng.choice(["int32", "float64", "object", "O", "<U8", "", None, "complex128"])),
        lambda: first.__setitem__("T", rng.choice([-1, 10 ** 9, "0", None, 1.0])),
        lambda: first.__setitem__("shape", list(reversed(first["shape"])) + [1]),
        lambda: tree.__setitem__("d", rng.choice([[], "x", None, {"model": {"v": "not a module"}}])),
        lambda: tree["d"].__setitem__("extra", {"T": first["T"], "dtype": first["dtype"], "shape": first["shape"]}),
        lambda: tree.__setitem__("l", []),
    ]
    result = root.variant(edits)()
    payload = result.data if isinstance(result, _raw) else json.dumps(doc).encode()
    parts[0] = (parts[0][0], payload, {})
    _rebuild(root, step, m, parts)
    return [root.shard(step), root.manifest(step), DB]


def _first_tensor(node: Any) -> dict[str, Any]:
    if isinstance(node, dict):
        if "T" in node:
            return node
        for v in node.values():
            found = _first_tensor(v)
            if found:
                return found
    if isinstance(node, list):
        for v in node:
            found = _first_tensor(v)
            if found:
                return found
    return {}


def forge_swapped_entries(rng: random.Random, root: Root) -> list[str]:
    """Two manifest entries of the same length trade names (offsets and hashes stay true), re-vouched."""
    step = root.steps[-1]
    m = _manifest(root, step)
    units = m["ranks"][0]["units"]
    by_length: dict[int, list[int]] = {}
    for k, u in enumerate(units):
        by_length.setdefault(u[2], []).append(k)
    a, b = rng.sample(max(by_length.values(), key=len), 2)
    units[a][0], units[b][0] = units[b][0], units[a][0]
    _vouch(root, step, json.dumps(m).encode())
    return [root.manifest(step), DB]


# ---------------------------------------------------------------- hostile but consistent, fito-manifest/2
def _v2_blocks(root: Root, step: int, m: dict[str, Any], offset: int, length: int, rank: int = 0) -> list[str]:
    """The true block hashes of bytes [offset, offset + length) of step's object of `rank`."""
    data = (root.path / root.shard(step, rank)).read_bytes()[offset:offset + length]
    bb = m["block_bytes"]
    return [block_digest(m["hash"], data[b:b + bb]) for b in range(0, max(len(data), 1), bb)]


def _v2_tensor(rng: random.Random, m: dict[str, Any], min_elements: int = 1, one_chunk: bool = False) -> dict[str, Any]:
    """A tensor of the manifest with at least `min_elements` elements and a non-empty shape (of one chunk)."""
    fits = [t for t in m["tensors"] if t["shape"] and math.prod(t["shape"]) >= min_elements
            and (len(t["chunks"]) == 1 or not one_chunk)]
    return rng.choice(fits)


_V2_BYTES = {"float32": 4, "int32": 4, "float64": 8, "int64": 8, "float16": 2, "bfloat16": 2, "uint8": 1, "int8": 1, "bool": 1}


def forge_v2_manifest(rng: random.Random, root: Root) -> list[str]:
    """The newest step's fito-manifest/2 rewritten with one structural change that every hash agrees with:
    block hashes recomputed from the object's true bytes where the change moves a range, the manifest
    re-vouched in the decision log."""
    step = root.steps[-1]
    m = _manifest(root, step)
    other = _other_step(rng, root, step)
    big = rng.choice([1 << 40, (1 << 62) - 64, 10 ** 30])

    def overlap() -> None:  # two chunks covering the tensor's volume, but overlapping (so some elements never)
        t = _v2_tensor(rng, m, 2, one_chunk=True)
        (c,) = t["chunks"]
        n, k = t["shape"][0], rng.randrange(1, t["shape"][0]) if t["shape"][0] > 1 else 1
        if n == 1:  # a [1, ...] tensor: overlap along its last dimension instead
            t["shape"], c["sizes"] = [math.prod(t["shape"])], [math.prod(t["shape"])]
            n, k = t["shape"][0], rng.randrange(1, t["shape"][0])
        row = math.prod(t["shape"][1:]) * _V2_BYTES[t["dtype"]]
        a = {**c, "offsets": [0] * len(t["shape"]), "sizes": [k, *t["shape"][1:]], "length": k * row}
        b = {**c, "offsets": [0] * len(t["shape"]), "sizes": [n - k, *t["shape"][1:]], "length": (n - k) * row}
        a["blocks"] = _v2_blocks(root, step, m, a["offset"], a["length"], c["rank"])
        b["blocks"] = _v2_blocks(root, step, m, b["offset"], b["length"], c["rank"])
        t["chunks"] = [a, b]
        _v2_item_count(root, step, +1, c["rank"])  # one more piece: the object header made to agree
        touched.append(root.shard(step, c["rank"]))

    def outside() -> None:  # a chunk shifted past the end of its tensor
        t = _v2_tensor(rng, m)
        t["chunks"][0]["offsets"] = [rng.choice([1, big]), *t["chunks"][0]["offsets"][1:]]

    def dtype() -> None:  # another dtype of the same element size: lengths and hashes stay true
        t = _v2_tensor(rng, m)
        size = _V2_BYTES[t["dtype"]]
        t["dtype"] = rng.choice([d for d, n in _V2_BYTES.items() if n == size and d != t["dtype"]])

    def shape() -> None:  # the same elements in another shape (chunk sizes along), or a different volume
        t = _v2_tensor(rng, m, 2)
        n = math.prod(t["shape"])
        new = rng.choice([[n], [1, n], [n, 1]] + ([list(reversed(t["shape"]))] if len(t["shape"]) > 1 else []))
        if new == t["shape"]:
            new = [1, *new]
        t["shape"] = new
        t["chunks"][0]["offsets"], t["chunks"][0]["sizes"] = [0] * len(new), list(new)

    def blocks() -> None:  # a block-hash list of the wrong length (every hash a well-formed one)
        t = _v2_tensor(rng, m)
        c = t["chunks"][0]
        c["blocks"] = rng.choice([[], c["blocks"] * 2, c["blocks"] + ["0" * len(c["blocks"][0])]])

    def other_object() -> None:  # the object path of another committed step (its size too)
        o = m["objects"][root.rank]
        o["file"] = root.shard(other)
        o["size"] = (root.path / root.shard(other)).stat().st_size

    def huge_length() -> None:  # a huge declared length, with a matching object size or chunk shape
        t = _v2_tensor(rng, m)
        c = t["chunks"][0]
        how = rng.choice(["length", "object", "both"])
        if how in ("object", "both"):
            m["objects"][c["rank"]]["size"] = big
        if how in ("length", "both"):
            c["length"] = big

    def moved_value() -> None:  # a value's piece pointed at another value's bytes, hashes true for them
        a, b = rng.sample(m["values"], 2)
        a.update({k: b[k] for k in ("rank", "offset", "length", "blocks")})

    def dropped_item() -> None:  # a tensor removed from the index, the object header's item count made to match
        t = rng.choice(m["tensors"])
        m["tensors"].remove(t)
        for c in t["chunks"]:  # a DTensor's chunks are items of several ranks' objects
            _v2_item_count(root, step, -1, c["rank"])
            touched.append(root.shard(step, c["rank"]))

    def chunk_rank() -> None:  # a chunk said to be in a rank's object that does not exist, or a tag of another step
        c = _v2_tensor(rng, m)["chunks"][0]
        c.update(rng.choice([{"rank": len(m["objects"])}, {"tag": other}, {"offset": c["offset"] + 1}]))

    touched = [root.manifest(step), DB]
    edit = root.variant([overlap, outside, dtype, shape, blocks, other_object, huge_length, moved_value, dropped_item,
                         chunk_rank])
    edit()
    _vouch(root, step, json.dumps(m).encode())
    return touched


def _v2_item_count(root: Root, step: int, delta: int, rank: int = 0) -> None:
    rel = root.shard(step, rank)
    data = bytearray((root.path / rel).read_bytes())
    magic, epoch, rank, items, attempt = OBJECT_HEADER.unpack_from(data)
    data[:OBJECT_HEADER.size] = OBJECT_HEADER.pack(magic, epoch, rank, items + delta, attempt)
    (root.path / rel).write_bytes(bytes(data))


def forge_v2_object_header(rng: random.Random, root: Root) -> list[str]:
    """One field of the newest step's object header (of `Root.rank`) changed to a value it never has; the blocks (which
    hash the items, not the header), the size and the manifest stay as written."""
    step = root.steps[-1]
    rel = root.shard(step)
    data = bytearray((root.path / rel).read_bytes())
    magic, epoch, rank, items, attempt = OBJECT_HEADER.unpack_from(data)
    fields = {"magic": rng.choice([b"\0" * 8, b"FITOOBJ1", MAGIC]), "epoch": rng.choice([0, _other_step(rng, root, step), step + 1000]),
              "rank": rng.choice([1 - min(rank, 1), 0xFFFFFFFF]), "items": rng.choice([items + 1, items - 1, 0, 0xFFFFFFFF]),
              "attempt": rng.choice([0, attempt ^ 1, xxhash.xxh64_intdigest(root.attempts[_other_step(rng, root, step)].encode())])}
    values = {"magic": magic, "epoch": epoch, "rank": rank, "items": items, "attempt": attempt}
    field = root.variant(list(fields))
    values[field] = fields[field]
    data[:OBJECT_HEADER.size] = OBJECT_HEADER.pack(*values.values())
    (root.path / rel).write_bytes(bytes(data))
    return [rel]


MUTATIONS: dict[str, Callable[[random.Random, Root], list[str]]] = {
    f.__name__: f for f in (
        bit_flip, truncation, extension, deletion, other_epochs_file, symlink_in_root, symlink_out_of_root,
        symlinked_attempt_dir, directory_instead_of_file, swapped_units, zeroed_header_field,
        decision_log_damage, decision_record_edit, forge_manifest, forge_header, forge_state_tree,
        forge_swapped_entries, forge_v2_manifest, forge_v2_object_header,
    )
}
