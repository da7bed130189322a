"""A Storage and a DecisionStore that record what they do, handed to a `Checkpointer` or `fito.dcp.Writer`
through their public arguments (`Checkpointer(RecordingStorage(LocalFS(root), rec), store=RecordingStore(...))`):
nothing of fito's is patched.

Each operation is performed by the real object it wraps, then logged as the POSIX primitives it made (the
vocabulary of `fito.model.posix_crash.Op`), with when it ran on CLOCK_MONOTONIC, which every process of
one machine shares: the crash-state enumerator combines the recordings of several ranks by those times.
What each LocalFS method does in primitives is its documented contract: `makedirs` creates each missing
directory and fsyncs its parent; `persist` fsyncs the file, then its directory; `remove`/`remove_tree`/
`remove_dir` delete, then fsync the parent."""
from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fito.coord.base import Decision, DecisionStore
from fito.model.posix_crash import Op
from fito.storage.localfs import LocalFS
from fito.testing.wrapped import ReadsThrough


@dataclass
class Recording:
    """One process's operations in the order they completed, each with its (start, end) in monotonic ns."""

    ops: list[Op] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, started: int, *ops: Op) -> None:
        with self._lock:  # an async save writes from its own thread
            end = time.monotonic_ns()
            for op in ops:
                self.ops.append(op)
                self.spans.append((started, end))

    def to_json(self) -> str:
        return json.dumps([[op.kind, op.path, _enc(op.arg), s, e] for op, (s, e) in zip(self.ops, self.spans)])

    @classmethod
    def from_json(cls, text: str) -> "Recording":
        rec = cls()
        for kind, path, arg, s, e in json.loads(text):
            rec.ops.append(Op(kind, path, _dec(arg)))
            rec.spans.append((s, e))
        return rec


def _enc(arg: Any) -> Any:
    if isinstance(arg, bytes):
        return {"b64": base64.b64encode(arg).decode()}
    if isinstance(arg, (tuple, list)):
        return [_enc(a) for a in arg]
    return arg


def _dec(arg: Any) -> Any:
    if isinstance(arg, dict):
        return base64.b64decode(arg["b64"])
    if isinstance(arg, list):
        return tuple(_dec(a) for a in arg)
    return arg


def _parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


class RecordingFile:
    """The handle `RecordingStorage.create` returns: each write is performed, then logged with its bytes."""

    def __init__(self, raw: BinaryIO, rel: str, rec: Recording) -> None:
        self.raw, self.rel, self.rec, self.offset = raw, rel, rec, 0

    def write(self, data: Any) -> int:
        t0 = time.monotonic_ns()
        n = self.raw.write(data)
        view = memoryview(data).cast("B")
        n = len(view) if n is None else n
        self.rec.add(t0, Op("write", self.rel, (self.offset, bytes(view[:n]))))
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


class RecordingStorage(ReadsThrough):
    """A Storage over a real `LocalFS` that logs every change it makes (reads are passed through unlogged)."""

    def __init__(self, inner: LocalFS, rec: Recording) -> None:
        self.inner, self.rec = inner, rec

    directories = True  # a LocalFS underneath: real directories (fito.storage.listing)

    @property
    def root(self) -> Path:
        return self.inner.root

    # ---- changes, logged ----
    def makedirs(self, rel: str) -> None:
        t0 = time.monotonic_ns()
        parts = rel.split("/")
        missing = [d for d in ("/".join(parts[:i]) for i in range(1, len(parts) + 1)) if not self.inner.exists(d)]
        self.inner.makedirs(rel)
        # What this call did (each missing directory, then its parent's fsync: a crash may fall in between),
        # then a "makedirs" that the model replays against its own view: where a cut leaves out the rank that
        # made the directory first, this rank makes it, as LocalFS.makedirs would have.
        done = [op for d in missing for op in (Op("mkdir", d), Op("fsync_dir", _parent(d)))]
        self.rec.add(t0, *done, Op("makedirs", rel))

    def create(self, rel: str) -> BinaryIO:
        t0 = time.monotonic_ns()
        f = self.inner.create(rel)
        self.rec.add(t0, Op("create", rel))
        return RecordingFile(f, rel, self.rec)  # type: ignore[return-value]

    def write_bytes(self, rel: str, data: bytes) -> None:
        t0 = time.monotonic_ns()
        self.inner.write_bytes(rel, data)
        self.rec.add(t0, Op("create", rel), Op("write", rel, (0, bytes(data))))

    def persist(self, rel: str) -> None:
        t0 = time.monotonic_ns()
        self.inner.persist(rel)
        self.rec.add(t0, Op("fsync_file", rel), Op("fsync_dir", _parent(rel)))

    def remove(self, rel: str) -> None:
        t0 = time.monotonic_ns()
        existed = self.inner.exists(rel)
        self.inner.remove(rel)
        if existed:
            self.rec.add(t0, Op("unlink", rel), Op("fsync_dir", _parent(rel)))

    def remove_tree(self, rel: str) -> None:
        t0 = time.monotonic_ns()
        existed = self.inner.exists(rel)
        self.inner.remove_tree(rel)
        if existed:
            self.rec.add(t0, Op("remove_tree", rel), Op("fsync_dir", _parent(rel)))

    def remove_dir(self, rel: str) -> bool:
        t0 = time.monotonic_ns()
        removed = self.inner.remove_dir(rel)
        if removed:  # an empty directory: the same entry change as a remove_tree of it
            self.rec.add(t0, Op("remove_tree", rel), Op("fsync_dir", _parent(rel)))
        return removed

    def delete(self, rel: str) -> None:
        """LocalFS.delete's two cases, each logged as its own change."""
        if self.inner.path(rel).is_dir() and not self.inner.path(rel).is_symlink():
            self.remove_tree(rel)
        else:
            self.remove(rel)


def store_rows(store: DecisionStore) -> tuple[tuple, ...]:
    """The decision table as plain rows (what a crash state's decision log holds)."""
    return tuple((d.epoch, d.attempt, d.outcome, d.manifest, d.manifest_hash, d.retired, d.decision_id)
                 for d in store.decisions())


class RecordingStore(DecisionStore):
    """Delegates to a real store; logs the whole decision table after every transaction that changes it (one
    atomic, durable operation: rule 6 of posix_crash). The fence is not logged: it is not recovery state."""

    def __init__(self, inner: DecisionStore, rec: Recording) -> None:
        self.inner, self.rec = inner, rec

    def acquire_fence(self) -> int:
        return self.inner.acquire_fence()

    def current_fence(self) -> int:
        return self.inner.current_fence()

    def log_id(self) -> str | None:
        return self.inner.log_id()

    def publish(self, decision: Decision, fence: int) -> Decision:
        t0 = time.monotonic_ns()
        out = self.inner.publish(decision, fence)
        self.rec.add(t0, Op("store", "", store_rows(self.inner)))
        return out

    def decisions(self) -> list[Decision]:
        return self.inner.decisions()

    def retire(self, epoch: int, attempt: str, fence: int | None) -> None:
        t0 = time.monotonic_ns()
        self.inner.retire(epoch, attempt, fence)
        self.rec.add(t0, Op("store", "", store_rows(self.inner)))

    def close(self) -> None:
        self.inner.close()


__all__ = ["Recording", "RecordingFile", "RecordingStorage", "RecordingStore", "store_rows"]
