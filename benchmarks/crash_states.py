"""Crash states of a real 2-rank save (fito.testing.crashcuts): one recording, checked under each bound.

The suite runs the first row (tests/test_crash_states_multirank.py); this runs it and the full bound: every
prefix of every rank's log, with 3 torn prefixes + the zero tail per un-fsynced file. Each distinct crash state
(disk + decision log) is restored at world size 2 (gloo, 2 processes) and at world size 1.

Usage: python benchmarks/crash_states.py [--quick] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from fito.testing.crashcuts import check_recorded, record_multirank_save

CONFIGS = [("boundaries", 1, "prefixes at the durability boundaries, 1 torn prefix (the suite's)"),
           ("all", 1, "every prefix, 1 torn prefix"),
           ("all", 3, "every prefix, 3 torn prefixes (full)")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the suite's bound only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fito-bench-crashcuts-"))
    rows, out = [], []
    try:
        t0 = time.perf_counter()
        initial, store, recs = record_multirank_save(workdir)
        record_s = time.perf_counter() - t0
        for points, cuts, what in CONFIGS[:1] if args.quick else CONFIGS:
            t0 = time.perf_counter()
            r = check_recorded(workdir, initial, store, recs, points=points, cuts=cuts)
            total = time.perf_counter() - t0
            out.append({"config": what, "record_seconds": round(record_s, 2), "total_seconds": round(total, 2),
                        **r.to_json()})
            o2, o1 = r.outcomes[2], r.outcomes[1]
            fmt = lambda o: " / ".join(str(o[k]) for k in ("restored new", "restored previous", "nothing committed", "refused"))  # noqa: E731
            rows.append(f"| {what} | {' + '.join(map(str, r.ops))} | {r.cuts} | {r.states} | {r.seconds['enumerate']:.1f} "
                        f"| {r.seconds['restore_ws2']:.1f} | {r.seconds['restore_ws1']:.1f} | {total:.1f} "
                        f"| {fmt(o2)} | {fmt(o1)} | {len(r.violations)} |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"Run: `python benchmarks/crash_states.py` on {platform.machine()}, {os.cpu_count()} cores (shared), "
          f"Python {platform.python_version()}, torch {torch.__version__}; recording the 2-rank save took {record_s:.1f} s.\n")
    print("| bound | ops per rank | cuts | distinct crash states | enumerate s | restore ws 2 s | restore ws 1 s | total s "
          "| ws 2: new / previous / nothing / refused | ws 1: new / previous / nothing / refused | violations |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
