"""Crash states of a real multi-rank save: every combination of per-rank crash prefixes, the real restore on each.

1. Record (`fito.testing.crash_ranks record`, real processes joined by gloo): each rank saves through a
   `RecordingStorage` over the shared root and a `RecordingStore`; each rank's log carries when each operation
   ran (CLOCK_MONOTONIC, one clock for the processes of one machine).
2. Cut: a power failure of the machine stops every rank at once, each after some prefix of its own log. The
   prefixes of different ranks combine freely, except across a decision-store transaction: an operation that
   ended before a transaction began is in the cut if the transaction is, and one that began after a
   transaction ended is in the cut only if the transaction is. (Every rank waits in a collective around each
   decision -- READY before the commit, the outcome after it -- so real-time order against a transaction is
   causal order; between two transactions the ranks' operations are concurrent and every interleaving counts.)
   The included operations are replayed in the order they completed (one interleaving of them: LocalFS's
   operations on different objects commute, and `makedirs` is replayed against the model's own view).
3. Enumerate each cut's crash states with the one POSIX crash model (`fito.model.posix_crash`), deduplicated
   by the resulting disk and decision log; materialise each; restore each at world size 2 (`fito.testing.
   crash_ranks restore`, one process group for all of them) and at world size 1 (in this process).
4. Check, on every state and world size: every rank returns the same answer; a restored state holds one
   step's values only (zero mixed); a refused restore leaves the caller's state untouched; the new step is
   restored if its commit is in the durable log (zero lost acknowledged steps: its save returned on every rank
   only after that record was durable); otherwise the previous committed step is.

The bound: `points="all"`: every prefix of every rank; `points="boundaries"`: the prefixes just before and
just after each durability operation (makedirs, fsync of a file or directory, a decision transaction) and the
empty and whole logs -- the crash states of a point between two writes of one object are the torn-write
outcomes at the point before its fsync. Per un-fsynced file, `cuts` prefixes of its un-fsynced bytes plus the
zero tail (posix_crash rule 2)."""
from __future__ import annotations

import base64
import heapq
import itertools
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from fito.commit.decision import read_committed
from fito.errors import FitoError
from fito.testing.crashstates import materialise
from fito.model.posix_crash import DIR, CrashState, LogicalFS, Op
from fito.testing.crash_ranks import restore
from fito.testing.dist import run_ranks
from fito.testing.recording import Recording

Points = Literal["all", "boundaries"]
DURABILITY = ("makedirs", "fsync_file", "fsync_dir", "store")
OUTCOMES = ("restored new", "restored previous", "nothing committed", "refused")


def crash_points(rec: Recording, points: Points) -> list[int]:
    """The prefix lengths of one rank's log the bound keeps."""
    n = len(rec.ops)
    if points == "all":
        return list(range(n + 1))
    keep = {0, n}
    for i, op in enumerate(rec.ops):
        if op.kind in DURABILITY:
            keep.update((i, i + 1))
    return sorted(keep)


def each_cut(recs: list[Recording], points: Points = "all") -> Iterator[tuple[int, ...]]:
    """Every combination of per-rank prefixes that respects the order of decision transactions (see 2. above)."""
    rules = []  # (rank of the transaction, its index, other rank, must-include count, may-include count)
    for a, rec in enumerate(recs):
        for x, op in enumerate(rec.ops):
            if op.kind != "store":
                continue
            start, end = rec.spans[x]
            for b, other in enumerate(recs):
                if b != a:
                    before = sum(1 for _, e in other.spans if e < start)
                    after = next((i for i, (s, _) in enumerate(other.spans) if s > end), len(other.ops))
                    rules.append((a, x, b, before, after))
    for cut in itertools.product(*(crash_points(r, points) for r in recs)):
        if all(cut[b] >= before if x < cut[a] else cut[b] <= after for a, x, b, before, after in rules):
            yield cut


def merged(recs: list[Recording], cut: tuple[int, ...]) -> list[Op]:
    """The operations a cut includes, in the order they completed."""
    streams = [[(rec.spans[i][1], r, i, rec.ops[i]) for i in range(n)] for r, (rec, n) in enumerate(zip(recs, cut))]
    return [op for *_, op in heapq.merge(*streams)]


def each_multirank_state(initial: dict[str, Any], store: tuple[tuple, ...], recs: list[Recording], *,
                         points: Points = "all", cuts: int = 1) -> Iterator[tuple[tuple[int, ...], CrashState]]:
    """Each distinct crash state (disk and decision log) of every cut, once, with the first cut that leaves it."""
    seen: set[tuple] = set()
    for cut in each_cut(recs, points):
        fs = LogicalFS(initial, store, cuts=cuts)
        ops = merged(recs, cut)
        for op in ops:
            fs.apply(op)
        for state in fs.crash_states(len(ops)):
            if state.key not in seen:
                seen.add(state.key)
                yield cut, state


@dataclass
class MultiRankReport:
    points: str = "all"
    ops: list[int] = field(default_factory=list)  # per rank
    cuts: int = 0
    states: int = 0
    outcomes: dict[int, dict[str, int]] = field(default_factory=dict)  # world size -> outcome -> states
    violations: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"points": self.points, "ops_per_rank": self.ops, "cuts": self.cuts, "states": self.states,
                "outcomes": {str(k): v for k, v in self.outcomes.items()}, "violations": len(self.violations),
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}, "examples": self.violations[:5]}


def record_multirank_save(workdir: Path, *, steps: tuple[int, ...] = (1, 2), keep: int = 1, size: int = 16,
                          world_size: int = 2, timeout: float = 300.0
                          ) -> tuple[dict[str, Any], tuple[tuple, ...], list[Recording]]:
    args = ["record", str(workdir), "--steps", ",".join(map(str, steps)), "--keep", str(keep), "--size", str(size)]
    _ranks_ok(run_ranks("fito.testing.crash_ranks", args, world_size, timeout=timeout), "recording the save")
    doc = json.loads((workdir / "initial.json").read_text())
    initial = {p: DIR if v == DIR else base64.b64decode(v["b64"]) for p, v in doc["files"].items()}
    store = tuple(tuple(r) for r in doc["store"])
    recs = [Recording.from_json((workdir / f"rank-{r}.json").read_text()) for r in range(world_size)]
    return initial, store, recs


def _ranks_ok(results: list[Any], what: str) -> None:
    bad = [r for r in results if r.returncode != 0]
    if bad:
        raise RuntimeError(f"{what}: rank {bad[0].rank} exited with {bad[0].returncode}; its stderr ends: "
                           f"{bad[0].stderr[-3000:]}")


def restore_all(roots: list[Path], workdir: Path, world_size: int, size: int, timeout: float) -> list[list[dict]]:
    """Each root restored by a fresh Checkpointer at `world_size`: per root, every rank's answer."""
    listfile = workdir / "roots.txt"
    listfile.write_text("\n".join(map(str, roots)) + "\n")
    out = workdir / f"restored-ws{world_size}-rank{{rank}}.jsonl"
    if world_size == 1:  # this process, with no process group: a plain single-process Checkpointer
        restore(listfile, Path(str(out).format(rank=0)), size)
        return [[json.loads(line)] for line in Path(str(out).format(rank=0)).read_text().splitlines()]
    results = run_ranks("fito.testing.crash_ranks", ["restore", str(listfile), str(out), "--size", str(size)],
                        world_size, timeout=timeout)
    _ranks_ok(results, f"restoring {len(roots)} crash states at world size {world_size}")
    per_rank = [[json.loads(line) for line in Path(str(out).format(rank=r)).read_text().splitlines()]
                for r in range(world_size)]
    return [list(answers) for answers in zip(*per_rank)]


def judge(answers: list[dict], committed: list[int], new: int, previous: int | None) -> tuple[str, str]:
    """(outcome, problem) of one crash state's restore at one world size; problem "" when it holds."""
    first = answers[0]
    if any((a["outcome"], a["step"], a["values"]) != (first["outcome"], first["step"], first["values"]) for a in answers):
        return "refused", f"the ranks disagree: {[(a['outcome'], a['step'], a['values']) for a in answers]}"
    got, values = first["step"], first["values"]
    if first["outcome"] == "refused: NoCommittedEpochError":
        outcome = "nothing committed"
    elif first["outcome"] != "restored":
        outcome = "refused"
    else:
        outcome = "restored new" if got == new else "restored previous" if got == previous else f"restored step {got}"
    if first["outcome"].startswith("error"):
        return outcome, f"a restore failed with an error that is no FitoError: {first['outcome']}"
    if got is None and values != [-1.0]:
        return outcome, f"a refused restore modified the caller's state (values {values})"
    if got is not None and values != [float(got)]:
        return outcome, f"restore returned step {got} but the state holds values {values} (mixed)"
    if new in committed and got != new:
        return outcome, f"step {new}'s commit is durable (its save returned) but the restore gave {first['outcome']} {got} (lost)"
    if new not in committed and previous in committed and got != previous:
        return outcome, f"step {new} is not committed and step {previous} is, but the restore gave {first['outcome']} {got}"
    return outcome, ""


def check_multirank_crash_states(workdir: Path | None = None, *, points: Points = "boundaries", cuts: int = 1,
                                 steps: tuple[int, ...] = (1, 2), keep: int = 1, size: int = 16,
                                 world_sizes: tuple[int, ...] = (2, 1), timeout: float = 600.0) -> MultiRankReport:
    """Record a real 2-rank save, enumerate its crash states within the bound, restore each at every world
    size in `world_sizes`, and report the outcomes and every violation."""
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fito-crashcuts-")) if own else workdir
    try:
        t0 = time.perf_counter()
        initial, store, recs = record_multirank_save(workdir, steps=steps, keep=keep, size=size, timeout=timeout)
        record_seconds = time.perf_counter() - t0
        report = check_recorded(workdir, initial, store, recs, points=points, cuts=cuts, steps=steps, size=size,
                                world_sizes=world_sizes, timeout=timeout)
        report.seconds = {"record": record_seconds, **report.seconds}
        return report
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def check_recorded(workdir: Path, initial: dict[str, Any], store: tuple[tuple, ...], recs: list[Recording], *,
                   points: Points = "boundaries", cuts: int = 1, steps: tuple[int, ...] = (1, 2), size: int = 16,
                   world_sizes: tuple[int, ...] = (2, 1), timeout: float = 600.0) -> MultiRankReport:
    """Steps 2-4 on recordings already made (`record_multirank_save`); states go under workdir/states."""
    report = MultiRankReport(points=points, ops=[len(r.ops) for r in recs])
    new, previous = steps[-1], (steps[-2] if len(steps) > 1 else None)
    shutil.rmtree(workdir / "states", ignore_errors=True)
    t0 = time.perf_counter()
    report.cuts = sum(1 for _ in each_cut(recs, points))
    roots, described, committed = [], [], []
    for cut, state in each_multirank_state(initial, store, recs, points=points, cuts=cuts):
        target = workdir / "states" / f"{len(roots):05d}"
        materialise(state, target)
        roots.append(target)
        described.append(f"cut {cut} (ops per rank); " + "; ".join(f"{p}: {c}" for p, c in state.choices))
        try:
            committed.append([d.epoch for d in read_committed(target)])  # the library's one rule, on the durable log
        except FitoError:
            committed.append([])
    report.states = len(roots)
    report.seconds["enumerate"] = time.perf_counter() - t0
    for ws in world_sizes:
        t0 = time.perf_counter()
        counts = report.outcomes.setdefault(ws, dict.fromkeys(OUTCOMES, 0))
        for i, answers in enumerate(restore_all(roots, workdir, ws, size, timeout)):
            outcome, problem = judge(answers, committed[i], new, previous)
            counts[outcome] = counts.get(outcome, 0) + 1
            if problem:
                report.violations.append(f"world size {ws}, {described[i]} -> {problem}")
        report.seconds[f"restore_ws{ws}"] = time.perf_counter() - t0
    return report


__all__ = ["MultiRankReport", "check_multirank_crash_states", "crash_points", "each_cut", "each_multirank_state",
           "check_recorded", "judge", "merged", "record_multirank_save"]
