"""The coverage check, before a manifest is written: every chunk of the global plan is vouched for exactly
once by a READY, with the size the plan expects and the epoch tag of this save. Pure: no torch, no I/O.

Keys are (fqn, chunk offsets) for tensor chunks and (fqn, None) for non-tensor values, so no name a user
chooses can collide with another."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

Key = tuple[str, tuple[int, ...] | None]


@dataclass(frozen=True)
class Voucher:
    """One item of one rank's READY."""

    rank: int
    key: Key
    length: int
    tag: int


def check_coverage(epoch: int, expected: Mapping[Key, int | None], vouchers: Iterable[Voucher], *,
                   limit: int = 5) -> list[str]:
    """Problems found (empty: covered). `expected` maps each key to its byte length (None: any length, for
    values whose encoded size the plan does not know). At most `limit` problems of each kind are named."""
    seen: dict[Key, Voucher] = {}
    twice: list[str] = []
    unknown: list[str] = []
    wrong: list[str] = []
    for v in vouchers:
        if v.key in seen:
            twice.append(f"{_name(v.key)} (ranks {seen[v.key].rank} and {v.rank})")
            continue
        seen[v.key] = v
        if v.key not in expected:
            unknown.append(f"{_name(v.key)} (rank {v.rank})")
        elif v.tag != epoch:
            wrong.append(f"{_name(v.key)}: epoch tag {v.tag}, expected {epoch} (rank {v.rank})")
        elif expected[v.key] is not None and v.length != expected[v.key]:
            wrong.append(f"{_name(v.key)}: {v.length} bytes, expected {expected[v.key]} (rank {v.rank})")
    missing = [_name(k) for k in expected if k not in seen]
    problems = []
    for label, items in (("not vouched for by any rank", missing), ("vouched for twice", twice),
                         ("not in the plan", unknown), ("vouched for wrongly", wrong)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return problems


def _name(key: Key) -> str:
    fqn, offsets = key
    return fqn if offsets is None else f"{fqn}@{list(offsets)}"
