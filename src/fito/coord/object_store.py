"""The decision log on the checkpoint's own storage: nothing beside the objects (S3, or a POSIX directory
shared by several machines), written only by put-if-absent (fito.coord.object_log).

The log is a sequence of small, immutable entries at contiguous slots `log/00000000000000000001`, ...
Every change (the log's identity, a fencing token, a decision, a retirement) is appended at the slot after
the last one read, by a put-if-absent: a writer whose append loses the slot to another reads the new entries
and decides again. The slot order is therefore one total order (linearizable on S3's strong read-after-write
and list consistency, and on POSIX link(2)), and each check a writer makes ("my fence is current", "a newer
commit is live") holds exactly at the slot it appends at: a compare-and-swap on the log's tail.

- Fencing: a fence entry's token is the previous token + 1; a decision or fenced retirement counts only if
  its fence equals the current token at its slot (replay applies the same rules, so an entry that breaks them
  changes nothing).
- Idempotent retries: each entry carries a random id; an append whose reply was lost finds its own id in the
  slot on retry. A decision id already in the log returns the stored record.
- The store is probed before its first write: a put-if-absent repeated must fail, or the store is refused
  (ConditionalWriteUnsupportedError). Readers take nothing and write nothing.

A handle caches the entries it has read (they never change), so each call lists and reads only new slots. Every
SNAPSHOT_EVERY slots the writer also leaves `snap/<slot>`, the state replayed through that slot (put-if-absent,
deterministic content, so racing writers agree); a new handle starts from the newest snapshot and reads only the
slots after it."""
from __future__ import annotations

import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable

from fito.coord.base import Decision, DecisionStore, new_log_id
from fito.coord.object_log import ConditionalObjects, LocalObjects, S3Objects, probe
from fito.errors import DecisionLogDamagedError, DecisionLogMissingError, RetireRefusedError, StaleFenceError
from fito.protocol.layout import STEPS, valid_log_id

LOG = "log/"
SNAP = "snap/"
SNAPSHOT_EVERY = 256
SLOT_DIGITS = 20
APPEND_TRIES = 10_000  # bounded: each lost slot means another writer made progress


def _slot_key(slot: int, where: str = LOG) -> str:
    return f"{where}{slot:0{SLOT_DIGITS}d}"


def _slot_of(key: str, where: str) -> int | None:
    tail = key[len(where):]
    return int(tail) if len(tail) == SLOT_DIGITS and tail.isdigit() else None


class _State:
    """The log replayed: its identity, the current fence, the decisions (seq = slot)."""

    def __init__(self) -> None:
        self.log_id: str | None = None
        self.fence = 0
        self.decisions: list[Decision] = []
        self.by_id: dict[str, int] = {}  # decision_id -> index in decisions

    def dump(self, slot: int) -> bytes:
        return json.dumps({"slot": slot, "log_id": self.log_id, "fence": self.fence,
                           "decisions": [_entry_of(d) for d in self.decisions]}, sort_keys=True).encode()

    @classmethod
    def load(cls, raw: bytes, slot: int) -> "_State":
        o = json.loads(raw)
        if not isinstance(o, dict) or o.get("slot") != slot or not valid_log_id(o.get("log_id")):
            raise ValueError(f"not the snapshot of slot {slot}")
        state = cls()
        state.log_id, state.fence = o["log_id"], int(o["fence"])
        for e in o["decisions"]:
            d = replace(_decision(e, int(e["seq"])), retired=bool(e["retired"]))
            state.by_id[d.decision_id] = len(state.decisions)
            state.decisions.append(d)
        return state

    def newest_live_commit_blocks(self, epoch: int, attempt: str) -> bool:
        """Whether retiring (epoch, attempt) would retire the newest live commit (refused)."""
        live = [d.seq for d in self.decisions if d.outcome == "commit" and not d.retired]
        target = [d.seq for d in self.decisions if d.epoch == epoch and d.attempt == attempt
                  and d.outcome == "commit" and not d.retired]
        return bool(target) and not any(s > max(target) for s in live)

    def apply(self, slot: int, e: dict[str, Any]) -> None:
        op = e["op"]
        if slot == 1:
            if op != "init" or not valid_log_id(e.get("log_id")):
                raise ValueError("the first entry is not the log's identity")
            self.log_id = e["log_id"]
            self.fence = int(e.get("fence_floor", 0))  # a recovered log's first fence is above every old one
        elif op == "fence":
            if int(e["token"]) == self.fence + 1:
                self.fence += 1
        elif op == "decision":
            d = _decision(e, slot)
            if d.decision_id not in self.by_id and d.fence == self.fence:
                self.by_id[d.decision_id] = len(self.decisions)
                self.decisions.append(d)
        elif op == "retire":
            fence, epoch, attempt = e["fence"], int(e["epoch"]), str(e["attempt"])
            if (fence is None or int(fence) == self.fence) and not self.newest_live_commit_blocks(epoch, attempt):
                self.decisions = [replace(d, retired=True) if d.epoch == epoch and d.attempt == attempt else d
                                  for d in self.decisions]
        else:
            raise ValueError(f"unknown entry kind {op!r}")


def _entry_of(d: Decision) -> dict[str, Any]:
    return {"epoch": d.epoch, "attempt": d.attempt, "outcome": d.outcome, "manifest": d.manifest,
            "manifest_hash": d.manifest_hash, "decision_id": d.decision_id, "fence": d.fence, "seq": d.seq,
            "retired": d.retired, "created": d.created}


def _decision(e: dict[str, Any], slot: int) -> Decision:
    if e["outcome"] not in ("commit", "abort"):
        raise ValueError(f"unknown outcome {e['outcome']!r}")
    return Decision(epoch=int(e["epoch"]), attempt=str(e["attempt"]), outcome=e["outcome"],
                    manifest=str(e["manifest"]), manifest_hash=str(e["manifest_hash"]),
                    decision_id=str(e["decision_id"]), fence=int(e["fence"]), seq=slot, retired=False,
                    created=float(e["created"]))


class ObjectDecisionStore(DecisionStore):
    """Decisions and fencing tokens as put-if-absent objects (see the module docstring).

    `objects`: where (fito.coord.object_log.S3Objects / LocalObjects); `for_storage` picks them for a
    checkpoint storage. `readonly=True`: never write (a reader's handle). `attempts`: the step prefixes that
    already hold attempts (for_storage lists the storage's); a log that would be started beside them is
    refused (DecisionLogMissingError), as the SQLite log is, unless `replace_lost=True`."""

    def __init__(self, objects: ConditionalObjects, *, readonly: bool = False,
                 attempts: Callable[[], list[str]] | None = None, replace_lost: bool = False) -> None:
        self.objects, self.readonly = objects, readonly
        self._attempts = None if replace_lost else attempts
        self._entries: dict[int, dict[str, Any]] = {}  # the slots read one by one (after the snapshot)
        self._tail = 0  # the last slot replayed
        self._state = _State()
        self._probed = False
        self._lock = threading.RLock()

    @classmethod
    def for_storage(cls, storage: Any, *, readonly: bool = False, replace_lost: bool = False) -> "ObjectDecisionStore":
        """The store kept under `<root>/decisions.d/` of a checkpoint storage: S3Storage's bucket and prefix, or
        a LocalFS directory (for a POSIX root several machines share). `replace_lost=True`: start a new log
        even beside existing attempts (they are then never restored nor deleted by it)."""
        from fito.storage.listing import names  # the storage's listing, by prefix

        def attempts() -> list[str]:
            return sorted(names(storage, STEPS))
        objects = getattr(storage, "decision_objects", None)
        where = objects() if objects is not None else LocalObjects(storage.root / "decisions.d")
        store = cls(where, readonly=readonly, attempts=attempts, replace_lost=replace_lost)
        if not readonly and store.log_id() is None:
            store._refuse_if_lost()  # at open, as the SQLite log refuses: before the job starts training
        return store

    @classmethod
    def create_new(cls, objects: ConditionalObjects, *, fence_floor: int = 0,
                   origin: str = "new") -> "ObjectDecisionStore":
        """A log with a new identity whose first fence is fence_floor + 1 (`fito recover-log`, beside existing
        attempts); FileExistsError if the log has an entry already (it is the record, never replaced)."""
        store = cls(objects)
        if objects.list(LOG) or objects.list(SNAP):
            raise FileExistsError(f"{objects.where}: a decision log exists already; not replacing it")
        with store._lock:
            probe(objects, "probe/")
            store._probed = True
            entry = {"op": "init", "log_id": new_log_id(), "fence_floor": int(fence_floor), "origin": origin,
                     "id": secrets.token_hex(12)}
            raw = json.dumps(entry, sort_keys=True).encode()
            if not objects.create(_slot_key(1), raw):
                raise FileExistsError(f"{objects.where}: a decision log was created meanwhile; not replacing it")
            store._add(1, raw)
        return store

    # ---------------------------------------------------------------- reading
    def _refresh(self) -> _State:
        """Read the slots written since the last call and replay them (entries never change once written)."""
        with self._lock:
            if self._tail == 0:
                self._load_snapshot()
            known = self._tail
            keys = self.objects.list(LOG, after=_slot_key(known))
            slots = []
            for k in keys:
                slot = _slot_of(k, LOG)
                if slot is None:
                    raise self._damaged(k, "only slot objects under log/", f"an object named {k[len(LOG):]!r}")
                slots.append(slot)
            if slots != list(range(known + 1, known + 1 + len(slots))):
                raise self._damaged(LOG, f"contiguous slots from {known + 1}", f"slots {slots[:8]}")
            with ThreadPoolExecutor(max_workers=min(16, max(1, len(slots)))) as pool:
                raws = list(pool.map(self.objects.get, [_slot_key(s) for s in slots]))
            for slot, raw in zip(slots, raws):
                if raw is None:
                    raise self._damaged(_slot_key(slot), "the entry the listing showed", "no object")
                self._add(slot, raw)
            return self._state

    def _load_snapshot(self) -> None:
        snaps = [s for s in (_slot_of(k, SNAP) for k in self.objects.list(SNAP)) if s is not None]
        if not snaps:
            return
        slot = max(snaps)
        raw = self.objects.get(_slot_key(slot, SNAP))
        try:
            if raw is None:
                raise ValueError("the snapshot the listing showed is gone")
            self._state = _State.load(raw, slot)
        except (ValueError, KeyError, TypeError) as exc:
            raise self._damaged(_slot_key(slot, SNAP), "the replayed state through that slot",
                                f"{exc} in {(raw or b'')[:80]!r}") from exc
        self._tail = slot

    def _snapshot(self, slot: int) -> None:
        """Best effort: a missing snapshot only makes new handles read more slots."""
        try:
            self.objects.create(_slot_key(slot, SNAP), self._state.dump(slot))
        except Exception:  # noqa: BLE001 - the log itself is complete without it
            pass

    def _add(self, slot: int, raw: bytes) -> None:
        try:
            e = json.loads(raw)
            if not isinstance(e, dict) or not isinstance(e.get("id"), str):
                raise ValueError("not an entry object with an id")
            self._state.apply(slot, e)
        except (ValueError, KeyError, TypeError) as exc:
            raise self._damaged(_slot_key(slot), "a well-formed decision-log entry", f"{exc} in {raw[:80]!r}") from exc
        self._entries[slot] = e
        self._tail = slot

    def _damaged(self, key: str, expected: str, found: str) -> DecisionLogDamagedError:
        return DecisionLogDamagedError(path=f"{self.objects.where}/{key}", unit=None, expected=expected, found=found,
                                       hint="the decision log is refused, never repaired or reset (a reset fence "
                                            "would let an old coordinator commit again)")

    # ---------------------------------------------------------------- writing
    def _append(self, make: Any) -> tuple[int, dict[str, Any]]:
        """Append the entry `make(state)` returns (it raises to refuse) at the slot after the tail; on a lost
        slot read the new entries and call `make` again. Returns (slot, entry)."""
        if self.readonly:
            raise PermissionError(f"{self.objects.where}: this decision store was opened read-only")
        with self._lock:
            if not self._probed:
                probe(self.objects, "probe/")
                self._probed = True
            nonce = secrets.token_hex(12)
            for _ in range(APPEND_TRIES):
                state = self._refresh()
                slot = self._tail + 1
                entry = make(state, slot)
                if entry is None:
                    return slot - 1, self._entries.get(slot - 1, {})
                entry["id"] = nonce
                raw = json.dumps(entry, sort_keys=True).encode()
                if self.objects.create(_slot_key(slot), raw) or self._landed(slot, nonce):
                    if slot not in self._entries:
                        self._add(slot, raw)
                    if slot % SNAPSHOT_EVERY == 0 and self._tail == slot:
                        self._snapshot(slot)
                    return slot, entry
            raise TimeoutError(f"{self.objects.where}: no free slot after {APPEND_TRIES} tries")

    def _landed(self, slot: int, nonce: str) -> bool:
        """A create answered "exists": our own earlier try (reply lost, retried) or another writer's entry."""
        self._refresh()
        return self._entries.get(slot, {}).get("id") == nonce

    def _ensure_identity(self) -> None:
        def init(state: _State, slot: int) -> dict[str, Any] | None:
            if slot != 1:
                return None
            self._refuse_if_lost()
            return {"op": "init", "log_id": new_log_id()}
        self._append(init)

    def _refuse_if_lost(self) -> None:
        """No log, but attempts beside it: the log was lost. An empty one would say "nothing committed", the
        next save would start over at fence 1, and GC would never see the old attempts."""
        steps = self._attempts() if self._attempts is not None else []
        if steps:
            where = self.objects.where
            root = where.rsplit("/", 1)[0]
            raise DecisionLogMissingError(
                f"{where}: the decision log is missing, but {root}/{STEPS}/ holds attempts of {len(steps)} step(s) "
                f"({', '.join(steps[-3:])}{', ...' if len(steps) > 3 else ''}); fito will not start an empty log "
                f"next to them (it would report no checkpoint, and the next save would start over). To recover: "
                f"put the objects under {where}/ back from a copy, or run `fito recover-log {root}` to see which "
                f"whole, verified attempts it would record as committed, then `fito recover-log {root} --apply`. To "
                "start a new log anyway, pass store=ObjectDecisionStore.for_storage(storage, replace_lost=True)")

    # ---------------------------------------------------------------- DecisionStore
    def log_id(self) -> str | None:
        return self._refresh().log_id

    def acquire_fence(self) -> int:
        self._ensure_identity()
        slot, entry = self._append(lambda state, slot: {"op": "fence", "token": state.fence + 1})
        return int(entry["token"])

    def current_fence(self) -> int:
        return self._refresh().fence

    def publish(self, decision: Decision, fence: int) -> Decision:
        did = decision.decision_id or f"{decision.epoch}:{decision.attempt}"
        self._ensure_identity()

        def record(state: _State, slot: int) -> dict[str, Any] | None:
            if did in state.by_id:
                return None  # an earlier try landed: report what is stored
            if fence != state.fence:
                raise StaleFenceError(
                    f"{self.objects.where}: decision for epoch {decision.epoch} refused: fencing token {fence} "
                    f"is stale, current is {state.fence} (another coordinator took over)")
            return {"op": "decision", "epoch": decision.epoch, "attempt": decision.attempt,
                    "outcome": decision.outcome, "manifest": decision.manifest,
                    "manifest_hash": decision.manifest_hash, "decision_id": did, "fence": fence,
                    "created": time.time()}
        self._append(record)
        return self._state.decisions[self._state.by_id[did]]

    def decisions(self) -> list[Decision]:
        state = self._refresh()
        if state.log_id is None:  # no log at all: nothing decided, unless attempts say a log was lost
            self._refuse_if_lost()
        return list(state.decisions)

    def retire(self, epoch: int, attempt: str, fence: int | None) -> None:
        def mark(state: _State, slot: int) -> dict[str, Any]:
            if fence is not None and fence != state.fence:
                raise StaleFenceError(f"{self.objects.where}: retire refused, fence {fence} is stale "
                                      f"(current {state.fence})")
            if state.newest_live_commit_blocks(epoch, attempt):
                raise RetireRefusedError(
                    f"{self.objects.where}: retiring step {epoch} (attempt {attempt}) refused: no newer commit is "
                    "live, and the newest committed step is never retired; nothing was changed")
            return {"op": "retire", "epoch": epoch, "attempt": attempt, "fence": fence}
        self._ensure_identity()
        self._append(mark)
