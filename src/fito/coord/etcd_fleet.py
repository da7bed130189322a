"""Fleet epochs (paper §7, §9.2) in etcd: fenced, idempotent epoch transitions, node leases whose
acknowledgements vanish when a node stops renewing, admission to a collective only at the committed
epoch, and one long-lived watch stream that wakes waiters on every new epoch."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import requests

from fito.coord.etcd_transport import API_PATH, EtcdTransport, b64, decode_kv
from fito.coord.etcd_txn import FencedPrefix, absent, get, int_value, present, put, responses, token_is, value_is
from fito.coord.fleet_base import GENESIS, EpochDecision, FleetStore, NodeLease
from fito.errors import CoordinationUnavailableError, EpochConflictError, EpochFencedError, StaleFenceError


class EtcdFleetStore(FencedPrefix, FleetStore):
    """Fleet epochs in etcd. Keys under `prefix`: fence, current, e/<epoch>, id/<decision_id>,
    ack/<node> (attached to the node's etcd lease, so it vanishes when the node stops renewing)."""

    def __init__(
        self, endpoints: Sequence[str] | EtcdTransport, *, prefix: str = "/fito/fleet/",
        request_timeout: float = 2.0, deadline: float = 8.0,
    ) -> None:
        super().__init__(endpoints, prefix=prefix, request_timeout=request_timeout, deadline=deadline)
        self.k_cur = self.prefix + "current"
        self._watch: _EpochWatch | None = None

    def _k_epoch(self, epoch: int) -> str:
        return f"{self.prefix}e/{epoch:020d}"

    def _k_ack(self, node: str) -> str:
        return f"{self.prefix}ack/{node}"

    def current(self) -> EpochDecision:
        kvs, _ = self.t.range("read current epoch", self.k_cur)
        return _load_epoch(kvs[0]) if kvs else GENESIS

    def history(self) -> list[EpochDecision]:
        kvs, _ = self.t.range("list epochs", self.prefix + "e/", prefix=True)
        return sorted((_load_epoch(kv) for kv in kvs), key=lambda d: d.epoch)

    def propose(self, epoch: int, config: str, fence: int, decision_id: str) -> EpochDecision:
        if epoch < 1:
            raise ValueError(f"epoch {epoch}: transitions go to epoch 1 or later")
        k_id = self._k_id(decision_id)
        record = json.dumps({"epoch": epoch, "config": config, "decision_id": decision_id, "fence": fence,
                             "created": time.time()}, sort_keys=True)
        prev = self._k_epoch(epoch - 1)
        # epoch k -> k+1 only if k is the newest: e/<k> exists (or k = 0) and e/<k+1> does not
        compare = [absent(k_id), token_is(self.k_fence, fence), absent(self._k_epoch(epoch))]
        if epoch - 1 > 0:
            compare.append(present(prev))
        r = self.t.txn(
            f"propose epoch {epoch} ({decision_id})", compare,
            [put(self.k_cur, record), put(self._k_epoch(epoch), record), put(k_id, str(epoch)),
             get(self._k_epoch(epoch))],  # read back in the same transaction: no extra round trip
            [get(k_id), get(self.k_fence), get(self.k_cur)],
        )
        if r.get("succeeded"):
            return _load_epoch(responses(r)[-1][0])
        id_kvs, fence_kvs, cur_kvs = responses(r)
        if id_kvs:  # this very proposal committed earlier (a retry after a timeout)
            return self._k_read_epoch(int(id_kvs[0]["value"]))
        current_fence = int_value(fence_kvs)[0]
        if current_fence != fence:
            raise StaleFenceError(f"etcd {self.prefix}: transition to epoch {epoch} refused: fencing token "
                                  f"{fence} is stale, current is {current_fence}")
        cur = _load_epoch(cur_kvs[0]).epoch if cur_kvs else 0
        raise EpochConflictError(f"etcd {self.prefix}: transition to epoch {epoch} refused: the fleet is at "
                                 f"epoch {cur}, a transition must go from {epoch - 1}")

    def _k_read_epoch(self, epoch: int) -> EpochDecision:
        kvs, _ = self.t.range("read epoch", self._k_epoch(epoch))
        if not kvs:
            raise CoordinationUnavailableError(f"epoch {epoch} committed but its record is missing")
        return _load_epoch(kvs[0])

    def wait_for(self, after_epoch: int, timeout: float) -> EpochDecision | None:
        """A linearizable read first; then wait on this store's long-lived watch stream."""
        current = self.current()
        if current.epoch > after_epoch:
            return current
        if self._watch is None:
            self._watch = _EpochWatch(self)
        return self._watch.wait_newer(after_epoch, timeout)

    def grant_lease(self, node: str, ttl: float) -> NodeLease:
        r = self.t.call(f"grant lease for {node}", "lease/grant", {"TTL": max(1, round(ttl)), "ID": 0})
        return NodeLease(node=node, lease_id=int(r["ID"]), ttl=float(r.get("TTL", ttl)))

    def keepalive(self, lease: NodeLease) -> None:
        r = self.t.call(f"keepalive {lease.node}", "lease/keepalive", {"ID": str(lease.lease_id)})
        if int(r.get("result", {}).get("TTL", -1)) <= 0:
            raise EpochFencedError(f"node {lease.node}: lease {lease.lease_id} expired; it must re-join")

    def revoke(self, lease: NodeLease) -> None:
        try:
            self.t.call(f"revoke {lease.node}", "kv/lease/revoke", {"ID": str(lease.lease_id)})
        except CoordinationUnavailableError:
            pass  # an expired lease cannot be revoked; it is gone either way

    def ack(self, lease: NodeLease, epoch: int) -> None:
        try:
            r = self.t.txn(f"ack epoch {epoch} by {lease.node}", self._epoch_compare(epoch),
                           [put(self._k_ack(lease.node), str(epoch), lease=lease.lease_id)], [get(self.k_cur)])
        except CoordinationUnavailableError as exc:
            if "lease not found" in str(exc):
                raise EpochFencedError(f"node {lease.node}: lease expired; it must re-join") from exc
            raise
        if not r.get("succeeded"):
            raise EpochFencedError(f"node {lease.node}: cannot acknowledge epoch {epoch}: it is not the "
                                   f"committed epoch ({self._cur_epoch(responses(r)[0])})")

    def admit(self, node: str, epoch: int) -> None:
        r = self.t.txn(f"admit {node} at epoch {epoch}", [*self._epoch_compare(epoch),
                       value_is(self._k_ack(node), str(epoch))], [], [get(self.k_cur), get(self._k_ack(node))])
        if not r.get("succeeded"):
            cur_kvs, ack_kvs = responses(r)
            acked = ack_kvs[0]["value"] if ack_kvs else "nothing (no live lease)"
            raise EpochFencedError(f"node {node} fenced out of a collective at epoch {epoch}: committed epoch is "
                                   f"{self._cur_epoch(cur_kvs)}, node acknowledged {acked}")

    def participants(self, epoch: int) -> list[str]:
        kvs, _ = self.t.range("list acks", self.prefix + "ack/", prefix=True)
        return sorted(kv["key"].rsplit("/", 1)[1] for kv in kvs if kv["value"] == str(epoch))

    def _epoch_compare(self, epoch: int) -> list[dict[str, Any]]:
        """`epoch` is the newest committed epoch: e/<epoch> exists (or epoch 0) and e/<epoch+1> does not."""
        out = [absent(self._k_epoch(epoch + 1))]
        if epoch > 0:
            out.append(present(self._k_epoch(epoch)))
        return out

    def _cur_epoch(self, cur_kvs: list[dict[str, Any]]) -> int:
        return _load_epoch(cur_kvs[0]).epoch if cur_kvs else 0

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        self.t.close()


class _EpochWatch:
    """One long-lived watch stream on the current-epoch key. Each cycle reads the key linearizably (with
    failover), then streams events from the next revision on; an idle stream is re-opened every
    `idle` seconds, so a dead member is left within that time. Waiters wake on every new epoch."""

    def __init__(self, store: EtcdFleetStore, idle: float = 2.0) -> None:
        self.store, self.idle = store, idle
        self.cond = threading.Condition()
        self.latest: EpochDecision = GENESIS
        self._stop = threading.Event()
        self._session = requests.Session()  # not shared with request/response calls on other threads
        self._resp: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, name="fito-etcd-watch", daemon=True)
        self._thread.start()

    def _seen(self, decision: EpochDecision) -> None:
        with self.cond:
            if decision.epoch > self.latest.epoch:
                self.latest = decision
                self.cond.notify_all()

    def wait_newer(self, after_epoch: int, timeout: float) -> EpochDecision | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.latest.epoch <= after_epoch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)
            return self.latest

    def _run(self) -> None:
        t, key = self.store.t, self.store.k_cur
        while not self._stop.is_set():
            try:
                kvs, rev = t.range("read current epoch", key)
                if kvs:
                    self._seen(_load_epoch(kvs[0]))
                ep = t.endpoints[t._preferred]
                url = (ep if "://" in ep else f"http://{ep}").rstrip("/") + API_PATH + "watch"
                body = {"create_request": {"key": b64(key), "start_revision": str(rev + 1)}}
                with self._session.post(url, json=body, stream=True, timeout=(1.0, self.idle)) as resp:
                    self._resp = resp
                    for line in resp.iter_lines():
                        if self._stop.is_set():
                            return
                        if line:
                            for ev in json.loads(line).get("result", {}).get("events", []):
                                kv = decode_kv(ev["kv"])
                                if kv["value"]:
                                    self._seen(_load_epoch(kv))
            except (requests.RequestException, CoordinationUnavailableError, ValueError, KeyError, AttributeError):
                self._stop.wait(0.02)  # stream ended, member gone, or idle: read again and re-watch

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.close()
            except Exception:  # noqa: BLE001 - best effort to unblock the reader
                pass
        self._thread.join(timeout=self.idle + 1.5)
        self._session.close()


def _load_epoch(kv: dict[str, Any]) -> EpochDecision:
    o = json.loads(kv["value"])
    return EpochDecision(epoch=int(o["epoch"]), config=str(o["config"]), decision_id=str(o["decision_id"]),
                         fence=int(o["fence"]), revision=int(kv["mod_revision"]), created=float(o["created"]))
