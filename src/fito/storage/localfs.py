"""Local file system storage. Every durability step is explicit and named, so the protocol decides when
data is on disk, and the crash-state explorer can record exactly which steps a save performed.

Paths handed in are relative to the root and are confined to it: a manifest that names `../x`, an absolute
path, or a path through a symlink leaving the root is refused before anything is opened."""
from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fito.errors import CheckpointCorruptError, CheckpointUnreadableError, UnsafeCheckpointError
from fito.format.names import safe_relpath  # the one name check (fito.format.names)
from fito.storage.base import DirEntry, ObjectInfo
from fito.storage.writeback import WritebackFile

_FOREIGN_HINT = "something other than fito put it there; restore(..., fallback=True) uses the previous committed epoch"


def unreadable(rel: str, exc: OSError) -> CheckpointUnreadableError:
    """The OS refused a read of `rel` (permissions, I/O error): say so, with the errno, rather than 'corrupt'."""
    return CheckpointUnreadableError.from_os(rel, exc)


def _what(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


MAKEDIRS_TRIES = 16


def _kind(mode: int) -> str:
    return "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _kind_name(mode: int) -> str:
    return {"link": "a symbolic link", "file": "a regular file", "dir": "a directory"}.get(_kind(mode), "a special file")


class LocalFS:
    """The Storage protocol on a local (or shared POSIX) directory. Identity: `url`, the directory's plain
    absolute path as a string (what messages and `fito inspect` show); `root` is the same as a Path, for this
    backend's own POSIX work (and the SQLite log beside it)."""

    kind = "file"  # the word messages use for one stored unit
    directories = True  # real directories and links: listings come from `entries`, empty directories count

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        if isinstance(root, str) and root.startswith("file://"):
            root = root[len("file://"):]
        self.root = Path(root).absolute()
        self.url = str(self.root)
        if create:
            created = not self.root.exists()
            self.root.mkdir(parents=True, exist_ok=True)
            if created:
                self._fsync_dir_path(self.root.parent)
        elif not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a directory")
        self._real_root = self.root.resolve()

    # ---- paths ----
    def path(self, rel: str) -> Path:
        """Absolute path of `rel`, refusing anything that resolves outside the root (symlinks included)."""
        full = self.root / safe_relpath(rel)
        real = full.resolve()
        if real != self._real_root and self._real_root not in real.parents:
            raise UnsafeCheckpointError(
                path=rel, unit=None, expected=f"a path inside {self.root}", found=f"it resolves to {real}",
                hint="a symlink points out of the checkpoint root; refusing to follow it",
            )
        return full

    # ---- writing ----
    def makedirs(self, rel: str) -> None:
        """Create `rel` and missing parents, fsyncing each new directory's parent so the entry is durable.

        A parent may vanish meanwhile (an operator's `fito gc` removing an epoch directory it found empty):
        then the missing part is created again, so a live save does not fail on that race."""
        target = self.path(rel)
        for _ in range(MAKEDIRS_TRIES):
            missing = []
            p = target
            while not p.exists():
                missing.append(p)
                p = p.parent
            try:
                for d in reversed(missing):
                    self._mkdir(d)
                    self._fsync_dir_path(d.parent)
                return
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"{target}: a parent directory kept disappearing while it was created")

    def create(self, rel: str) -> BinaryIO:
        """Open a new file for writing; never opens an existing one (nothing committed is overwritten)."""
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return WritebackFile(fd)  # the disk starts on each window while the rest is written

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.create(rel) as f:
            f.write(data)

    def persist(self, rel: str) -> None:
        """fsync the file, then its directory (its entry); directories `makedirs` created are durable
        already (it fsyncs each new directory's parent)."""
        self.fsync_file(rel)
        self.fsync_dir(rel.rsplit("/", 1)[0] if "/" in rel else "")

    # POSIX primitives under `persist` (the crash-state recorder logs them one by one)
    def fsync_file(self, rel: str) -> None:
        fd = os.open(self.path(rel), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fsync_dir(self, rel: str) -> None:
        self._fsync_dir_path(self.path(rel) if rel else self.root)

    def remove_tree(self, rel: str) -> None:
        """Delete the directory `rel` and everything in it. Never through a link: a symlink anywhere on the
        way (an operator's `epochs/latest`) is refused; links inside the tree are unlinked, not followed.
        A name already gone (another collector got there first) is not an error."""
        target = self._unlinked_path(rel, "delete")
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeCheckpointError(path=rel, unit=None, expected="an attempt directory to delete",
                                        found=_kind_name(st.st_mode), hint="refusing to delete it")
        self._rmtree(target)
        self._fsync_parent(target)

    def remove_dir(self, rel: str) -> bool:
        """Remove the directory `rel` only if it is empty (non-recursive); False if it is not (something was
        created in it meanwhile) or already gone. Never through a link."""
        target = self._unlinked_path(rel, "remove")
        try:
            self._rmdir(target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        self._fsync_parent(target)
        return True

    def entries(self, rel: str) -> list[DirEntry]:
        """The names directly in directory `rel` with their kind as the file system reports them: a link is
        reported as a link and never followed. [] if `rel` does not exist or is not a directory."""
        target = self._unlinked_path(rel, "list") if rel else self.root
        try:
            with os.scandir(target) as it:
                found = []
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted while listed
                    found.append(DirEntry(e.name, _kind(st.st_mode), st.st_mtime))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(found)

    def _unlinked_path(self, rel: str, what: str) -> Path:
        """`path(rel)`, refusing a symlink at any component below the root (lstat: nothing is followed)."""
        p = self.root
        for part in safe_relpath(rel).parts:
            p = p / part
            if p.is_symlink():
                raise UnsafeCheckpointError(
                    path=rel, unit=None, expected="a path without symbolic links", found=f"{p} is a link",
                    hint=f"fito does not {what} through links; nothing was changed",
                )
        return self.path(rel)

    def _fsync_parent(self, target: Path) -> None:
        try:
            self._fsync_dir_path(target.parent)
        except FileNotFoundError:
            pass  # the parent went too (another collector removed it, and makes that durable itself)

    def remove(self, rel: str) -> None:
        """Delete the single file `rel` (a failed attempt's own partial object). A link is unlinked, not
        followed; a directory is refused; a name already gone is not an error."""
        target = self.path(rel)
        try:
            if target.is_dir() and not target.is_symlink():
                raise IsADirectoryError(f"{target}: a directory, not an object")
            os.unlink(target)
        except FileNotFoundError:
            return
        self._fsync_dir_path(target.parent)

    # ---- primitives: the single place each system call is made (the crash-state recorder hooks these) ----
    def _mkdir(self, path: Path) -> None:
        path.mkdir(exist_ok=True)  # ranks create the same attempt directory concurrently

    def _rmtree(self, path: Path) -> None:
        def gone_already(func: object, name: str, exc_info: tuple) -> None:
            if not issubclass(exc_info[0], FileNotFoundError):  # a concurrent delete of the same tree is fine
                raise exc_info[1]

        shutil.rmtree(path, onerror=gone_already)  # removes links inside, never follows them

    def _rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def _fsync_dir_path(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- reading ----
    def open_read(self, rel: str) -> BinaryIO:
        """Open a regular file for reading without following any link on the way (directories included).

        Every failure is a FitoError naming `rel`: missing -> CheckpointCorruptError, a link or a non-regular
        file -> UnsafeCheckpointError, a read the OS refuses (permissions, I/O error) -> CheckpointUnreadableError."""
        fd = self._open_leaf(rel)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeCheckpointError(path=rel, unit=None, expected="a regular file", found=_what(st.st_mode),
                                            hint=_FOREIGN_HINT)
            os.set_blocking(fd, True)  # opened non-blocking only so that a FIFO cannot hang the open
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    def read_bytes(self, rel: str, limit: int) -> bytes:
        """Read a whole small file, refusing ones larger than `limit` (hostile manifests)."""
        with self.open_read(rel) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:  # refused before anything is read or allocated
                raise UnsafeCheckpointError(path=rel, unit=None, expected=f"at most {limit} bytes", found=f"{size} bytes")
            try:
                data = f.read(limit + 1)
            except OSError as exc:
                raise unreadable(rel, exc) from None
        if len(data) > limit:
            raise UnsafeCheckpointError(path=rel, unit=None, expected=f"at most {limit} bytes", found="a larger file")
        return data

    def size(self, rel: str) -> int:
        """Size of the regular file `rel`; links are not followed (same errors as open_read)."""
        with self.open_read(rel) as f:
            return os.fstat(f.fileno()).st_size

    def _open_leaf(self, rel: str) -> int:
        """fd of `rel`, walked one component at a time from the root with O_NOFOLLOW: no link is ever
        followed, even one pointing inside the root. (The root itself is the caller's choice and may be a link.)"""
        parts = safe_relpath(rel).parts
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise unreadable(str(self.root), exc) from None
        try:
            for depth, part in enumerate(parts):
                last = depth == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
                try:
                    nxt = os.open(part, flags, dir_fd=fd)
                except OSError as exc:
                    raise self._open_error(rel, "/".join(parts[:depth + 1]), part, fd, exc) from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _open_error(self, rel: str, prefix: str, part: str, dir_fd: int, exc: OSError) -> Exception:
        if exc.errno == errno.ENOENT:
            return CheckpointCorruptError(path=rel, unit=None, expected="a file written by fito", found="no such file"
                                          + ("" if prefix == rel else f" (no {prefix})"))
        try:
            st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return unreadable(rel, exc)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(part, dir_fd=dir_fd)
            except OSError:
                target = "?"
            return UnsafeCheckpointError(
                path=rel, unit=None, expected="a regular file or directory, no symbolic links",
                found=("a" if prefix == rel else f"{prefix}: a") + f" symbolic link to {target!r}",
                hint="fito never follows links inside a checkpoint root; replace the link by the file it names, "
                     "or restore(..., fallback=True) uses the previous committed epoch",
            )
        if exc.errno == errno.ENOTDIR:
            return UnsafeCheckpointError(path=rel, unit=None, expected=f"{prefix} to be a directory",
                                         found=_what(st.st_mode), hint=_FOREIGN_HINT)
        return unreadable(rel, exc)

    def exists(self, rel: str) -> bool:
        """Whether a name is there, following no link: a link counts (dangling or not), so a reader that
        goes on is refused naming the link, instead of being told that nothing is there."""
        p = self.root
        for part in safe_relpath(rel).parts:
            p = p / part
            try:
                mode = os.lstat(p).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return False
            if stat.S_ISLNK(mode):
                return True
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every file under the directory `prefix` (recursively, by scandir; links reported as themselves and
        never followed), with its size and modification time. Nothing if `prefix` is missing."""
        stack = [prefix.strip("/")]
        while stack:
            rel = stack.pop()
            target = self._unlinked_path(rel, "list") if rel else self.root
            try:
                with os.scandir(target) as it:
                    found = list(it)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in sorted(found, key=lambda e: e.name):
                key = f"{rel}/{e.name}" if rel else e.name
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while listed
                if stat.S_ISDIR(st.st_mode):
                    stack.append(key)
                else:
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, rel: str) -> None:
        """Delete the file `rel`, or the directory `rel` and everything in it (`remove_tree`: never through a
        link); a link is unlinked, never followed; gone already is fine."""
        parent = rel.rpartition("/")[0]
        if parent:
            self._unlinked_path(parent, "delete")  # no link on the way to it
        try:
            st = os.lstat(self.root / safe_relpath(rel))
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self.remove_tree(rel)
        else:
            self.remove(rel)

    def listdir(self, rel: str) -> list[str]:
        """The names in directory `rel` ([] if it is missing or not a directory); a link on the way is
        refused (UnsafeCheckpointError), never listed through."""
        target = self._unlinked_path(rel, "list") if rel else self.root
        try:
            return sorted(os.listdir(target))
        except (FileNotFoundError, NotADirectoryError):
            return []
