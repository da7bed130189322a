"""Recovery reads decisions only: the newest committed epoch that verifies whole, or an error."""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

D = TypeVar("D")


def choose_epoch(
    committed: Sequence[D], verify: Callable[[D], Exception | None], *, fallback: bool
) -> tuple[D, list[tuple[D, Exception]]]:
    """Walk committed decisions newest first. Return the first that verifies, plus the ones skipped and why.

    Without `fallback`, the newest committed epoch must verify or its error is raised: silently loading an
    older step than the user expects is itself a surprise, so going back is opt-in."""
    skipped: list[tuple[D, Exception]] = []
    for decision in reversed(committed):
        error = verify(decision)
        if error is None:
            return decision, skipped
        if not fallback:
            raise error
        skipped.append((decision, error))
    if skipped:
        raise skipped[0][1]
    raise LookupError("no committed epoch")
