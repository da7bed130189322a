"""The one POSIX crash model: what a power failure may leave of a recorded sequence of storage operations.

Both the model checker's simulated disk (`fito.model.simfs`, abstract contents) and the crash-state
enumerator of the real save path (`fito.testing.crashstates`, real bytes) take their rules from here.

The rules, and the documented guarantee each rests on:

1. A file's bytes survive a crash only up to its last completed fsync (fsync(2): "transfers all modified
   in-core data of the file ... so that all changed information can be retrieved even if the system
   crashes"); nothing is promised for bytes written after it.
2. Bytes written since then are lost, kept, or torn. A torn write is (a) a PREFIX of the new bytes: the file's
   size as last committed, holding the bytes written up to it (ext4 data=ordered, the default: "all data
   [is forced] out to the main file system prior to its metadata being committed to the journal", so a
   committed size never covers unwritten data), or (b) the new size with the un-fsynced tail NOT the written
   bytes (ext4 data=writeback "can allow old data to appear in files after a crash"; XFS exposes zeros):
   zeros stand for any such bytes, which no hash check can tell apart. Bytes fsynced before stay (rule 1),
   but only for appends: after a truncate or an in-place overwrite nothing of the old bytes is promised.
3. A directory entry change (create, O_EXCL create, mkdir, unlink, rmdir, rename) is durable only once its
   directory is fsynced (fsync(2): "Calling fsync() does not necessarily ensure that the entry in the
   directory containing the file has also reached disk. For that an explicit fsync() on a file descriptor
   for the directory is also needed."). Until then each change independently persists or not: no ordering
   between them is assumed (ext4 commits metadata in journal order, but POSIX promises no order).
4. rename(2) is atomic for running processes ("there will be no point at which newpath is missing"), and
   after a crash the name is the old or the new inode (rule 3), never a half.
5. An entry whose directory is gone is gone: a crash state never shows a path whose parent is absent.
6. A decision-store transaction is atomic and durable when it returns (SQLite, rollback journal,
   synchronous=EXTRA): it is one indivisible operation at its place in the sequence.

The enumerator's bound: rule 2 yields `TORN_CUTS` prefixes (cut evenly through the un-fsynced bytes) plus
the zero tail, so each un-fsynced file has TORN_CUTS + 3 outcomes; rule 3 branches on every entry change."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, TypeVar

DIR = "<dir>"  # marks a directory in a crash state
TORN_CUTS = 1  # prefixes of the un-fsynced bytes per torn write (rule 2a); the zero tail (2b) comes on top
C = TypeVar("C")

LOST, KEPT = "un-fsynced data lost", "un-fsynced data kept"


def data_outcomes(durable: C, current: C, torn: Callable[[C, C], list[tuple[str, C]]]) -> list[tuple[str, C]]:
    """Rules 1-2 for one file: what its bytes may be after a crash, labelled. `torn` says what a torn write
    looks like in the caller's representation (`torn_bytes` for real bytes; simfs has an abstract value)."""
    if current == durable:
        return [("", current)]
    return [(LOST, durable), (KEPT, current), *torn(durable, current)]


def torn_bytes(durable: bytes, current: bytes, cuts: int = TORN_CUTS) -> list[tuple[str, bytes]]:
    """Rule 2 in bytes: `cuts` prefixes of the un-fsynced bytes, and the new size with them zero."""
    kept = len(durable) if current.startswith(durable) else 0  # fsynced bytes stay, for appends only
    out: list[tuple[str, bytes]] = []
    for i in range(1, cuts + 1):
        cut = kept + (len(current) - kept) * i // (cuts + 1)
        if cut not in (len(durable), len(current)) and all(len(b) != cut for _, b in out):
            out.append((f"torn write: a prefix of {cut} of {len(current)} bytes persisted", current[:cut]))
    out.append(("torn write: size persisted, un-fsynced bytes not (zeros)", current[:kept] + bytes(len(current) - kept)))
    return out


def entry_outcomes(now: bool, durable: bool) -> list[bool]:
    """Rule 3 for one name: whether it exists after a crash, given whether it does now and as last fsynced."""
    return [now] if now == durable else [durable, now]


# ---------------------------------------------------------------- a recorded sequence, replayed
class Op(NamedTuple):
    kind: str  # mkdir | makedirs | create | trunc | write | fsync_file | fsync_dir | rename | unlink | remove_tree | store
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


@dataclass
class Inode:
    durable: bytes
    current: bytes


@dataclass
class CrashState:
    op_index: int  # crash after this many operations of the recorded sequence
    choices: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, Any], ...]  # (path, DIR | bytes), sorted
    store: tuple[tuple, ...]

    def describe(self, log: list[Op]) -> str:
        where = f"after op {self.op_index}: {log[self.op_index - 1].label()}" if self.op_index else "before the first op"
        how = "; ".join(f"{p}: {c}" for p, c in self.choices) or "every change so far durable or absent as written"
        return f"power failure {where}; {how}"

    @property
    def key(self) -> tuple:
        return (self.files, self.store)


class LogicalFS:
    """Replays a recorded sequence, tracking the running view and the durable one (entries per directory,
    bytes per inode: a name and the bytes it finds are separate things); enumerates the post-crash states."""

    def __init__(self, initial: dict[str, Any], store: tuple[tuple, ...] = (), *, cuts: int = TORN_CUTS) -> None:
        self.inodes: list[Inode] = []
        self.cur: dict[str, Any] = {}
        for path, content in sorted(initial.items()):
            self.cur[path] = DIR if content == DIR else self._new(content)
        self.dur = dict(self.cur)
        self.store, self.cuts = store, cuts

    def _new(self, content: bytes = b"") -> int:
        self.inodes.append(Inode(content, content))
        return len(self.inodes) - 1

    def apply(self, op: Op) -> None:
        k, p = op.kind, op.path
        if k == "mkdir":
            self.cur[p] = DIR
        elif k == "makedirs":  # LocalFS.makedirs: each missing directory, then an fsync of its parent
            parts = p.split("/")
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if self.cur.get(d) != DIR:
                    self.cur[d] = DIR
                    self.apply(Op("fsync_dir", _parent(d)))
        elif k == "create":
            if p in self.cur:
                raise FileExistsError(f"replaying {op.label()}: {p} exists (an O_EXCL create fails)")
            self.cur[p] = self._new()
        elif k == "trunc":
            if p in self.cur:
                self.inodes[self.cur[p]].current = b""
            else:
                self.cur[p] = self._new()
        elif k == "write":
            ino = self.inodes[self.cur[p]]
            off, data = op.arg
            buf = bytearray(ino.current)
            if len(buf) < off:
                buf.extend(bytes(off - len(buf)))
            buf[off:off + len(data)] = data
            ino.current = bytes(buf)
        elif k == "fsync_file":
            ino = self.inodes[self.cur[p]]
            ino.durable = ino.current
        elif k == "fsync_dir":
            for q in set(self.cur) | set(self.dur):
                if _parent(q) == p and q != p:
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
            raise ValueError(f"unknown operation {op!r}: expected one of the kinds listed on Op")

    def crash_states(self, op_index: int) -> Iterator[CrashState]:
        differing = sorted(q for q in set(self.cur) | set(self.dur) if self.cur.get(q) != self.dur.get(q))
        # rule 3: each pending entry change is, independently, as last fsynced or as now
        per_entry = [entry_outcomes(True, False) for _ in differing]
        for picks in itertools.product(*per_entry):
            view = dict(self.dur)
            entry_choices = []
            for q, now in zip(differing, picks):
                source = self.cur if now else self.dur
                if q in source:
                    view[q] = source[q]
                else:
                    view.pop(q, None)
                entry_choices.append((q, ("entry change persisted" if now else "entry change lost")
                                      + (" (present)" if q in view else " (absent)")))
            view = {q: v for q, v in view.items() if _reachable(q, view)}  # rule 5
            inos = sorted({v for v in view.values() if v != DIR})
            torn = lambda d, c: torn_bytes(d, c, self.cuts)  # noqa: E731
            per_inode = [data_outcomes(self.inodes[i].durable, self.inodes[i].current, torn) for i in inos]
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


def each_crash_state(initial: dict[str, Any], log: list[Op], store: tuple[tuple, ...] = (), *,
                     dedupe: bool = True, cuts: int = TORN_CUTS,
                     points: Callable[[int], bool] | None = None) -> Iterator[CrashState]:
    """Every crash state of every prefix of `log` (or of the prefixes `points` accepts), in log order; with
    `dedupe`, each distinct disk once (at the first crash point that can leave it)."""
    fs = LogicalFS(initial, store, cuts=cuts)
    seen: set[tuple] = set()
    for k in range(len(log) + 1):
        if k:
            fs.apply(log[k - 1])
        if points is not None and not points(k):
            continue
        for state in fs.crash_states(k):
            if not dedupe:
                yield state
            elif state.key not in seen:
                seen.add(state.key)
                yield state


__all__ = ["CrashState", "DIR", "Inode", "LogicalFS", "Op", "TORN_CUTS", "data_outcomes", "each_crash_state",
           "entry_outcomes", "torn_bytes"]
