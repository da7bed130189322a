"""Attempt ids and the fence policy: when a coordinator takes a fencing token, and how its attempts are named.

The policy is one of two, named here so that the library and the checker speak of the same thing:
- PER_LIFE (`fito.Checkpointer`): the token is taken before the first write of the first save and held for
  the coordinator's whole life; every later save reuses it, so a save of an older, fenced-out Checkpointer
  (a zombie of a previous run) is refused when it publishes.
- PER_SAVE (a bare `fito.dcp.Writer`): every save takes a new token before its first write.
Either way the token is taken before the coordinator's first write or GC of a save (DESIGN, rule 7), never
lazily at the first publish (the model checker found that a zombie could then delete live work).

Names are built by `fito.protocol.layout` only; this module supplies the clock and the nonce."""
from __future__ import annotations

import enum
import secrets
import time
from typing import Callable

from fito.coord.base import DecisionStore
from fito.protocol.layout import attempt_name


class FencePolicy(enum.Enum):
    PER_LIFE = "per-life"
    PER_SAVE = "per-save"


def attempt_id(fence: int, log_id: str | None) -> str:
    """Unique per attempt; names the coordinator's fence and its log, so retention never deletes a newer
    coordinator's work nor another log's (fito.protocol.layout)."""
    return attempt_name(fence, log_id, time.time_ns() // 1_000_000, secrets.token_hex(4))


class Fence:
    """A coordinator's hold on its store's fencing token under one FencePolicy.

    `take(store)` returns the token this save runs under (a new one per save, or the one held for life);
    `source`: a caller that already holds a token (a Checkpointer handing its own to the Writer it drives)
    gives it here, and the policy is then the caller's."""

    def __init__(self, policy: FencePolicy, source: Callable[[], int] | None = None) -> None:
        self.policy = policy
        self.source = source
        self.token: int | None = None
        self.log_id: str | None = None

    def take(self, store: DecisionStore) -> int:
        if self.source is not None:
            self.token, self.log_id = self.source(), store.log_id()
        elif self.token is None or self.policy is FencePolicy.PER_SAVE:
            self.token = store.acquire_fence()
            self.log_id = store.log_id()
        return self.token

    def held(self) -> int:
        """The token taken by `take`; only a coordinator that began a save holds one."""
        if self.token is None:
            raise RuntimeError("no fencing token is held: only the coordinator (rank 0) takes one, at its first save")
        return self.token

    def new_attempt(self, store: DecisionStore) -> str:
        """Take the token the policy says, and name a new attempt under it (and under the store's identity)."""
        return attempt_id(self.take(store), self.log_id)
