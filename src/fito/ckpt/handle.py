"""The handle of a background save."""
from __future__ import annotations

from concurrent.futures import Future


class SaveHandle:
    """`wait()` returns the committed step or raises what the save raised (e.g. SaveAbortedError);
    `done()` tells without blocking; `exception()` returns the error (None if committed), blocking."""

    def __init__(self, step: int, future: Future[int]) -> None:
        self.step = step
        self._future = future
        self.observed = False  # whether the caller has seen the outcome

    def wait(self, timeout: float | None = None) -> int:
        self.observed = True
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self.observed = True
        return self._future.exception(timeout)

    def outcome(self) -> BaseException | None:
        """Block until done and return the error, without marking it as seen by the caller."""
        return self._future.exception()

    def __repr__(self) -> str:
        return f"SaveHandle(step={self.step}, done={self.done()})"
