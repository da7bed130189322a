"""`CheckpointManager`: the training-loop side of fito — resume or start, save every N steps and/or every
T seconds (in the background by default), keep K, and wait for the last save on exit."""
from __future__ import annotations

import os
import time
from typing import Any, MutableMapping

from fito.ckpt.checkpointer import Checkpointer
from fito.ckpt.handle import SaveHandle
from fito.commit.transport import default_transport
from fito.errors import NoCommittedEpochError


class CheckpointManager:
    """
    >>> mgr = CheckpointManager("/ckpt/run", state, every_steps=100, keep=3)
    >>> for step in range(mgr.resume(), total_steps):
    ...     train_one_step()
    ...     mgr.step(step + 1)
    >>> mgr.close()
    """

    def __init__(self, root: str | os.PathLike[str], state: MutableMapping[str, Any], *,
                 every_steps: int | None = 100, every_seconds: float | None = None, keep: int | None = 3,
                 blocking: bool = False, **checkpointer_options: Any) -> None:
        if every_steps is None and every_seconds is None:
            raise ValueError("set every_steps, every_seconds, or both")
        self.state = state
        self.every_steps, self.every_seconds, self.blocking = every_steps, every_seconds, blocking
        self.checkpointer = Checkpointer(root, keep=keep, **checkpointer_options)
        # Ranks' clocks differ: rank 0 decides time-based saves and tells the others, on a group of its own.
        self._clock = default_transport() if every_seconds is not None else None
        self._last_save = time.monotonic()

    def resume(self, *, step: int | None = None, fallback: bool = True, rank_local: Any = "error",
               strict: bool = True) -> int:
        """Restore the newest committed epoch (or `step`) into the manager's state and return its step, or 0
        when the root has no committed step yet (a given `step` that is not committed raises). `rank_local`
        says what rank-local entries (RNGState, DataPosition) do after a world-size change: "error" (default),
        "reset", {new_rank: saved_rank} or per entry (fito.ckpt.rank_local); `fallback` and `strict` (a partial
        restore, reported in `self.checkpointer.left_out`): as Checkpointer.restore."""
        try:
            return self.checkpointer.restore(self.state, step, fallback=fallback, rank_local=rank_local, strict=strict)
        except NoCommittedEpochError:
            if step is not None:
                raise
            return 0

    def due(self, step: int) -> bool:
        by_steps = self.every_steps is not None and step % self.every_steps == 0
        if self._clock is None:
            return by_steps
        elapsed = time.monotonic() - self._last_save >= (self.every_seconds or 0.0)
        return self._clock.broadcast(b"1" if (by_steps or elapsed) else b"0") == b"1"

    def step(self, step: int) -> int | SaveHandle | None:
        """Call after finishing `step`; saves when due and returns what `Checkpointer.save` returned."""
        return self.save(step) if self.due(step) else None

    def save(self, step: int) -> int | SaveHandle:
        self._last_save = time.monotonic()
        return self.checkpointer.save(step, self.state, blocking=self.blocking)

    def close(self) -> None:
        """Wait for the save in flight (raising its error) and release resources."""
        try:
            self.checkpointer.close()
        finally:
            if self._clock is not None:
                self._clock.close()

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
