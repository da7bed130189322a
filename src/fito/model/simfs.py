"""A simulated POSIX disk for the model checker.

Every file keeps two views: what a reader sees now (the page cache) and what survives a power failure.
What a crash leaves is decided by the one POSIX crash model, `fito.model.posix_crash` (shared with the
crash-state enumerator of the real save path): data becomes durable only by fsync of the file; a directory
entry (a create or an unlink) becomes durable only by fsync of its parent directory. Directories themselves are durable on creation, as `LocalFS.makedirs`
fsyncs the parent of every directory it creates.

Contents are abstract tuples, e.g. ("unit", rank, epoch, attempt): what matters is which step and attempt a
byte range came from, so that a mix of two steps is visible to the property checks."""
from __future__ import annotations

import functools
import hashlib
from typing import Callable, Iterator, NamedTuple, Union

from fito.model.posix_crash import data_outcomes, entry_outcomes

Content = Union[tuple, None]  # None = a zero-length file (created, nothing written durably)


class _Missing:
    """Sentinel for "no directory entry" (distinct from an empty file)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


_HASHED: dict[str, Content] = {}  # hash -> the content it was computed from (symmetry renames hashes through it)


@functools.lru_cache(maxsize=1 << 16)
def content_hash(content: Content) -> str:
    """Deterministic stand-in for the library's content hash (stable across processes, unlike hash())."""
    h = "b2:" + hashlib.blake2b(repr(content).encode(), digest_size=8).hexdigest()
    _HASHED[h] = content
    return h


def content_of(text: str) -> Content:
    """The content whose `content_hash` is `text`, or None if `text` is no hash this process computed."""
    return _HASHED.get(text) if text.startswith("b2:") else None


def unit(rank: int, epoch: int, attempt: str) -> tuple:
    """The abstract content of one rank's shard for one (epoch, attempt)."""
    return ("unit", rank, epoch, attempt)


def torn(old: Content, new: Content) -> tuple:
    """What a crash in the middle of an un-fsynced write can leave: neither the old nor the new bytes."""
    return ("torn", old, new)


class SimFile(NamedTuple):
    data: Content  # what a reader sees now
    durable: Content  # what survives a crash
    linked: bool  # the directory entry exists now
    linked_durable: bool  # the entry survives a crash
    owner: int  # the process (node) whose page cache holds the volatile part


class SimDisk(NamedTuple):
    """Immutable: every operation returns a new disk, so model states can share and fingerprint it."""

    files: tuple[tuple[str, SimFile], ...] = ()
    removed: tuple[str, ...] = ()  # directories deleted by remove_tree (and not re-created): nothing can be created in them

    # ---- helpers ----
    def get(self, path: str) -> SimFile | None:
        for p, f in self.files:
            if p == path:
                return f
        return None

    def _put(self, path: str, f: SimFile | None) -> "SimDisk":
        rest = [(p, g) for p, g in self.files if p != path]
        if f is not None:
            rest.append((path, f))
        return SimDisk(tuple(sorted(rest)), self.removed)

    def read(self, path: str) -> Content | _Missing:
        """What a running process reads now."""
        f = self.get(path)
        return f.data if f is not None and f.linked else MISSING

    # ---- writing ----
    def create(self, path: str, content: Content, owner: int) -> "SimDisk":
        """O_CREAT|O_EXCL then write: the entry and the bytes are volatile until fsyncs."""
        f = self.get(path)
        if f is not None and f.linked:
            raise FileExistsError(path)
        self._check_dir(path.rsplit("/", 1)[0] if "/" in path else "")
        durable = f.durable if f is not None else None
        return self._put(path, SimFile(content, durable, True, f.linked_durable if f else False, owner))

    def overwrite(self, path: str, content: Content, owner: int) -> "SimDisk":
        """open(O_TRUNC) + write in place: the old bytes stay durable until the next fsync."""
        f = self.get(path)
        if f is None or not f.linked:
            return self.create(path, content, owner)
        return self._put(path, f._replace(data=content, owner=owner))

    def write_durable(self, path: str, content: Content, owner: int) -> "SimDisk":
        """An atomic, durable replacement (temp + fsync + rename + dir fsync, all completed)."""
        return self._put(path, SimFile(content, content, True, True, owner))

    def fsync_file(self, path: str) -> "SimDisk":
        f = self.get(path)
        if f is None or not f.linked:
            raise FileNotFoundError(path)
        return self._put(path, f._replace(durable=f.data))

    def fsync_dir(self, directory: str) -> "SimDisk":
        """Make every entry change directly inside `directory` durable."""
        self._check_dir(directory)
        prefix = directory.rstrip("/") + "/"
        out = []
        for p, f in self.files:
            if p.startswith(prefix) and "/" not in p[len(prefix):]:
                if not f.linked:
                    continue  # the unlink is now durable: the file is gone for good
                f = f._replace(linked_durable=True)
            out.append((p, f))
        return SimDisk(tuple(out), self.removed)

    def unlink(self, path: str) -> "SimDisk":
        f = self.get(path)
        if f is None or not f.linked:
            return self
        if not f.linked_durable:
            return self._put(path, None)
        return self._put(path, f._replace(linked=False))

    def remove_tree(self, directory: str) -> "SimDisk":
        """`LocalFS.remove_tree`: rmtree, then fsync of the parent makes the removal durable."""
        prefix = directory.rstrip("/") + "/"
        removed = tuple(sorted(set(self.removed) | {directory.rstrip("/")}))
        return SimDisk(tuple((p, f) for p, f in self.files if not p.startswith(prefix)), removed)

    def makedirs(self, directory: str) -> "SimDisk":
        """`LocalFS.makedirs` (durable on return): re-creates a removed directory."""
        d = directory.rstrip("/")
        if not any(r == d or d.startswith(r + "/") for r in self.removed):
            return self
        return SimDisk(self.files, tuple(r for r in self.removed if not (r == d or d.startswith(r + "/"))))

    def _check_dir(self, directory: str) -> None:
        d = directory.rstrip("/")
        if any(r == d or d.startswith(r + "/") for r in self.removed):
            raise FileNotFoundError(f"{d}: directory was removed")

    # ---- crashes ----
    def has_volatile(self, owner: int) -> bool:
        return any(f.owner == owner and (f.data != f.durable or f.linked != f.linked_durable) for _, f in self.files)

    def lose_volatile(self, owner: int) -> "SimDisk":
        """A node crash: the node's page cache is gone, only what it made durable remains."""
        if not self.has_volatile(owner):
            return self
        out = []
        for p, f in self.files:
            if f.owner == owner:
                if not f.linked_durable:
                    continue
                f = f._replace(data=f.durable, linked=True)
            out.append((p, f))
        return SimDisk(tuple(out), self.removed)

    def crash_options(self, path: str) -> list[tuple[str, Content | _Missing]]:
        """Every state `path` may be in after a power failure, labelled for traces: the rules of
        `fito.model.posix_crash` (entry per its directory's fsync, bytes per the file's), on abstract contents."""
        f = self.get(path)
        if f is None:
            return [("absent", MISSING)]
        out: list[tuple[str, Content | _Missing]] = []
        for present in entry_outcomes(f.linked, f.linked_durable):
            if not present:
                out.append(("entry lost" if f.linked else "absent", MISSING))
            else:  # a name whose unlink is lost comes back with its durable bytes, not its page cache's
                out.extend((label or "intact", c) for label, c in data_outcomes(f.durable, f.data, _torn_abstract))
        return out


def _torn_abstract(old: Content, new: Content) -> list[tuple[str, Content]]:
    """Rule 2 of posix_crash on abstract contents: every torn shape (a prefix, a tail that is not the written
    bytes) is one value that is neither old nor new, as no hash check tells them apart."""
    return [("torn write", torn(old, new))]


Reader = Callable[[str], Union[Content, _Missing]]


class CrashImage(NamedTuple):
    """One post-crash disk, described by the choices made for the files recovery actually read."""

    choices: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        if not self.choices:
            return "every file recovery read was durable"
        return "; ".join(f"{_short(p)}: {label}" for p, label in self.choices)


def each_crash_image(disk: SimDisk, run: Callable[[Reader], object]) -> Iterator[tuple[CrashImage, object]]:
    """Run `run` (a recovery) against every post-crash disk, branching lazily: only files that recovery
    reads are branched on, so a recovery that reads nothing volatile runs once."""
    stack: list[tuple[int, ...]] = [()]
    while stack:
        prefix = stack.pop()
        taken: list[int] = []
        counts: list[int] = []
        seen: dict[str, Content | _Missing] = {}
        labels: list[tuple[str, str]] = []

        def read(path: str) -> Content | _Missing:
            if path in seen:
                return seen[path]
            opts = disk.crash_options(path)
            if len(opts) == 1:
                seen[path] = opts[0][1]
                return seen[path]
            i = len(taken)
            pick = prefix[i] if i < len(prefix) else 0
            taken.append(pick)
            counts.append(len(opts))
            labels.append((path, opts[pick][0]))
            seen[path] = opts[pick][1]
            return seen[path]

        result = run(read)
        yield CrashImage(tuple(labels)), result
        alternatives = []
        for i in range(len(prefix), len(taken)):
            for alt in range(1, counts[i]):
                alternatives.append(tuple(taken[:i]) + (alt,))
        stack.extend(reversed(alternatives))  # depth-first, lowest choice first: a deterministic order


def _short(path: str) -> str:
    """epochs/000000000002/a/rank-00001.fito -> e2/a/rank-1.fito (traces stay readable)."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "epochs":
        return f"e{int(parts[1])}/{parts[2]}/"
    if len(parts) >= 4 and parts[0] == "epochs":
        name = parts[-1]
        if name.startswith("rank-"):
            stem, _, ext = name.partition(".")
            name = f"rank-{int(stem[5:])}.{ext}"
        return f"e{int(parts[1])}/{parts[2]}/{name}"
    return path


short_path = _short

__all__ = [
    "Content", "CrashImage", "MISSING", "Reader", "SimDisk", "SimFile", "content_hash", "content_of", "each_crash_image",
    "short_path", "torn", "unit",
]
