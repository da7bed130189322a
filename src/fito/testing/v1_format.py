"""The per-rank full-replica writer of fito's first format (`fito-manifest/1`), kept so tests can make the
checkpoints that jobs of earlier versions left on disk and pin that they still restore. `fito.Checkpointer`
itself only writes the sharded format; its read path for this one is fito.ckpt.per_rank_read.

    save_v1(checkpointer, step, state)   # blocking, like Checkpointer.save(step, state)

Each rank writes one shard holding every entry whole (fito.ckpt.shard); the decision runs through the same
Participant and Coordinator machines as the sharded core, driven here over the Checkpointer's transport."""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from fito.ckpt import manifest as manifest_mod
from fito.commit.failure import at as failed_at
from fito.ckpt.per_rank_read import MAX_STATE_BYTES, STATE_FORMAT, STATE_UNIT
from fito.commit.retention import collect_garbage
from fito.ckpt.shard import write_shard
from fito.ckpt.checkpointer import VALIDATION_ENTRY
from fito.ckpt.state import capture
from fito.plan.tree import encode
from fito.commit.executor import discard, publish_decision
from fito.errors import SaveAbortedError, StateMismatchError
from fito.format.hashing import digest
from fito.plan.values import tensor_bytes
from fito.protocol import (
    Begin, CollectGarbage, Coordinator, DecisionPublished, ManifestWritten, Notify, Participant, Persist, Persisted,
    PublishDecision, RankFailed, Ready, ReadyReceived, SendReady, UnitEntry, WriteManifest, WriteShard,
)
from fito.protocol.messages import attempt_dir

if TYPE_CHECKING:
    from fito.ckpt.checkpointer import Checkpointer

log = logging.getLogger("fito")


def save_v1(ck: "Checkpointer", step: int, state: Mapping[str, Any]) -> int:
    """Save `state` as step `step` in the per-rank format (fito-manifest/1), blocking; every rank calls it."""
    ck.settle_previous("wait")
    return _commit(ck, step, _units(ck, state))


def _commit(ck: "Checkpointer", step: int, units: list[tuple[str, memoryview]]) -> int:
    """Run the protocol for one attempt over `units` (views that stay valid until this returns)."""
    new_id = ck.take_fence().encode() if ck.rank == 0 else None
    attempt = ck.transport.broadcast(new_id).decode()
    if attempt.startswith("!"):
        ck.refuse_start(step, attempt[1:])  # rank 0: the store's own error, as the cause
    ready, local_error = _participate(ck, step, attempt, units)
    message = json.dumps(_ready_to_json(ready) if ready else {"failed": local_error}).encode()
    try:
        gathered = ck.transport.gather(message)
    except Exception as exc:  # a peer died or timed out inside the collective
        if ck.rank == 0:
            _record_abort(ck, step, attempt, f"collective failed: {exc}")
        raise SaveAbortedError(
            f"save of step {step} aborted: lost contact with another rank ({exc}); "
            "the previous committed epoch is intact — restart the job and restore"
        ) from exc
    notify = _coordinate(ck, step, attempt, gathered) if ck.rank == 0 else None
    try:
        word = json.loads(ck.transport.broadcast(json.dumps(notify).encode() if notify else None))
    except Exception as exc:
        raise SaveAbortedError(
            f"save of step {step}: the coordinator could not be reached for the outcome ({exc}); it may or may "
            f"not have committed — `fito inspect {ck.root}` shows the decision log"
        ) from exc
    if ck.rank == 0 and word["outcome"] != "commit" and notify and notify.get("clean"):
        _discard_attempt(ck, step, attempt)
    if ck.rank == 0 and word["outcome"] == "commit":
        _collect_garbage(ck, step, attempt)
    if word["outcome"] != "commit":
        raise SaveAbortedError(f"save of step {step} aborted: {word.get('reason') or 'unknown reason'}; "
                               "the previous committed epoch is intact")
    return step


def _collect_garbage(ck: "Checkpointer", step: int, attempt: str) -> None:
    """Retention after a durable commit. The step IS committed, so a failure here only warns: whatever
    was not cleaned up is collected after the next commit, or by `fito gc`."""
    try:
        collect_garbage(ck.storage, ck.store, ck.coordinator_fence(), ck.keep, newest=(step, attempt))
    except Exception as exc:  # noqa: BLE001 - nothing here may turn a commit into a failed save
        log.warning("step %d committed, but cleaning up older attempts failed (%s: %s); they are retried after "
                    "the next save, or run `fito gc %s`", step, type(exc).__name__, exc, ck.root)


def _units(ck: "Checkpointer", state: Mapping[str, Any]) -> list[tuple[str, memoryview]]:
    arrays: list[tuple[str, Any]] = []
    captured = capture(state)
    if ck.validator is not None:
        captured[VALIDATION_ENTRY] = {"kind": "value", "data": ck.validation_loss()}
    tree = encode(captured, "", arrays)
    doc = json.dumps({"format": STATE_FORMAT, "tree": tree}, separators=(",", ":")).encode()
    if len(doc) > MAX_STATE_BYTES:  # restore refuses larger state trees: never write what cannot be read
        raise StateMismatchError(f"the non-tensor state is {len(doc):,} bytes of JSON, over the {MAX_STATE_BYTES:,}-byte "
                                 "limit; keep large data in tensors or numpy arrays")
    units = [(STATE_UNIT, memoryview(doc))]
    for path, a in arrays:
        data = tensor_bytes(a) if isinstance(a, torch.Tensor) else memoryview(a).cast("B")
        entry, _data, *rest = path.lstrip("/").split("/")  # "/model/data/0.weight" -> "model/0.weight"
        units.append(("/".join([entry, *rest]), data))
    return units


def _participate(ck: "Checkpointer", step: int, attempt: str, units: list[tuple[str, memoryview]]) -> tuple[Ready | None, str]:
    participant = Participant(ck.rank)
    events: list[Any] = [Begin(step, attempt)]
    ready: Ready | None = None
    total = sum(len(u) for _, u in units)
    phase, where, own = "unit write", attempt_dir(step, attempt), ""
    try:
        with ck.progress_bar(f"save step {step}", total) as advance:
            while events:
                participant, commands = participant.handle(events.pop(0))
                for cmd in commands:
                    if isinstance(cmd, WriteShard):
                        phase, where, own = "unit write", cmd.path, cmd.path
                        ck.storage.makedirs(attempt_dir(cmd.epoch, cmd.attempt))
                        events.append(write_shard(ck.storage, cmd.path, epoch=cmd.epoch, rank=cmd.rank,
                                                  units=units, algorithm=ck.algorithm, progress=advance))
                    elif isinstance(cmd, Persist):
                        phase, where = "persist", cmd.path
                        ck.storage.persist(cmd.path)
                        events.append(Persisted(cmd.path))
                    elif isinstance(cmd, SendReady):
                        ready = cmd.ready
    except Exception as exc:  # report to the coordinator instead of leaving it waiting
        log.exception("rank %d failed to persist step %d", ck.rank, step)
        if own:
            _discard(ck, own, ck.storage.remove)  # a failed save cleans up its own attempt
        return None, failed_at(phase, where, exc)
    return ready, ""


def _coordinate(ck: "Checkpointer", step: int, attempt: str, gathered: list[bytes] | None) -> dict[str, str]:
    assert gathered is not None
    coordinator = Coordinator(ck.world_size)
    events: list[Any] = [Begin(step, attempt, ck.coordinator_fence())]
    for rank, raw in enumerate(gathered):
        msg = json.loads(raw)
        events.append(RankFailed(rank, msg["failed"]) if "failed" in msg else ReadyReceived(_ready_from_json(msg)))
    notify: Notify | None = None
    phase, where, sent_commit = "manifest write", attempt_dir(step, attempt), False
    try:
        while events:
            coordinator, commands = coordinator.handle(events.pop(0))
            for cmd in commands:
                if isinstance(cmd, WriteManifest):
                    phase, where = "manifest write", cmd.path
                    data = manifest_mod.build(cmd.epoch, cmd.attempt, cmd.readies, ck.algorithm)
                    ck.storage.write_bytes(cmd.path, data)
                    events.append(ManifestWritten(cmd.path, digest(ck.algorithm, data)))
                elif isinstance(cmd, Persist):
                    phase, where = "persist", cmd.path
                    ck.storage.persist(cmd.path)
                    events.append(Persisted(cmd.path))
                elif isinstance(cmd, PublishDecision) and cmd.outcome == "abort":
                    # The abort record is a courtesy (presumed abort holds without it): failing to write
                    # it (a full disk) must not hide why the attempt aborted.
                    _record_abort(ck, cmd.epoch, cmd.attempt, coordinator.reason)
                    events.append(DecisionPublished("abort"))
                elif isinstance(cmd, PublishDecision):
                    phase, where, sent_commit = "publish", f"step {cmd.epoch}'s decision", True
                    events.append(publish_decision(ck.store, cmd))
                elif isinstance(cmd, Notify):
                    notify = cmd
                elif isinstance(cmd, CollectGarbage):
                    pass  # done after the ranks are told; see save()
    except Exception as exc:
        log.exception("coordinator failed during step %d", step)
        notify = Notify(step, attempt, "abort", f"rank 0 (coordinator) failed: {failed_at(phase, where, exc)}")
    if notify is None:
        notify = Notify(step, attempt, "abort", f"protocol ended in phase {coordinator.phase.value}")
    # Files of an abort may go at once only if no commit was ever sent: a commit whose reply was lost may
    # still land, and then its files must be there (GC removes them later if it did not).
    return {"outcome": notify.outcome, "reason": notify.reason, "clean": notify.outcome == "abort" and not sent_commit}


def _record_abort(ck: "Checkpointer", step: int, attempt: str, reason: str) -> None:
    try:
        publish_decision(ck.store, PublishDecision(step, attempt, "abort", fence=ck.coordinator_fence()))
    except Exception:  # the abort record is a courtesy; presumed abort already holds
        log.warning("could not record the abort of step %d (%s)", step, reason, exc_info=True)


def _discard(ck: "Checkpointer", rel: str, remove: Callable[[str], None]) -> None:
    """Best effort: delete what a failed attempt left; GC after the next commit removes anything left."""
    try:
        remove(rel)
    except Exception as exc:  # noqa: BLE001 - the save already failed; say so, do not mask it
        log.warning("could not remove %s of a failed save (%s); GC after the next commit removes it", rel, exc)


def _discard_attempt(ck: "Checkpointer", step: int, attempt: str) -> None:
    """Coordinator, after an abort decided before any commit was sent: every rank is past writing. The GC
    plan's discard (by name, directories non-recursively), as the library's executor runs it."""
    discard(ck.storage, step, attempt, ck.world_size)


def _ready_to_json(r: Ready) -> dict[str, Any]:
    return {"epoch": r.epoch, "attempt": r.attempt, "rank": r.rank, "file": r.file, "size": r.size,
            "units": [[u.name, u.offset, u.length, u.hash, u.epoch] for u in r.units]}


def _ready_from_json(d: dict[str, Any]) -> Ready:
    return Ready(d["epoch"], d["attempt"], d["rank"], d["file"], d["size"], tuple(UnitEntry(*u) for u in d["units"]))
