"""Mutations only a root written by several ranks has, for tests/test_mutation_fuzz_multirank.py (same contract
as tests/helpers/mutations.py: a seeded `random.Random` and a `Root`, returns the root-relative names
touched; `Root.rank` picks whose object or copy is damaged, `Root.seed` the variant).

Every forgery here keeps each hash true for the bytes it points at and re-vouches the manifest; what it
breaks is a rule of how ranks write: each rank writes its own object, its own copy of a rank-local entry,
and each item exactly once (no two names share bytes). Swapping two same-length chunks of one tensor between
each other is left out: nothing in the format names a chunk's bytes, so that is a value forgery no reader
could tell from a real checkpoint (like rewriting the bytes and their hashes)."""
from __future__ import annotations

import json
import random
from typing import Any

from mutations import Root, _manifest, _step, _vouch

PIECE = ("rank", "offset", "length", "blocks")  # a chunk or value record's reference to its bytes (tag stays)


def swapped_rank_objects(rng: random.Random, root: Root) -> list[str]:
    """The two ranks' objects of one step trade places; in one variant the manifest's object sizes are made
    to agree (re-vouched), so only the objects' own headers and block hashes can tell."""
    step = _step(rng, root)
    a, b = root.path / root.shard(step, 0), root.path / root.shard(step, 1)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    touched = [root.shard(step, 0), root.shard(step, 1)]
    if root.variant(["files", "sizes"]) == "sizes":
        m = _manifest(root, step)
        m["objects"][0]["size"], m["objects"][1]["size"] = len(data_b), len(data_a)
        _vouch(root, step, json.dumps(m).encode())
        touched += [root.manifest(step), "decisions.sqlite"]
    return touched


def _records(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every name of the manifest -> its piece record (a value, or a tensor's single chunk)."""
    out = {v["fqn"]: v for v in m["values"]}
    out.update({t["fqn"]: t["chunks"][0] for t in m["tensors"] if len(t["chunks"]) == 1})
    return out


def _entry(name: str) -> str:
    """The entry a per-rank item name (without its `__rank__/<r>/`) belongs to: `__fito__/<entry>` or `<entry>/..`."""
    parts = name.split("/")
    return parts[1] if parts[0] == "__fito__" else parts[0]


def rank_local_copy_replaced(rng: random.Random, root: Root) -> list[str]:
    """Rank r's copy of one rank-local entry pointed at rank 1-r's bytes (its document, tensors and packs), or
    the two ranks' copies swapped; every hash true for the bytes pointed at, the manifest re-vouched."""
    step = _step(rng, root)
    m = _manifest(root, step)
    records = _records(m)
    entry, how = root.variant([(e, h) for h in ("replaced", "swapped") for e in ("rng", "data", "mine")])
    mine, theirs = f"__rank__/{root.rank}/", f"__rank__/{1 - root.rank}/"
    names = [n for n in records if n.startswith(mine) and _entry(n.removeprefix(mine)) == entry]
    assert names, f"no rank-local copy of {entry!r} in {sorted(records)}"
    for name in names:
        ours, other = records[name], records[theirs + name.removeprefix(mine)]
        saved = {k: ours[k] for k in PIECE}
        ours.update({k: other[k] for k in PIECE})
        if how == "swapped":
            other.update(saved)
    _vouch(root, step, json.dumps(m).encode())
    return [root.manifest(step), "decisions.sqlite"]


def dtensor_chunk_wrong_rank(rng: random.Random, root: Root) -> list[str]:
    """A DTensor chunk of the newest step claimed by the other rank: only its rank changed (the offset now in
    the other object), or pointed at the other chunk's bytes, or at another item of the same length in the
    other rank's object; hashes true for the bytes pointed at, the manifest re-vouched."""
    step = root.steps[-1]
    m = _manifest(root, step)
    sharded = [t for t in m["tensors"] if len({c["rank"] for c in t["chunks"]}) == 2]
    how = root.variant(["rank", "other chunk", "other item"])
    pairs = [(c, r) for t in sharded for c in t["chunks"] for r in _records(m).values()
             if r["rank"] != c["rank"] and r["length"] == c["length"]]
    if how == "other item" and not pairs:  # no item of a chunk's length in the other object (a fito.dcp root)
        how = "rank"
    if how == "rank":
        c = rng.choice(rng.choice(sharded)["chunks"])
        c["rank"] = 1 - c["rank"]
    elif how == "other chunk":
        t = rng.choice([t for t in sharded if t["chunks"][0]["length"] == t["chunks"][1]["length"]])
        i = rng.randrange(2)
        t["chunks"][i].update({k: t["chunks"][1 - i][k] for k in PIECE})
    else:
        c, r = rng.choice(pairs)
        c.update({k: r[k] for k in PIECE})
    _vouch(root, step, json.dumps(m).encode())
    return [root.manifest(step), "decisions.sqlite"]


MULTIRANK_MUTATIONS = {f.__name__: f for f in (swapped_rank_objects, rank_local_copy_replaced, dtensor_chunk_wrong_rank)}
