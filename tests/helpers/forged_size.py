"""One process of tests/test_forged_sizes.py: save a small state, forge one value's (or tensor's) length in the
manifest so it claims N GiB, extend the object to match (a sparse file, so the real size agrees), re-vouch the
manifest in the decision log, then restore under an address-space limit and print one JSON line: the class and
message of the refusal and the growth of the peak RSS. argv: root, "value"|"tensor", GiB, "ckpt"|"dcp"."""
from __future__ import annotations

import json
import os
import resource
import sqlite3
import sys
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import fito
import fito.dcp
from fito.format.hashing import digest

AS_LIMIT = 2 << 30  # bytes of address space for the restore; the forged claims are above it


def forge(root: Path, what: str, claim: int) -> str:
    db = sqlite3.connect(root / "decisions.sqlite", isolation_level=None)
    (manifest,) = db.execute("SELECT manifest FROM decisions WHERE outcome = 'commit'").fetchone()
    m = json.loads((root / manifest).read_bytes())
    if what == "value":
        piece = max(m["values"], key=lambda v: v["length"])
    else:  # a tensor's length (its shape unchanged: a shape that disagrees with the target is refused as such)
        piece = next(t for t in m["tensors"] if t["dtype"] == "float32")["chunks"][0]
    piece["length"] = claim
    piece["blocks"] = [piece["blocks"][0]] * -(-claim // m["block_bytes"])  # as many well-formed hashes as blocks
    obj = m["objects"][piece["rank"]]
    obj["size"] = piece["offset"] + claim
    os.truncate(root / obj["file"], obj["size"])  # sparse: the real size agrees with the manifest
    data = json.dumps(m).encode()
    (root / manifest).write_bytes(data)
    db.execute("UPDATE decisions SET manifest_hash = ? WHERE outcome = 'commit'", (digest("xxh3-128", data),))
    db.close()
    return obj["file"]


def main() -> int:
    root, what, gib, via = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    state = {"w": torch.arange(1000, dtype=torch.float32), "meta": {"a": list(range(50))}}
    if via == "ckpt":
        ck = fito.Checkpointer(root, progress=False)
        ck.save(1, state)
        ck.close()
    else:
        dcp.save(state, storage_writer=fito.dcp.Writer(root, 1), planner=fito.dcp.SavePlanner())
    obj = forge(root, what, int(gib * (1 << 30)))
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    into = {"w": torch.zeros(1000), "meta": None if via == "ckpt" else {"a": None}}
    try:
        if via == "ckpt":
            fito.Checkpointer(root, progress=False).restore(into)
        else:
            with fito.dcp.Reader(root) as reader:
                dcp.load(into, storage_reader=reader, planner=fito.dcp.LoadPlanner())
        out = {"outcome": "restored"}
    except BaseException as exc:  # noqa: BLE001 - reported: the test asserts on the class
        if isinstance(exc, CheckpointException):  # plain dcp.load hands each rank's exception over in this
            exc = next(iter(exc.failures.values()))
            exc = exc[0] if isinstance(exc, tuple) else exc
        out = {"outcome": type(exc).__name__, "corrupt": isinstance(exc, fito.CheckpointCorruptError), "message": str(exc)}
    out["object"] = obj
    out["rss_growth"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
