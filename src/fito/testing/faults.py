"""Storage and decision stores that fail on purpose, by phase and rank, at the public seams
(`Checkpointer(storage, store=...)`), never by patching fito's internals.

A `FaultPlan` says what fails on one rank; a `FaultyStorage` (around a real LocalFS) and a
`FaultyDecisionStore` (around a real SqliteDecisionStore, or any DecisionStore) of that rank consult it:

    plan = FaultPlan(rank=dist.get_rank())
    storage, store = open_faulty(root, plan)
    ck = Checkpointer(storage, store=store)
    plan.arm(Fault("unit write", "ENOSPC", rank=1, after_bytes=100))  # rank 1's disk fills mid-object
    plan.space = 0                                                   # or: this rank's disk is full

Phases (the names the Checkpointer's messages use, `fito.commit.failure.PHASES`):
    "unit write"      writing a rank's unit object (`*.fito`), after `after_bytes` bytes of it
    "persist"         Storage.persist (making an object and its name durable)
    "manifest write"  writing the manifest (coordinator)
    "publish"         DecisionStore.publish (coordinator; the commit point, and abort records)
    "post-commit GC"  listing and deleting objects, DecisionStore.retire (coordinator, after a commit;
                      the cleanup of a failed attempt lists and deletes too)
Kinds: "exception" (InjectedFault, an error of no particular kind: a bug in a backend), "ENOSPC" and "EIO"
(OSError with that errno, as the kernel reports them), "SIGKILL": the process kills itself at that point
(after the `after_bytes` of a write landed and were flushed), a real crash at a deterministic place; and "pause": nothing fails, the delete of `target`
(remove, remove_tree, remove_dir) waits `seconds` before it runs -- a process stalled between a check and its
delete (a GC pause, a swapped-out coordinator); armed for "unit write" or "manifest write", the creation of
the object waits instead (a rank that goes silent mid-save):

    plan.arm(Fault("post-commit GC", "pause", target="epochs/000000000005", seconds=5))

`read_only`: every write, create, delete and decision-log write fails with EROFS (a root mounted read-only).

`space`: free bytes of this rank's disk (None: unlimited). Writes beyond it write what fits and raise
ENOSPC; deleting an object gives its bytes back; the decision store refuses writes while fewer than
`STORE_WRITE_BYTES` are free. So a retry that leaks a partial attempt shows up as space that never comes back."""
from __future__ import annotations

import errno
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Literal

from fito.coord.base import Decision, DecisionStore
from fito.coord.choose import default_store
from fito.protocol.layout import MANIFEST, parse_object
from fito.storage.base import Storage
from fito.storage.localfs import LocalFS
from fito.testing.wrapped import ReadsThrough

Phase = Literal["unit write", "persist", "manifest write", "publish", "post-commit GC"]
Kind = Literal["exception", "ENOSPC", "EIO", "pause", "SIGKILL"]
PHASES: tuple[Phase, ...] = ("unit write", "persist", "manifest write", "publish", "post-commit GC")
KINDS: tuple[Kind, ...] = ("exception", "ENOSPC", "EIO")  # the kinds that raise, which the fault matrix runs
KILL: Kind = "SIGKILL"  # the kind that crashes the process instead ("pause" only stalls a delete or a create)
STORE_WRITE_BYTES = 4096  # a SQLite transaction writes at least a page or two


class InjectedFault(RuntimeError):
    """An injected error of no particular kind (not an OSError): what a buggy storage backend raises."""


class KillProcess(BaseException):
    """Kind "SIGKILL": never raised; where it fires, the process kills itself (see `kill_now`)."""


def kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Fault:
    phase: Phase
    kind: Kind = "exception"
    rank: int | None = None  # the rank whose storage fails; None: every rank
    after_bytes: int = 0  # "unit write" / "manifest write": bytes of the object that land before the fault
    times: int | None = 1  # operations that fail before the fault clears itself; None: until disarmed
    target: str | None = None  # only operations on exactly this name (relative to the root); None: any
    seconds: float = 0.0  # "pause": how long the delete waits


@dataclass(frozen=True)
class Injected:
    """One fault that fired: which phase, on which rank, at which object."""

    phase: str
    kind: str
    rank: int
    target: str


def make_error(kind: Kind | str, phase: str, rank: int, target: str) -> BaseException:
    if kind == "ENOSPC":
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
    if kind == "EIO":
        return OSError(errno.EIO, os.strerror(errno.EIO), target)
    if kind == "exception":
        return InjectedFault(f"injected fault at {phase} on rank {rank}: {target}")
    if kind == "pause":
        return InjectedFault(f"a pause at {phase} on rank {rank} is not an error ({target})")
    if kind == "SIGKILL":
        return KillProcess(f"SIGKILL at {phase} on rank {rank}: {target}")
    raise ValueError(f"unknown fault kind {kind!r}; choose one of {(*KINDS, KILL, 'pause')}")


class FaultPlan:
    """What fails on one rank (thread-safe: a background save consults it from its own thread)."""

    def __init__(self, rank: int = 0, faults: Iterable[Fault] = (), *, space: int | None = None,
                 read_only: bool = False) -> None:
        self.rank = rank
        self.faults: list[Fault] = []
        self.space = space
        self.read_only = read_only
        self.injected: list[Injected] = []
        self._lock = threading.RLock()
        self.arm(*faults)

    def arm(self, *faults: Fault) -> None:
        with self._lock:
            for f in faults:
                if f.phase not in PHASES:
                    raise ValueError(f"unknown phase {f.phase!r}; choose one of {PHASES}")
                make_error(f.kind, f.phase, self.rank, "")  # validates the kind
                self.faults.append(f)

    def disarm(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset(self) -> None:
        """No faults, unlimited space, nothing recorded."""
        with self._lock:
            self.faults.clear()
            self.injected.clear()
            self.space = None
            self.read_only = False

    def fired(self, phase: str | None = None) -> list[Injected]:
        with self._lock:
            return [i for i in self.injected if phase is None or i.phase == phase]

    # ---- consulted by the faulty storage and store ----
    def _armed(self, phase: str, target: str | None = None, *, pauses: bool = False) -> list[Fault]:
        return [f for f in self.faults if f.phase == phase and (f.rank is None or f.rank == self.rank)
                and (f.times is None or f.times > 0) and (f.kind == "pause") == pauses
                and (f.target is None or f.target == target)]

    def _fire(self, fault: Fault, target: str) -> BaseException:
        if fault.times is not None:
            fault.times -= 1
        self.injected.append(Injected(fault.phase, fault.kind, self.rank, target))
        return make_error(fault.kind, fault.phase, self.rank, target)

    def check(self, phase: str, target: str) -> None:
        """Raise the first fault armed for `phase` on this rank, if any."""
        with self._lock:
            for f in self._armed(phase, target):
                error = self._fire(f, target)
                if isinstance(error, KillProcess):
                    kill_now()
                raise error

    def stall(self, phase: str, target: str) -> None:
        """Wait as long as the first "pause" armed for `phase` and `target` says (before a delete)."""
        with self._lock:
            armed = self._armed(phase, target, pauses=True)
            if not armed:
                return
            fault = armed[0]
            if fault.times is not None:
                fault.times -= 1
            self.injected.append(Injected(fault.phase, fault.kind, self.rank, target))
        time.sleep(fault.seconds)  # outside the lock: a background save's thread may consult the plan meanwhile

    def writable(self, target: str) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), target)

    def write_room(self, phase: str | None, target: str, written: int, n: int) -> tuple[int, BaseException | None]:
        """How many of the next `n` bytes of `target` (after `written`) land, and the error raised after them."""
        self.writable(target)
        with self._lock:
            room, fault = n, None
            for f in self._armed(phase, target) if phase else []:
                r = max(0, f.after_bytes - written)
                if r < n and (fault is None or r < room):  # this write crosses the fault's threshold
                    room, fault = r, f
            if self.space is not None and self.space < room:
                return self.space, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
            return room, self._fire(fault, target) if fault is not None else None

    def charge(self, n: int) -> bool:
        """Take `n` bytes of space; False (nothing taken) if the budget is unlimited."""
        with self._lock:
            if self.space is None:
                return False
            self.space -= n
            return True

    def refund(self, n: int) -> None:
        with self._lock:
            if self.space is not None:
                self.space += n

    def need_space(self, n: int, target: str) -> None:
        """Any write that takes room (a new entry, a log transaction): EROFS or ENOSPC if there is none."""
        self.writable(target)
        with self._lock:
            if self.space is not None and self.space < n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)


def _phase_of(rel: str) -> Phase | None:
    name = rel.rsplit("/", 1)[-1]  # the layout's names (fito.protocol.layout)
    if parse_object(name) is not None:
        return "unit write"
    if name == MANIFEST:
        return "manifest write"
    return None


class FaultyStorage(ReadsThrough):
    """A Storage that runs every operation on a real one (`inner`) unless its plan makes it fail first. Reads
    are never faulty here (restore faults are damaged files, see tests/test_mutation_fuzz.py)."""

    def __init__(self, inner: Storage, plan: FaultPlan) -> None:
        self.inner, self.plan = inner, plan
        self.root: Path = inner.root  # type: ignore[attr-defined]  # LocalFS's: the default SQLite log beside it
        self.kind = getattr(inner, "kind", "object")
        self.directories = getattr(inner, "directories", False)
        self._charged: dict[str, int] = {}  # bytes each object took from the plan's space
        self._lock = threading.Lock()

    # ---- writing ----
    def makedirs(self, rel: str) -> None:
        self.plan.writable(rel)
        if not self.inner.exists(rel):
            self.plan.need_space(1, rel)  # a new directory needs a block
        self.inner.makedirs(rel)

    def create(self, rel: str) -> BinaryIO:
        phase = _phase_of(rel)
        if phase is not None:
            self.plan.stall(phase, rel)  # a "pause" armed for the write: this rank goes silent here
        self.plan.need_space(1, rel)  # a new entry in a full directory block
        return _FaultyFile(self, rel, self.inner.create(rel))  # type: ignore[return-value]

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.create(rel) as f:  # through the faulty handle, so manifest faults apply
            view = memoryview(data)
            while len(view):
                view = view[f.write(view):]

    def persist(self, rel: str) -> None:
        self.plan.check("persist", rel)
        self.inner.persist(rel)

    # ---- listing and deleting ----
    def listdir(self, rel: str) -> list[str]:
        self.plan.check("post-commit GC", rel)
        return self.inner.listdir(rel)

    def entries(self, rel: str) -> Any:  # LocalFS's typed listing, where it has one
        self.plan.check("post-commit GC", rel)
        return self.inner.entries(rel)  # type: ignore[attr-defined]

    def list(self, prefix: str = "") -> Any:
        self.plan.check("post-commit GC", prefix)
        return self.inner.list(prefix)

    def delete(self, rel: str) -> None:
        self.plan.check("post-commit GC", rel)
        self.plan.stall("post-commit GC", rel)
        self.plan.writable(rel)
        self.inner.delete(rel)
        self._refund(lambda name: name == rel or name.startswith(rel.rstrip("/") + "/"))

    def remove(self, rel: str) -> None:
        self.plan.check("post-commit GC", rel)
        self.plan.stall("post-commit GC", rel)
        self.plan.writable(rel)
        self.inner.remove(rel)
        self._refund(lambda name: name == rel)

    def remove_tree(self, rel: str) -> None:
        self.plan.check("post-commit GC", rel)
        self.plan.stall("post-commit GC", rel)
        self.plan.writable(rel)
        self.inner.remove_tree(rel)
        self._refund(lambda name: name == rel or name.startswith(rel.rstrip("/") + "/"))

    def remove_dir(self, rel: str) -> Any:  # LocalFS's remove-if-empty, where it has one
        self.plan.check("post-commit GC", rel)
        self.plan.stall("post-commit GC", rel)
        self.plan.writable(rel)
        return self.inner.remove_dir(rel)  # type: ignore[attr-defined]

    def _refund(self, match: Any) -> None:
        with self._lock:
            for name in [n for n in self._charged if match(n)]:
                self.plan.refund(self._charged.pop(name))

    def _charge(self, rel: str, n: int) -> None:
        if self.plan.charge(n):
            with self._lock:
                self._charged[rel] = self._charged.get(rel, 0) + n


class _FaultyFile:
    """A write handle that lets through what the plan allows, then raises (a real partial write)."""

    def __init__(self, storage: FaultyStorage, rel: str, f: BinaryIO) -> None:
        self.storage, self.rel, self.f = storage, rel, f
        self.phase = _phase_of(rel)
        self.written = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        room, error = self.storage.plan.write_room(self.phase, self.rel, self.written, len(view))
        done = 0
        while done < room:
            n = self.f.write(view[done:room]) or 0
            if not n:
                break
            done += n
        self.written += done
        self.storage._charge(self.rel, done)
        if isinstance(error, KillProcess):
            self.f.flush()  # the bytes before the fault reach the file, as a crash mid-write leaves them
            kill_now()
        if error is not None:
            raise error
        return done

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "_FaultyFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.__exit__(*exc)  # an object store's upload is abandoned on an error, not completed by close()


class FaultyDecisionStore(DecisionStore):
    """A DecisionStore that runs every call on a real one (`inner`) unless its plan makes it fail first.
    A failing publish or retire fails before the inner store is asked: nothing lands."""

    def __init__(self, inner: DecisionStore, plan: FaultPlan) -> None:
        self.inner, self.plan = inner, plan
        self.where = str(getattr(inner, "path", "the decision log"))

    def acquire_fence(self) -> int:
        self.plan.need_space(STORE_WRITE_BYTES, self.where)
        return self.inner.acquire_fence()

    def current_fence(self) -> int:
        return self.inner.current_fence()

    def log_id(self) -> str | None:
        return self.inner.log_id()

    def publish(self, decision: Decision, fence: int) -> Decision:
        target = self.where
        self.plan.check("publish", target)
        self.plan.need_space(STORE_WRITE_BYTES, target)
        return self.inner.publish(decision, fence)

    def decisions(self) -> list[Decision]:
        return self.inner.decisions()

    def committed(self) -> list[Decision]:
        return self.inner.committed()

    def retire(self, epoch: int, attempt: str, fence: Any) -> None:
        target = self.where
        self.plan.check("post-commit GC", target)
        self.plan.need_space(STORE_WRITE_BYTES, target)
        self.inner.retire(epoch, attempt, fence)

    def close(self) -> None:
        self.inner.close()


def open_faulty(root: str | os.PathLike[str], plan: FaultPlan) -> tuple[FaultyStorage, FaultyDecisionStore]:
    """A faulty storage and decision store over the real LocalFS and SQLite log of `root`."""
    storage = LocalFS(root)
    store = default_store(storage)  # the one lookup (fito.coord.choose)
    return FaultyStorage(storage, plan), FaultyDecisionStore(store, plan)
