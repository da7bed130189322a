"""Retention and garbage: runs only after a commit is durable. Keeps the newest `keep` committed epochs
(the newest is never removed), retires a decision in the log BEFORE deleting its files (so recovery never
picks an epoch whose files are going away), and removes attempts no committed decision names."""
from __future__ import annotations

import time

from fito.coord.base import DecisionStore
from fito.protocol.messages import attempt_dir
from fito.storage.localfs import LocalFS


def collect_garbage(storage: LocalFS, store: DecisionStore, fence: int, keep: int | None, *,
                    grace_seconds: float = 0.0) -> list[str]:
    """`grace_seconds`: leave undecided attempts younger than this alone (an operator's `fito gc` may run
    while a job is mid-save; the job's own collection runs between saves and uses 0)."""
    removed: list[str] = []
    committed = store.committed()
    if keep is not None and len(committed) > keep:
        for d in committed[: len(committed) - keep]:
            store.retire(d.epoch, d.attempt, fence)
            storage.remove_tree(attempt_dir(d.epoch, d.attempt))
            removed.append(attempt_dir(d.epoch, d.attempt))
    live = {attempt_dir(d.epoch, d.attempt) for d in store.committed()}
    if store.current_fence() != fence:
        return removed  # another coordinator took over: its in-flight attempts are not ours to judge
    for epoch_name in storage.listdir("epochs"):
        epoch_rel = f"epochs/{epoch_name}"
        for attempt_name in storage.listdir(epoch_rel):
            rel = f"{epoch_rel}/{attempt_name}"
            if rel in live or not _older_coordinator(attempt_name, fence):
                continue
            if time.time() - storage.path(rel).stat().st_mtime >= grace_seconds:
                storage.remove_tree(rel)
                removed.append(rel)
        if not storage.listdir(epoch_rel):
            storage.remove_tree(epoch_rel)
    return removed


def _older_coordinator(attempt_name: str, fence: int) -> bool:
    """Attempt directories are named f<fence>-...: only those of this coordinator or older ones are garbage
    to it. A newer coordinator's attempt (or a name fito did not write) is never deleted."""
    head = attempt_name.split("-", 1)[0]
    return head.startswith("f") and head[1:].isdigit() and int(head[1:]) <= fence
