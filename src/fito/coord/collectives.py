"""Epoch-tagged collectives: a thin wrapper over `torch.distributed` that refuses to combine payloads
prepared under different protocol epochs.

Before each payload collective, every rank contributes a small tag (epoch, call sequence number, op code)
to an all_reduce(MAX) of (tag, -tag), which yields the maximum and minimum of every field on every rank.
All ranks receive the same result, so they reach the same verdict: either every
rank runs the payload collective, or every rank raises EpochMismatchError and the payload is untouched.
No mixed collective can run, and no common knowledge is needed for that (correction 10 (docs/corrections.md)): the
price is an aborted collective while nodes disagree, plus one small all_reduce per call.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fito.errors import EpochFencedError, EpochMismatchError

FENCED = -1  # tag of a rank whose admission was refused
_OPS = {"all_reduce": 1, "all_gather": 2, "broadcast": 3, "barrier": 4}


@dataclass
class CollectiveStats:
    completed: int = 0
    aborted: int = 0


class EpochTaggedCollectives:
    """Wraps one process group. `epoch` is where a rank's current protocol epoch comes from (e.g. an
    `EpochFollower`'s `epoch` property); `admit`, if given, runs before each collective (the consensus
    fence, e.g. `EpochFollower.before_collective`: it raises EpochFencedError for a node that has not
    observed the newest decision, and may return the epoch it admitted)."""

    def __init__(
        self, epoch: Callable[[], int], *, group: dist.ProcessGroup | None = None,
        admit: Callable[[], object] | None = None,
    ) -> None:
        self.epoch_source, self.group, self.admit = epoch, group, admit
        self.seq = 0
        self.stats = CollectiveStats()

    def check(self, op: str, epoch: int | None = None) -> int:
        """Agree on the epoch of the next collective or abort it on every rank. Returns the epoch.

        A rank refused by `admit` still takes part in the tag exchange, with the marker epoch -1, so its
        peers abort at once instead of waiting for it until the process-group timeout."""
        fenced: EpochFencedError | None = None
        e = self.epoch_source() if epoch is None else epoch
        if self.admit is not None:
            try:
                admitted = self.admit()
                if isinstance(admitted, int) and admitted != e:
                    raise EpochFencedError(f"admitted at epoch {admitted}, payload prepared under epoch {e}")
            except EpochFencedError as exc:
                fenced, e = exc, FENCED
        self.seq += 1
        tag = torch.tensor([e, self.seq, _OPS[op]], dtype=torch.int64)
        # one small all_reduce(MAX) of (tag, -tag): every rank gets max and -min of each field, and the
        # same verdict; only on a mismatch do the ranks gather each other's tags for the error message
        both = torch.cat([tag, -tag])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        if torch.equal(both[:3], -both[3:]) and fenced is None:
            return e
        world = dist.get_world_size(self.group)
        tags = [torch.empty_like(tag) for _ in range(world)]
        dist.all_gather(tags, tag, group=self.group)
        rows = [tuple(int(x) for x in t.tolist()) for t in tags]
        self.stats.aborted += 1
        by_rank = ", ".join(f"rank {r}: {_epoch(row[0])} call #{row[1]} {_name(row[2])}" for r, row in enumerate(rows))
        if fenced is not None:
            raise EpochFencedError(f"collective #{self.seq} ({op}) aborted: this rank was fenced out ({fenced}); "
                                   f"peers were told ({by_rank})") from fenced
        raise EpochMismatchError(
            f"collective #{self.seq} ({op}) aborted on every rank before combining payloads: participants "
            f"disagree ({by_rank}). Ranks must observe the committed epoch (sync) and retry the step."
        )
        return e

    def all_reduce(self, tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM, *,
                   epoch: int | None = None) -> int:
        """In-place all_reduce of a payload prepared under `epoch` (default: the current epoch)."""
        e = self.check("all_reduce", epoch)
        dist.all_reduce(tensor, op=op, group=self.group)
        self.stats.completed += 1
        return e

    def all_gather(self, out: list[torch.Tensor], tensor: torch.Tensor, *, epoch: int | None = None) -> int:
        e = self.check("all_gather", epoch)
        dist.all_gather(out, tensor, group=self.group)
        self.stats.completed += 1
        return e

    def broadcast(self, tensor: torch.Tensor, src: int, *, epoch: int | None = None) -> int:
        e = self.check("broadcast", epoch)
        dist.broadcast(tensor, src=src, group=self.group)
        self.stats.completed += 1
        return e

    def barrier(self, *, epoch: int | None = None) -> int:
        e = self.check("barrier", epoch)
        self.stats.completed += 1
        return e


def _epoch(value: int) -> str:
    return "fenced out" if value == FENCED else f"epoch {value}"


def _name(code: int) -> str:
    return next((k for k, v in _OPS.items() if v == code), f"op{code}")
