"""Crash-state exploration of a real save (in the spirit of ALICE, Pillai et al., OSDI 2014).

1. Record: run a real `fito.Checkpointer.save` with its `LocalFS` replaced by `RecordingFS`, which logs
   every file-system operation (mkdir, create, each write with its bytes, fsync of a file or directory,
   remove_tree) and performs it. The decision store is wrapped too; each durable SQLite transaction is
   logged as one atomic, durable operation at its place in the log (SQLite's rollback journal with
   synchronous=EXTRA guarantees exactly that).
2. Generate: for every prefix of the log, every disk a POSIX file system may leave after a power failure
   at that point: data written since a file's last fsync lost, kept, half-persisted or zero-filled; every
   directory entry changed since its directory's last fsync (create, rename, unlink, rmtree) either way.
3. Check: materialise each distinct crash state in a fresh directory (the decision log is rebuilt by
   re-publishing the decisions that were durable), run the real `restore`, and check all-or-nothing.

The generator is independent of fito: `benchmarks/dcp_crash_states.py` feeds it torch.distributed.checkpoint."""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple

from fito.coord.base import Decision, DecisionStore
from fito.coord.sqlite import SqliteDecisionStore
from fito.storage.localfs import LocalFS

DIR = "<dir>"  # marks a directory in a materialised crash state


class Op(NamedTuple):
    kind: str  # mkdir | create | trunc | write | fsync_file | fsync_dir | rename | unlink | remove_tree | store
    path: str = ""
    arg: Any = None  # write: (offset, bytes); rename: destination; store: tuple of decision rows

    def label(self) -> str:
        if self.kind == "write":
            return f"write {self.path} @{self.arg[0]} ({len(self.arg[1])} B)"
        if self.kind == "rename":
            return f"rename {self.path} -> {self.arg}"
        if self.kind == "store":
            return "decision log transaction (atomic, durable): " + ", ".join(
                f"{r[2]} e{r[0]}{' retired' if r[5] else ''}" for r in self.arg) if self.arg else "decision log: empty"
        return f"{self.kind} {self.path}"


# ---------------------------------------------------------------- recording
class RecordingFile:
    """The file object `RecordingFS.create` returns: logs every write (with its bytes) and performs it."""

    def __init__(self, raw: BinaryIO, rel: str, log: list[Op]) -> None:
        self.raw, self.rel, self.log, self.offset = raw, rel, log, 0

    def write(self, data: Any) -> int:
        n = self.raw.write(data)
        n = len(memoryview(data).cast("B")) if n is None else n
        self.log.append(Op("write", self.rel, (self.offset, bytes(memoryview(data).cast("B")[:n]))))
        self.offset += n
        return n

    def fileno(self) -> int:
        return self.raw.fileno()

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "RecordingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingFS(LocalFS):
    """`LocalFS` that logs the primitive operations it performs, in order, relative to the root."""

    def __init__(self, root: str | os.PathLike[str], log: list[Op]) -> None:
        self.log = log  # before LocalFS.__init__, which may already create (and fsync) the root
        super().__init__(root)

    def _rel(self, p: Path) -> str | None:
        if p == self.root:
            return ""
        return p.relative_to(self.root).as_posix() if self.root in p.parents else None

    def _mkdir(self, path: Path) -> None:
        super()._mkdir(path)
        self.log.append(Op("mkdir", self._rel(path)))

    def _rmtree(self, path: Path) -> None:
        super()._rmtree(path)
        self.log.append(Op("remove_tree", self._rel(path)))

    def _rmdir(self, path: Path) -> None:
        super()._rmdir(path)  # an empty directory: the same entry change as a remove_tree of it
        self.log.append(Op("remove_tree", self._rel(path)))

    def _fsync_dir_path(self, path: Path) -> None:
        super()._fsync_dir_path(path)
        rel = self._rel(path)
        if rel is not None:  # the root's parent is outside the recorded tree
            self.log.append(Op("fsync_dir", rel))

    def create(self, rel: str) -> BinaryIO:
        f = super().create(rel)
        self.log.append(Op("create", rel))
        return RecordingFile(f, rel, self.log)  # type: ignore[return-value]

    def fsync_file(self, rel: str) -> None:
        super().fsync_file(rel)
        self.log.append(Op("fsync_file", rel))


def store_rows(store: DecisionStore) -> tuple[tuple, ...]:
    return tuple((d.epoch, d.attempt, d.outcome, d.manifest, d.manifest_hash, d.retired, d.decision_id)
                 for d in store.decisions())


class RecordingStore(DecisionStore):
    """Delegates to a real store; logs the decision table after every transaction that changes it."""

    def __init__(self, inner: DecisionStore, log: list[Op]) -> None:
        self.inner, self.log = inner, log

    def acquire_fence(self) -> int:
        return self.inner.acquire_fence()  # the fence is not recovery state: re-created when materialising

    def current_fence(self) -> int:
        return self.inner.current_fence()

    def log_id(self) -> str | None:
        return self.inner.log_id()

    def publish(self, decision: Decision, fence: int) -> Decision:
        out = self.inner.publish(decision, fence)
        self.log.append(Op("store", "", store_rows(self.inner)))
        return out

    def decisions(self) -> list[Decision]:
        return self.inner.decisions()

    def retire(self, epoch: int, attempt: str, fence: int) -> None:
        self.inner.retire(epoch, attempt, fence)
        self.log.append(Op("store", "", store_rows(self.inner)))

    def close(self) -> None:
        self.inner.close()


# ---------------------------------------------------------------- crash states
@dataclass
class Inode:
    durable: bytes
    current: bytes
    unsynced: bool = False

    def options(self) -> list[tuple[str, bytes]]:
        """What a power failure may leave of this file's bytes."""
        if not self.unsynced or self.current == self.durable:
            return [("", self.current)]
        cur, dur = self.current, self.durable
        common = 0  # the bytes both versions agree on stay whatever happens
        while common < min(len(cur), len(dur)) and cur[common] == dur[common]:
            common += 1
        half = common + (len(cur) - common) // 2
        zeroed = cur[:common] + bytes(len(cur) - common)
        return [("un-fsynced data lost", dur), ("un-fsynced data kept", cur),
                ("half of the un-fsynced data persisted", cur[:half]),
                ("size persisted, un-fsynced data blocks zero", zeroed)]


@dataclass
class CrashState:
    op_index: int  # crash after this many operations of the recorded log
    choices: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, Any], ...]  # (path, DIR | bytes), sorted
    store: tuple[tuple, ...]

    def describe(self, log: list[Op]) -> str:
        where = f"after op {self.op_index}: {log[self.op_index - 1].label()}" if self.op_index else "before the first op"
        how = "; ".join(f"{p}: {c}" for p, c in self.choices) or "every change so far durable or absent as written"
        return f"power failure {where}; {how}"


class LogicalFS:
    """Replays a recorded log, tracking what is durable; enumerates the post-crash states."""

    def __init__(self, initial: dict[str, Any], store: tuple[tuple, ...] = ()) -> None:
        self.inodes: list[Inode] = []
        self.cur: dict[str, Any] = {}
        for path, content in sorted(initial.items()):
            self.cur[path] = DIR if content == DIR else self._new(content, durable=True)
        self.dur = dict(self.cur)
        self.store = store

    def _new(self, content: bytes, *, durable: bool) -> int:
        self.inodes.append(Inode(content if durable else b"", content, not durable))
        return len(self.inodes) - 1

    def apply(self, op: Op) -> None:
        k, p = op.kind, op.path
        if k == "mkdir":
            self.cur[p] = DIR
        elif k == "create":
            self.cur[p] = self._new(b"", durable=False)
            self.inodes[self.cur[p]].durable = b""
        elif k == "trunc":
            if p in self.cur:
                ino = self.inodes[self.cur[p]]
                ino.current, ino.unsynced = b"", True
            else:
                self.cur[p] = self._new(b"", durable=False)
        elif k == "write":
            ino = self.inodes[self.cur[p]]
            off, data = op.arg
            buf = bytearray(ino.current)
            if len(buf) < off:
                buf.extend(bytes(off - len(buf)))
            buf[off:off + len(data)] = data
            ino.current, ino.unsynced = bytes(buf), True
        elif k == "fsync_file":
            ino = self.inodes[self.cur[p]]
            ino.durable, ino.unsynced = ino.current, False
        elif k == "fsync_dir":
            for q in set(self.cur) | set(self.dur):
                if _parent(q) == p:
                    if q in self.cur:
                        self.dur[q] = self.cur[q]
                    else:
                        self.dur.pop(q, None)
        elif k == "rename":
            self.cur[op.arg] = self.cur.pop(p)
        elif k == "unlink":
            self.cur.pop(p, None)
        elif k == "remove_tree":
            for q in [q for q in self.cur if q == p or q.startswith(p + "/")]:
                del self.cur[q]
        elif k == "store":
            self.store = op.arg
        else:
            raise ValueError(f"unknown op {op}")

    def crash_states(self, op_index: int) -> Iterator[CrashState]:
        differing = sorted(q for q in set(self.cur) | set(self.dur) if self.cur.get(q) != self.dur.get(q))
        for picks in itertools.product((0, 1), repeat=len(differing)):
            view = dict(self.dur)
            entry_choices = []
            for q, pick in zip(differing, picks):
                source = self.cur if pick else self.dur
                if q in source:
                    view[q] = source[q]
                else:
                    view.pop(q, None)
                entry_choices.append((q, ("entry change persisted" if pick else "entry change lost")
                                      + (" (present)" if q in view else " (absent)")))
            view = {q: v for q, v in view.items() if _reachable(q, view)}
            inos = sorted({v for v in view.values() if v != DIR})
            per_inode = [self.inodes[i].options() for i in inos]
            for contents in itertools.product(*per_inode):
                data = dict(zip(inos, contents))
                files = tuple(sorted((q, DIR if v == DIR else data[v][1]) for q, v in view.items()))
                content_choices = [(q, data[v][0]) for q, v in sorted(view.items()) if v != DIR and data[v][0]]
                choices = [(q, c) for q, c in entry_choices if _reachable(q, view) or c.endswith("(absent)")]
                yield CrashState(op_index, tuple(choices + content_choices), files, self.store)


def _parent(p: str) -> str:
    return p.rsplit("/", 1)[0] if "/" in p else ""


def _reachable(q: str, view: dict[str, Any]) -> bool:
    parent = _parent(q)
    while parent:
        if view.get(parent) != DIR:
            return False
        parent = _parent(parent)
    return True


def snapshot_dir(root: Path) -> dict[str, Any]:
    """A directory tree as {relative path: DIR | bytes} (the durable starting point of a recording)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[(Path(dirpath) / d).relative_to(root).as_posix()] = DIR
        for f in filenames:
            out[(Path(dirpath) / f).relative_to(root).as_posix()] = (Path(dirpath) / f).read_bytes()
    return out


def each_crash_state(initial: dict[str, Any], log: list[Op], store: tuple[tuple, ...] = (), *,
                     dedupe: bool = True) -> Iterator[CrashState]:
    """Every crash state of every prefix of `log`, in log order; with `dedupe`, each distinct disk once
    (at the first crash point that can leave it)."""
    fs = LogicalFS(initial, store)
    seen: set[tuple] = set()
    for k in range(len(log) + 1):
        if k:
            fs.apply(log[k - 1])
        for state in fs.crash_states(k):
            key = (state.files, state.store)
            if not dedupe:
                yield state
            elif key not in seen:
                seen.add(key)
                yield state


def materialise(state: CrashState, target: Path, *, decision_log: str | None = SqliteDecisionStore.FILENAME) -> None:
    """Write the crash state's files into `target`, and rebuild the decision log as it was durable."""
    target.mkdir(parents=True, exist_ok=True)
    for path, content in state.files:
        p = target / path
        if content == DIR:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
    if decision_log is not None:
        store = SqliteDecisionStore(target / decision_log, replace_lost=True)  # rebuilt beside the files on purpose
        try:
            fence = store.acquire_fence()
            for epoch, attempt, outcome, manifest, manifest_hash, _retired, decision_id in state.store:
                store.publish(Decision(epoch, attempt, outcome, manifest, manifest_hash, decision_id=decision_id), fence)
            for epoch, attempt, _o, _m, _h, retired, _id in state.store:
                if retired:
                    store.retire(epoch, attempt, fence)
        finally:
            store.close()


# ---------------------------------------------------------------- fito's save, end to end
@dataclass
class Report:
    ops: int = 0
    crash_states: int = 0
    violations: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)  # "restored step 1" / "error: ..." -> count
    crash_points: int = 0  # power-cut positions examined (after 0..ops operations)
    violating_points: set[int] = field(default_factory=set)  # positions where some crash state is wrong
    record_seconds: float = 0.0
    check_seconds: float = 0.0

    @property
    def states_per_second(self) -> float:
        return self.crash_states / self.check_seconds if self.check_seconds else 0.0

    def to_json(self) -> dict:
        return {"ops": self.ops, "crash_states": self.crash_states, "violations": len(self.violations),
                "crash_points": self.crash_points, "crash_points_with_violation": len(self.violating_points),
                "outcomes": self.outcomes, "check_seconds": round(self.check_seconds, 3),
                "states_per_second": round(self.states_per_second, 1), "examples": self.violations[:5]}


def training_state(step: int, *, size: int = 16) -> dict[str, Any]:
    """A small state whose every value says which step it belongs to: any mix is visible."""
    import torch

    return {
        "model": {"weight": torch.full((size, size), float(step)), "bias": torch.full((size,), float(step))},
        "optimizer": {"exp_avg": torch.full((size,), float(step)), "exp_avg_sq": torch.full((size,), float(step)),
                      "step": torch.tensor(step, dtype=torch.int64)},
        "data_position": step,
    }


def steps_in(state: dict[str, Any]) -> set[float]:
    """Every step value found in a state built by `training_state` (one value iff the state is whole)."""
    import torch

    found: set[float] = set()

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, torch.Tensor):
            found.update(float(x) for x in obj.reshape(-1).unique().tolist())
        else:
            found.add(float(obj))

    walk(state)
    return found


def record_fito_save(workdir: Path, *, keep: int = 1, size: int = 16, steps: tuple[int, ...] = (1, 2),
                     fs_factory: Callable[[Path, list[Op]], LocalFS] = RecordingFS) -> tuple[dict[str, Any], list[Op], tuple]:
    """Save steps[:-1] normally (the durable starting point), then record the save of steps[-1]."""
    from fito.ckpt import Checkpointer

    root, db = workdir / "ckpt", workdir / "decisions-recorded.sqlite"
    store = SqliteDecisionStore(db)
    log: list[Op] = []
    try:
        ck = Checkpointer(root, keep=keep, store=store, progress=False)
        for s in steps[:-1]:
            ck.save(s, training_state(s, size=size))
        initial, initial_store = snapshot_dir(root), store_rows(store)
        ck.storage = fs_factory(root, log)
        ck._store = RecordingStore(store, log)
        ck.save(steps[-1], training_state(steps[-1], size=size))
    finally:
        store.close()
    return initial, log, initial_store


def check_fito_crash_states(workdir: Path | None = None, *, keep: int = 1, size: int = 16,
                            steps: tuple[int, ...] = (1, 2),
                            fs_factory: Callable[[Path, list[Op]], LocalFS] = RecordingFS,
                            progress: Callable[[int], None] | None = None,
                            max_violations: int | None = None) -> Report:
    """Record a real save, then run the real restore on every crash state and check all-or-nothing:
    the loaded state is wholly the newest durably committed step, and a failed restore touches nothing."""
    import torch  # noqa: F401  (restore needs it; imported here to keep `fito check` light)

    from fito.ckpt import Checkpointer

    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fito-crash-")) if own else workdir
    report = Report()
    try:
        t0 = time.perf_counter()
        initial, log, initial_store = record_fito_save(workdir, keep=keep, size=size, steps=steps, fs_factory=fs_factory)
        report.ops = len(log)
        report.record_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        verdicts: dict[tuple, str] = {}  # distinct crash state -> problem ("" when fine)
        for state in each_crash_state(initial, log, initial_store, dedupe=False):
            key = (state.files, state.store)
            report.crash_points = max(report.crash_points, state.op_index + 1)
            if key in verdicts:
                if verdicts[key]:
                    report.violating_points.add(state.op_index)
                continue
            target = workdir / f"crash-{len(verdicts):05d}"
            materialise(state, target)
            committed = [r[0] for r in _committed_rows(state.store)]
            expected = max(committed) if committed else None
            into = training_state(-1, size=size)
            try:
                with Checkpointer(target, progress=False) as ck:
                    got: int | None = ck.restore(into)
                outcome = f"restored step {got}"
            except Exception as exc:  # noqa: BLE001 - a loud failure is an outcome to classify
                got, outcome = None, f"error: {type(exc).__name__}"
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
            values = steps_in(into)
            problem = ""
            if got is None and values != {-1.0}:
                problem = f"failed restore modified the caller's state (values {sorted(values)})"
            elif got is not None and values != {float(got)}:
                problem = f"restore returned step {got} but the state holds values {sorted(values)} (a mix)"
            elif got != expected:
                problem = f"restore gave {outcome!r}, but step {expected} is durably committed"
            else:
                problem = _check_older_steps(Checkpointer, target, [c for c in committed if c != expected], size)
            verdicts[key] = problem
            if problem:
                report.violations.append(f"{state.describe(log)} -> {problem}")
                report.violating_points.add(state.op_index)
            report.crash_states += 1
            shutil.rmtree(target)
            if progress:
                progress(report.crash_states)
            if max_violations is not None and len(report.violations) >= max_violations:
                break
        report.check_seconds = time.perf_counter() - t0
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _check_older_steps(checkpointer: Any, target: Path, steps: list[int], size: int) -> str:
    """Every other committed, not retired step must restore whole when asked for by number."""
    for s in steps:
        into = training_state(-1, size=size)
        try:
            with checkpointer(target, progress=False) as ck:
                got = ck.restore(into, step=s)
        except Exception as exc:  # noqa: BLE001
            return f"restore(step={s}) of a committed, kept step failed: {type(exc).__name__}: {exc}"
        if got != s or steps_in(into) != {float(s)}:
            return f"restore(step={s}) returned {got} with values {sorted(steps_in(into))}"
    return ""


def _committed_rows(rows: tuple[tuple, ...]) -> list[tuple]:
    latest: dict[int, tuple] = {}
    for r in rows:
        if r[2] == "commit" and not r[5]:
            latest.pop(r[0], None)
            latest[r[0]] = r
    return list(latest.values())
