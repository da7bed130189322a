"""Benchmark of fleet epochs and decision commits on the three backends, measured side by side in one run:
embedded SQLite, etcd with 1 member, etcd with 3 members (all on this machine, loopback, one disk).

- epoch transition commit latency (EpochCoordinator.transition: read current + fenced transaction)
- checkpoint decision commit latency (DecisionStore.publish with the coordinator's fence)
- watch latency: from the commit returning until 2 followers have switched
- time to commit after a leader kill (3 members): the first transition after SIGKILL of the leader
- overhead of epoch-tagged collectives (gloo, 2 processes, all_reduce)

Run: python benchmarks/fleet.py [--quick]; writes benchmarks/results/fleet.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fito.coord.base import Decision
from fito.coord.collectives import EpochTaggedCollectives
from fito.coord.etcd import EtcdDecisionStore
from fito.coord.etcd_fleet import EtcdFleetStore
from fito.testing.etcd import EtcdCluster, free_ports
from fito.coord.fleet_base import EpochCoordinator, EpochFollower
from fito.coord.sqlite import SqliteDecisionStore
from fito.coord.sqlite_fleet import SqliteFleetStore

OUT = Path(__file__).resolve().parent / "results" / "fleet.md"


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.2f} / {pct(xs, 99) * 1e3:.2f}"


def bench_backends(backends: dict[str, tuple], n: int) -> dict[str, dict[str, list[float]]]:
    """Round-robin over the backends, one commit each in turn, so background load hits all alike."""
    out: dict[str, dict[str, list[float]]] = {name: {"transition": [], "publish": [], "watch": []} for name in backends}
    coords = {name: EpochCoordinator(mk_fleet()) for name, (mk_fleet, _) in backends.items()}
    decs = {name: mk_dec() for name, (_, mk_dec) in backends.items()}
    fences = {name: d.acquire_fence() for name, d in decs.items()}
    for i in range(n):
        for name in backends:
            t0 = time.perf_counter()
            coords[name].transition(f"v{i}")
            out[name]["transition"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            decs[name].publish(Decision(epoch=i, attempt="a", outcome="commit", manifest="m", decision_id=f"d{i}"),
                               fences[name])
            out[name]["publish"].append(time.perf_counter() - t0)
    followers = {name: [EpochFollower(mk_fleet(), f"n{k}") for k in range(2)]
                 for name, (mk_fleet, _) in backends.items()}
    for i in range(max(10, n // 10)):
        for name in backends:
            d = coords[name].transition(f"w{i}")
            t0 = time.perf_counter()
            while any(f.epoch < d.epoch for f in followers[name]):
                time.sleep(0.0005)
            out[name]["watch"].append(time.perf_counter() - t0)
    for fs in followers.values():
        for f in fs:
            f.close()
    return out


def bench_leader_kill(kills: int) -> list[float]:
    out = []
    with EtcdCluster(size=3) as cluster:
        store = EtcdFleetStore(cluster.endpoints, request_timeout=1.0, deadline=15.0)
        coord = EpochCoordinator(store)
        for _ in range(kills):
            coord.transition("warm")
            leader = cluster.leader()
            cluster.kill(leader)
            t0 = time.perf_counter()
            coord.transition("after-kill")
            out.append(time.perf_counter() - t0)
            cluster.restart(leader)
            cluster.wait_healthy()
    return out


def _coll_worker(rank: int, port: int, reps: int, numel: int, q) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    tagged = EpochTaggedCollectives(lambda: 1)
    t = torch.ones(numel)
    ops = {"plain": lambda: dist.all_reduce(t), "tagged": lambda: tagged.all_reduce(t)}
    res: dict[str, list[float]] = {"plain": [], "tagged": []}
    for fn in ops.values():
        for _ in range(5):
            fn()
    for _ in range(reps):  # alternate, so both see the same background load
        for name, fn in ops.items():
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            res[name].append(time.perf_counter() - t0)
    if rank == 0:
        q.put(res)
    dist.destroy_process_group()


def bench_collectives(reps: int, numel: int) -> dict[str, list[float]]:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.spawn(_coll_worker, args=(free_ports(1)[0], reps, numel, q), nprocs=2, join=True)
    return q.get()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=300, help="commits per backend")
    ap.add_argument("--kills", type=int, default=5)
    args = ap.parse_args()
    n, kills = (50, 2) if args.quick else (args.n, args.kills)

    with tempfile.TemporaryDirectory() as tmp, EtcdCluster(size=1) as one, EtcdCluster(size=3) as three:
        backends = {
            "SQLite (embedded, WAL, synchronous=FULL)": (
                lambda: SqliteFleetStore(Path(tmp) / "fleet.sqlite"), lambda: SqliteDecisionStore(Path(tmp) / "d.sqlite")),
            "etcd 3.4, 1 member": (lambda: EtcdFleetStore(one.endpoints), lambda: EtcdDecisionStore(one.endpoints)),
            "etcd 3.4, 3 members": (lambda: EtcdFleetStore(three.endpoints), lambda: EtcdDecisionStore(three.endpoints)),
        }
        rows = bench_backends(backends, n)
    kill = bench_leader_kill(kills)
    coll = bench_collectives(reps=200 if not args.quick else 50, numel=256 * 1024)

    lines = [
        "## Fleet epochs and decision commits (benchmarks/fleet.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other work), Python {platform.python_version()}, torch {torch.__version__}; "
        f"every server on 127.0.0.1, data on one ext4 disk; etcd with --heartbeat-interval 50 --election-timeout 500. "
        f"{n} sequential commits per backend, interleaved across backends in one run.",
        "",
        "| backend | epoch transition commit, median / p99 (ms) | checkpoint decision publish, median / p99 (ms) "
        "| watch: commit -> 2 followers switched, median / p99 (ms) |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {ms(r['transition'])} | {ms(r['publish'])} | {ms(r['watch'])} |")
    lines += [
        "",
        f"Leader killed (SIGKILL) in the 3-member cluster, then one transition: time to commit "
        f"{', '.join(f'{x * 1e3:.0f}' for x in kill)} ms ({kills} kills; median {statistics.median(kill) * 1e3:.0f} ms). "
        "It includes the client noticing the dead member, failing over, and etcd electing a new leader.",
        "",
        f"Epoch-tagged all_reduce (gloo, 2 processes, {256 * 1024} float32 = 1 MiB): plain "
        f"{statistics.median(coll['plain']) * 1e3:.3f} ms, tagged {statistics.median(coll['tagged']) * 1e3:.3f} ms "
        f"(median of {len(coll['plain'])}; the tag check is one extra all_reduce(MAX) of 6 int64).",
        "",
        "SQLite's watch is a 10 ms poll (no notifications), so its watch latency is the poll period; etcd's is a "
        "real watch stream. Transition = linearizable read of the current epoch + one fenced transaction "
        "(its result read back inside the same transaction on etcd). Backends are measured round-robin, "
        "one commit each in turn, so background load on the shared machine hits all of them alike. "
        "Absolute figures move 2-10x between runs on this shared 2-core machine (SQLite transition medians from "
        "0.4 to 4 ms were seen); compare rows of one run.",
    ]
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
