"""Retention and garbage: runs only after a commit is durable. Keeps the newest `keep` committed epochs
(the newest is never removed), retires a decision in the log BEFORE deleting its files (so recovery never
picks an epoch whose files are going away), and removes attempts no committed decision names."""
from __future__ import annotations

import time

from fito.coord.base import DecisionStore
from fito.protocol.layout import owns
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
    log_id = store.log_id()  # only this log's attempts (fito.protocol.layout.owns)
    for epoch_name in storage.listdir("epochs"):
        epoch_rel = f"epochs/{epoch_name}"
        for attempt_name in storage.listdir(epoch_rel):
            rel = f"{epoch_rel}/{attempt_name}"
            if rel in live or not owns(attempt_name, log_id=log_id, fence=fence):
                continue
            if time.time() - storage.path(rel).stat().st_mtime >= grace_seconds:
                storage.remove_tree(rel)
                removed.append(rel)
        if not storage.listdir(epoch_rel):
            storage.remove_tree(epoch_rel)
    return removed
