"""One rank of the multi-rank crash-state check (`fito.testing.crashcuts`), run by `fito.testing.dist.run_ranks`.

    record WORKDIR --steps 1,2 --keep 1 --size 16
        saves every step but the last normally (the durable start, snapshotted by rank 0), then saves the last
        through a `RecordingStorage` and `RecordingStore` handed to the Checkpointer; writes rank-R.json.
    restore LISTFILE OUTFILE --size 16
        restores every root named in LISTFILE (one per line) with a fresh Checkpointer at this world size and
        writes one JSON line per root: the step returned or the error class, and every value found."""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from fito.ckpt import Checkpointer
from fito.coord.sqlite import SqliteDecisionStore
from fito.errors import FitoError
from fito.testing.crashstates import snapshot_dir, steps_in, training_state
from fito.model.posix_crash import DIR
from fito.storage.localfs import LocalFS
from fito.testing.recording import Recording, RecordingStorage, RecordingStore, store_rows

STORE_FILE = "decisions-recorded.sqlite"  # beside the root, not in it: the crash states model it on its own


def record(workdir: Path, steps: list[int], keep: int, size: int) -> None:
    rank = dist.get_rank()
    root = workdir / "ckpt"
    store = SqliteDecisionStore(workdir / STORE_FILE)
    try:
        with Checkpointer(root, keep=keep, store=store, progress=False) as ck:
            for s in steps[:-1]:
                ck.save(s, training_state(s, size=size))
        dist.barrier()
        if rank == 0:
            initial = {p: v if v == DIR else {"b64": base64.b64encode(v).decode()} for p, v in snapshot_dir(root).items()}
            (workdir / "initial.json").write_text(json.dumps({"files": initial, "store": store_rows(store)}))
        dist.barrier()  # nothing is recorded before the snapshot is taken
        rec = Recording()
        with Checkpointer(RecordingStorage(LocalFS(root), rec), keep=keep, store=RecordingStore(store, rec),
                          progress=False) as ck:
            ck.save(steps[-1], training_state(steps[-1], size=size))
        (workdir / f"rank-{rank}.json").write_text(rec.to_json())
        dist.barrier()
    finally:
        store.close()


def restore(listfile: Path, outfile: Path, size: int) -> None:
    lines = []
    for root in listfile.read_text().split():
        into = training_state(-1, size=size)
        try:
            with Checkpointer(root, progress=False) as ck:
                got: Any = ck.restore(into)
            outcome = "restored"
        except FitoError as exc:
            got, outcome = None, f"refused: {type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001 - not a FitoError: recorded, and the check fails on it
            got, outcome = None, f"error: {type(exc).__name__}: {exc}"[:300]
        lines.append(json.dumps({"root": root, "outcome": outcome, "step": got, "values": sorted(steps_in(into))}))
    outfile.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fito.testing.crash_ranks")
    ap.add_argument("mode", choices=("record", "restore"))
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--steps", default="1,2")
    ap.add_argument("--keep", type=int, default=1)
    ap.add_argument("--size", type=int, default=16)
    args = ap.parse_args(argv)
    dist.init_process_group("gloo")
    try:
        if args.mode == "record":
            record(Path(args.paths[0]), [int(s) for s in args.steps.split(",")], args.keep, args.size)
        else:
            out = Path(args.paths[1].replace("{rank}", str(dist.get_rank())))
            restore(Path(args.paths[0]), out, args.size)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main(sys.argv[1:]))
