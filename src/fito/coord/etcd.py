"""etcd (Raft) as the checkpoint decision store, through its v3 HTTP gateway (fito.coord.etcd_transport).

- Idempotent retries: a write that timed out may have committed. Every decision carries a unique id and
  the commit transaction requires that id to be absent, so re-sending it either commits once or finds
  the stored record.
- Fencing in the transaction: a decision commits only if the fence key still holds the caller's token,
  compared by etcd inside the same transaction that writes the decision.
- Linearizable reads only, endpoint failover and a bounded time per call: see fito.coord.etcd_transport.

The fleet-epoch store on etcd is fito.coord.etcd_fleet; both are built from fito.coord.etcd_txn.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace

from fito.coord.base import Decision, DecisionStore, fenced_out, new_log_id
from fito.coord.etcd_transport import EtcdTransport
from fito.coord.etcd_txn import FencedPrefix, absent, get, int_value, mod_is, put, responses, token_is
from fito.errors import RetireRefusedError, StaleFenceError, UnsafeCheckpointError
from fito.protocol.layout import valid_log_id


class EtcdDecisionStore(FencedPrefix, DecisionStore):
    """Checkpoint decisions in etcd. Keys under `prefix`: fence, seq, log_id, d/<seq>, id/<decision_id>."""

    def __init__(
        self, endpoints: Sequence[str] | EtcdTransport, *, prefix: str = "/fito/ckpt/",
        request_timeout: float = 2.0, deadline: float = 8.0,
    ) -> None:
        super().__init__(endpoints, prefix=prefix, request_timeout=request_timeout, deadline=deadline)
        self.k_seq, self.k_log = self.prefix + "seq", self.prefix + "log_id"
        self._log_id: str | None = None

    def _k_dec(self, seq: int) -> str:
        return f"{self.prefix}d/{seq:020d}"

    def acquire_fence(self) -> int:
        if self.log_id() is None:  # the first coordinator of this prefix (or of a v1 one) gives it an identity
            self.t.txn("create log id", [absent(self.k_log)], [put(self.k_log, new_log_id())], [])
            self.log_id()
        return super().acquire_fence()

    def log_id(self) -> str | None:
        if self._log_id is None:
            kvs, _ = self.t.range("read log id", self.k_log)
            if kvs and not valid_log_id(kvs[0]["value"]):
                raise UnsafeCheckpointError(path=self.k_log, unit=None, expected="a fito log id",
                                            found=repr(kvs[0]["value"][:40]))
            self._log_id = kvs[0]["value"] if kvs else None
        return self._log_id

    def publish(self, decision: Decision, fence: int) -> Decision:
        did = decision.decision_id or f"{decision.epoch}:{decision.attempt}"
        k_id = self._k_id(did)
        while True:
            r = self.t.txn("read before publish", [], [get(k_id), get(self.k_fence), get(self.k_seq)], [])
            id_kvs, fence_kvs, seq_kvs = responses(r)
            if id_kvs:  # an earlier try of this decision landed: report what is stored
                return self._stored(int(id_kvs[0]["value"]), did)
            current = int_value(fence_kvs)[0]
            if fence != current:
                raise fenced_out(f"etcd {self.prefix}", f"decision for epoch {decision.epoch}", fence, current)
            seq, seq_mod = int_value(seq_kvs)
            stored = Decision(
                epoch=decision.epoch, attempt=decision.attempt, outcome=decision.outcome,
                manifest=decision.manifest, manifest_hash=decision.manifest_hash, decision_id=did,
                fence=fence, seq=seq + 1, retired=False, created=time.time(),
            )
            r = self.t.txn(
                f"publish decision {did}",
                [absent(k_id), token_is(self.k_fence, fence),
                 absent(self.k_seq) if seq_mod == 0 else mod_is(self.k_seq, seq_mod)],
                [put(self.k_seq, str(seq + 1)), put(self._k_dec(seq + 1), _dump(stored)), put(k_id, str(seq + 1))],
                [],
            )
            if r.get("succeeded"):
                return stored
            # lost a race (another publish took the seq, the fence moved, or our own timed-out try
            # landed): the next read tells which

    def _stored(self, seq: int, did: str) -> Decision:
        kvs, _ = self.t.range("read decision", self._k_dec(seq))
        if not kvs:
            raise UnsafeCheckpointError(path=self.prefix, unit=None, expected=f"decision {did} at seq {seq}",
                                        found="no record")
        return _load(kvs[0]["value"], self.prefix)

    def decisions(self) -> list[Decision]:
        kvs, _ = self.t.range("list decisions", self.prefix + "d/", prefix=True)
        return sorted((_load(kv["value"], self.prefix) for kv in kvs), key=lambda d: d.seq)

    def retire(self, epoch: int, attempt: str, fence: int | None) -> None:
        while True:
            kvs, _ = self.t.range("list decisions", self.prefix + "d/", prefix=True)
            loaded = [(kv, _load(kv["value"], self.prefix)) for kv in kvs]
            targets = [(kv, d) for kv, d in loaded if d.epoch == epoch and d.attempt == attempt]
            compare = [token_is(self.k_fence, fence)] if fence is not None else []
            compare += [mod_is(kv["key"], kv["mod_revision"]) for kv, _ in targets]
            commits = [d.seq for _, d in targets if d.outcome == "commit" and not d.retired]
            if commits:  # the newest committed step is never retired: a newer live commit must stay as read
                newer = [kv for kv, d in loaded if d.outcome == "commit" and not d.retired and d.seq > max(commits)]
                if not newer:
                    current = self._fence.current()
                    if fence is not None and fence != current:
                        raise StaleFenceError(f"etcd {self.prefix}: retire refused, fence {fence} is stale (current {current})")
                    raise RetireRefusedError(
                        f"etcd {self.prefix}: retiring step {epoch} (attempt {attempt}) refused: no newer commit is "
                        "live, and the newest committed step is never retired; nothing was changed")
                compare.append(mod_is(newer[-1]["key"], newer[-1]["mod_revision"]))
            puts = [put(kv["key"], _dump(_replace_retired(d))) for kv, d in targets]
            r = self.t.txn("retire decision", compare, puts, [get(self.k_fence)])
            if r.get("succeeded"):
                return
            current = int_value(responses(r)[0])[0]
            if fence is not None and current != fence:
                raise StaleFenceError(f"etcd {self.prefix}: retire refused, fence {fence} is stale (current {current})")

    def close(self) -> None:
        self.t.close()


def _replace_retired(d: Decision) -> Decision:
    return replace(d, retired=True)


def _dump(d: Decision) -> str:
    return json.dumps({
        "epoch": d.epoch, "attempt": d.attempt, "outcome": d.outcome, "manifest": d.manifest,
        "manifest_hash": d.manifest_hash, "decision_id": d.decision_id, "fence": d.fence, "seq": d.seq,
        "retired": d.retired, "created": d.created,
    }, sort_keys=True)


def _load(raw: str, where: str) -> Decision:
    try:
        o = json.loads(raw)
        if o["outcome"] not in ("commit", "abort"):
            raise ValueError(f"unknown outcome {o['outcome']!r}")
        return Decision(
            epoch=int(o["epoch"]), attempt=str(o["attempt"]), outcome=o["outcome"], manifest=str(o["manifest"]),
            manifest_hash=str(o["manifest_hash"]), decision_id=str(o["decision_id"]), fence=int(o["fence"]),
            seq=int(o["seq"]), retired=bool(o["retired"]), created=float(o["created"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsafeCheckpointError(path=where, unit=None, expected="well-formed decision records",
                                    found=str(exc)) from exc
