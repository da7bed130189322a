"""Reading whole blocks of an object and checking each block's hash against the manifest's.

Reads are long (runs of fito.knobs.read_run_bytes(): the disk streams long reads faster than block-sized
ones). Hashing overlaps reading: each run is hashed in one helper thread while the next run -- of the same
item or of the next one -- is read (both release the GIL). A restore defers its checks and `settle()`s them
all before its vote, so nothing is applied from an unchecked block; a caller that uses the bytes at once
(a value to decode) asks for them checked now."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Callable

from fito import knobs
from fito.errors import CheckpointCorruptError
from fito.format.manifest import Piece
from fito.format.objects import block_digest

HINT = "an earlier committed step may still be whole: Checkpointer.restore(..., fallback=True) or Reader(root, step=...)"


class BlockReads:
    """One load's block reads. Use as a context manager: the helper thread lives for the load only."""

    def __init__(self, algorithm: str, block_bytes: int, progress: Callable[[int], None] | None = None) -> None:
        self.algorithm, self.block_bytes, self.progress = algorithm, block_bytes, progress
        self._hasher: ThreadPoolExecutor | None = None
        self._deferred: list[tuple[list[Future[list[str]]], Piece, int, str, str]] = []

    def __enter__(self) -> "BlockReads":
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="fito-verify")
        return self

    def __exit__(self, *exc: object) -> None:
        hasher, self._hasher = self._hasher, None
        if hasher is not None:
            hasher.shutdown(wait=True)
        self._deferred.clear()

    def read(self, f: BinaryIO, view: memoryview, at: int, piece: Piece, first: int, file: str, fqn: str, *,
             now: bool) -> None:
        """Read blocks `first`... of `piece` into `view` (which starts at byte `at` of the object `file`), and
        check them: before returning if `now`, else at `settle()`."""
        size = self.block_bytes
        run_bytes = max(size, knobs.read_run_bytes() // size * size)
        runs: list[Future[list[str]]] = []
        for lo in range(0, max(len(view), 1), run_bytes):
            run = view[lo:lo + run_bytes]
            self._read_into(f, run, at + lo, file, fqn, seek=lo == 0)  # then each run follows the last
            if self._hasher is None:
                done: Future[list[str]] = Future()
                done.set_result(self._digests(run))
                runs.append(done)
            else:
                runs.append(self._hasher.submit(self._digests, run))
        if now:
            self._check(runs, piece, first, file, fqn)
        else:
            self._deferred.append((runs, piece, first, file, fqn))

    def settle(self) -> None:
        """Check every deferred read, in read order: the first damaged block raises."""
        deferred, self._deferred = self._deferred, []
        for runs, piece, first, file, fqn in deferred:
            self._check(runs, piece, first, file, fqn)

    def _digests(self, run: memoryview) -> list[str]:
        size = self.block_bytes
        return [block_digest(self.algorithm, run[lo:lo + size]) for lo in range(0, max(len(run), 1), size)]

    def _check(self, runs: list[Future[list[str]]], piece: Piece, first: int, file: str, fqn: str) -> None:
        found = [d for r in runs for d in r.result()]
        for b, got in enumerate(found, start=first):
            if got != piece.blocks[b]:
                raise CheckpointCorruptError(path=file, unit=f"{fqn} block {b}", expected=f"{self.algorithm}:{piece.blocks[b]}",
                                             found=f"{self.algorithm}:{got}", hint=HINT)

    def _read_into(self, f: BinaryIO, view: memoryview, at: int, file: str, fqn: str, seek: bool) -> None:
        if seek:
            f.seek(at)
        got = 0
        while got < len(view):
            n = f.readinto(view[got:])
            if not n:
                raise CheckpointCorruptError(path=file, unit=fqn, expected=f"{len(view)} bytes at {at}", found=f"{got}")
            got += n
            if self.progress is not None:
                self.progress(n)
