"""Unit-hash throughput: xxh3-128 vs blake3 (1 thread and all threads) vs a plain memcpy, on one buffer.

    python benchmarks/hashing.py [--mib 512] [--repeats 5]

Figures go to BENCHMARKS.md ("Hashing"). fito's default is the faster one; blake3 stays an option."""
from __future__ import annotations

import argparse
import os
import statistics
import time

import blake3
import numpy as np
import xxhash


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    data = np.frombuffer(os.urandom(args.mib << 20), dtype=np.uint8)
    dst = np.empty_like(data)
    methods = {
        "xxh3-128": lambda: xxhash.xxh3_128(data).digest(),
        "blake3 (1 thread)": lambda: blake3.blake3(data).digest(),
        "blake3 (all threads)": lambda: blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest(),
        "memcpy (numpy copyto)": lambda: np.copyto(dst, data),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every method alike
        for name, fn in methods.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["xxh3-128"])
    print(f"| method | GB/s (median of {args.repeats}, {args.mib} MiB) | time vs xxh3-128 |")
    print("|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {data.nbytes / med / 1e9:.2f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
