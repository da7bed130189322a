"""etcd (Raft) as the coordination service, through its v3 HTTP gateway with the `etcd3gw` client.

- Endpoint failover: every request goes to the last endpoint that answered; on a connection error,
  timeout or "unavailable" answer it moves to the next member, with jittered backoff, until a deadline;
  then CoordinationUnavailableError. The bound on any call is `deadline + request_timeout`.
- Idempotent retries: a write that timed out may have committed. Every decision carries a unique id and
  the commit transaction requires that id to be absent, so re-sending it either commits once or finds
  the stored record.
- Linearizable reads only (etcd's default, asked for explicitly): no serializable reads from a
  possibly stale member.
- Fencing in the transaction: a decision commits only if the fence key still holds the caller's token,
  compared by etcd inside the same transaction that writes the decision.

etcd 3.4 serves the gateway at `/v3/` (also the deprecated `/v3beta/`); we pin `/v3/` instead of paying
a discovery request per client.
"""
from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import requests
from etcd3gw import exceptions as gw_exc
from etcd3gw.client import Etcd3Client

from fito.coord.base import Decision, DecisionStore, new_log_id
from fito.coord.fleet_base import GENESIS, EpochDecision, FleetStore, NodeLease
from fito.errors import (
    CoordinationUnavailableError,
    EpochConflictError,
    EpochFencedError,
    RetireRefusedError,
    StaleFenceError,
    UnsafeCheckpointError,
)
from fito.protocol.layout import valid_log_id

API_PATH = "/v3/"

# Errors after which another member (or the same one, later) may succeed.
_RETRYABLE = (
    gw_exc.ConnectionFailedError,
    gw_exc.ConnectionTimeoutError,
    gw_exc.InternalServerError,
    requests.exceptions.RequestException,
)


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


class EtcdTransport:
    """Raw v3 gateway calls with failover across cluster members and a bounded total time."""

    def __init__(
        self, endpoints: Sequence[str], *, request_timeout: float = 2.0, deadline: float = 8.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = list(endpoints)
        self.request_timeout, self.deadline = request_timeout, deadline
        self._clients: list[Etcd3Client] = []
        for ep in self.endpoints:
            u = urlparse(ep if "://" in ep else f"http://{ep}")
            self._clients.append(Etcd3Client(
                host=u.hostname or "127.0.0.1", port=u.port or 2379, protocol=u.scheme or "http",
                timeout=request_timeout, api_path=API_PATH,
            ))
        self._preferred = 0
        self._lock = threading.Lock()
        self.failovers = 0  # how many times a request moved to another member (for tests/benchmarks)

    def call(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `path`, trying members in turn until one answers or the deadline passes."""
        start = time.monotonic()
        errors: list[str] = []
        attempt = 0
        with self._lock:
            while True:
                for k in range(len(self._clients)):
                    idx = (self._preferred + k) % len(self._clients)
                    client = self._clients[idx]
                    remaining = self.deadline - (time.monotonic() - start)
                    client.timeout = max(0.05, min(self.request_timeout, remaining + 0.05))
                    try:
                        result = client.post(client.get_url(path), data=json.dumps(body))
                    except _RETRYABLE as exc:
                        errors.append(f"{self.endpoints[idx]}: {type(exc).__name__} {_detail(exc)}")
                        if idx == self._preferred:
                            self.failovers += 1
                        continue
                    except gw_exc.Etcd3Exception as exc:  # a request etcd rejected: not retryable
                        raise CoordinationUnavailableError(f"{what}: etcd refused the request: {_detail(exc)}") \
                            from exc
                    self._preferred = idx
                    return result
                attempt += 1
                elapsed = time.monotonic() - start
                if elapsed >= self.deadline:
                    raise CoordinationUnavailableError(
                        f"{what}: no etcd quorum answered within {self.deadline:.1f}s across "
                        f"{len(self.endpoints)} endpoint(s); nothing was acknowledged (a write that timed out may still "
                        f"land: re-send it with the same decision id to resolve it). "
                        f"Last errors: {'; '.join(errors[-len(self.endpoints):])}"
                    )
                # full jitter, capped, never past the deadline
                pause = random.uniform(0, min(0.5, 0.02 * 2 ** attempt))
                time.sleep(min(pause, max(0.0, self.deadline - elapsed)))

    # --- small typed helpers -------------------------------------------------------------------
    def range(self, what: str, key: str, *, prefix: bool = False) -> tuple[list[dict[str, Any]], int]:
        """Linearizable range read: (kvs with decoded key/value, header revision)."""
        body: dict[str, Any] = {"key": _b64(key), "serializable": False}
        if prefix:
            body.update(range_end=_prefix_end(key), sort_order="ASCEND", sort_target="KEY")
        r = self.call(what, "kv/range", body)
        return [_decode_kv(kv) for kv in r.get("kvs", [])], int(r["header"]["revision"])

    def txn(self, what: str, compare: list[dict], success: list[dict], failure: list[dict]) -> dict[str, Any]:
        return self.call(what, "kv/txn", {"compare": compare, "success": success, "failure": failure})

    def close(self) -> None:
        for c in self._clients:
            c.session.close()


def _detail(exc: BaseException) -> str:
    text = getattr(exc, "detail_text", None) or str(exc)
    return text.strip().replace("\n", " ")[:200]


def _decode_kv(kv: dict[str, Any]) -> dict[str, Any]:
    out = dict(kv)
    out["key"] = _unb64(kv["key"])
    out["value"] = _unb64(kv.get("value", ""))
    for f in ("create_revision", "mod_revision", "version", "lease"):
        out[f] = int(kv.get(f, 0))
    return out


# --- transaction building blocks ----------------------------------------------------------------
def put(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def get(key: str, prefix: bool = False) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key), "serializable": False}
    if prefix:
        req["range_end"] = _prefix_end(key)
    return {"request_range": req}


def absent(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def present(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}


def value_is(key: str, value: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}


def mod_is(key: str, mod_revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def token_is(key: str, token: int) -> dict[str, Any]:
    """The fence key holds `token` (token 0 means: no fence was ever handed out)."""
    return absent(key) if token == 0 else value_is(key, str(token))


def _responses(r: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Decoded kvs of each range response of a transaction, in order."""
    out = []
    for resp in r.get("responses", []):
        rng = resp.get("response_range", {})
        out.append([_decode_kv(kv) for kv in rng.get("kvs", [])])
    return out


def _int_value(kvs: list[dict[str, Any]]) -> tuple[int, int]:
    """(integer value, mod_revision) of a counter key; (0, 0) if absent."""
    if not kvs:
        return 0, 0
    return int(kvs[0]["value"]), kvs[0]["mod_revision"]


class _Fence:
    """A strictly increasing token kept in one key, incremented by compare-and-swap on its mod_revision."""

    def __init__(self, transport: EtcdTransport, key: str) -> None:
        self.t, self.key = transport, key

    def acquire(self) -> int:
        while True:
            token, mod = _int_value(self.t.range("acquire fence", self.key)[0])
            cond = absent(self.key) if mod == 0 else mod_is(self.key, mod)
            r = self.t.txn("acquire fence", [cond], [put(self.key, str(token + 1))], [])
            if r.get("succeeded"):
                return token + 1
            # someone else (or our own timed-out try) moved it: read again, take a larger one

    def current(self) -> int:
        return _int_value(self.t.range("read fence", self.key)[0])[0]


def _new_transport(endpoints: Sequence[str] | EtcdTransport, **kw: float) -> EtcdTransport:
    return endpoints if isinstance(endpoints, EtcdTransport) else EtcdTransport(endpoints, **kw)


# =================================================================================================
class EtcdDecisionStore(DecisionStore):
    """Checkpoint decisions in etcd. Keys under `prefix`: fence, seq, d/<seq>, id/<decision_id>."""

    def __init__(
        self, endpoints: Sequence[str] | EtcdTransport, *, prefix: str = "/fito/ckpt/",
        request_timeout: float = 2.0, deadline: float = 8.0,
    ) -> None:
        self.t = _new_transport(endpoints, request_timeout=request_timeout, deadline=deadline)
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.k_fence, self.k_seq, self.k_log = self.prefix + "fence", self.prefix + "seq", self.prefix + "log_id"
        self._fence = _Fence(self.t, self.k_fence)
        self._log_id: str | None = None

    def _k_dec(self, seq: int) -> str:
        return f"{self.prefix}d/{seq:020d}"

    def _k_id(self, decision_id: str) -> str:
        return f"{self.prefix}id/{decision_id}"

    def acquire_fence(self) -> int:
        if self.log_id() is None:  # the first coordinator of this prefix (or of a v1 one) gives it an identity
            self.t.txn("create log id", [absent(self.k_log)], [put(self.k_log, new_log_id())], [])
            self.log_id()
        return self._fence.acquire()

    def current_fence(self) -> int:
        return self._fence.current()

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
            id_kvs, fence_kvs, seq_kvs = _responses(r)
            if id_kvs:  # an earlier try of this decision landed: report what is stored
                return self._stored(int(id_kvs[0]["value"]), did)
            current = _int_value(fence_kvs)[0]
            if fence != current:
                raise StaleFenceError(
                    f"etcd {self.prefix}: decision for epoch {decision.epoch} refused: fencing token {fence} "
                    f"is stale, current is {current} (another coordinator took over)"
                )
            seq, seq_mod = _int_value(seq_kvs)
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
            current = _int_value(_responses(r)[0])[0]
            if fence is not None and current != fence:
                raise StaleFenceError(f"etcd {self.prefix}: retire refused, fence {fence} is stale (current {current})")

    def close(self) -> None:
        self.t.close()


def _replace_retired(d: Decision) -> Decision:
    from dataclasses import replace

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


# =================================================================================================
class EtcdFleetStore(FleetStore):
    """Fleet epochs in etcd. Keys under `prefix`: fence, current, e/<epoch>, id/<decision_id>,
    ack/<node> (attached to the node's etcd lease, so it vanishes when the node stops renewing)."""

    def __init__(
        self, endpoints: Sequence[str] | EtcdTransport, *, prefix: str = "/fito/fleet/",
        request_timeout: float = 2.0, deadline: float = 8.0,
    ) -> None:
        self.t = _new_transport(endpoints, request_timeout=request_timeout, deadline=deadline)
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.k_fence, self.k_cur = self.prefix + "fence", self.prefix + "current"
        self._fence = _Fence(self.t, self.k_fence)
        self._watch: _EpochWatch | None = None

    def _k_epoch(self, epoch: int) -> str:
        return f"{self.prefix}e/{epoch:020d}"

    def _k_id(self, did: str) -> str:
        return f"{self.prefix}id/{did}"

    def _k_ack(self, node: str) -> str:
        return f"{self.prefix}ack/{node}"

    def acquire_fence(self) -> int:
        return self._fence.acquire()

    def current_fence(self) -> int:
        return self._fence.current()

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
            return _load_epoch(_responses(r)[-1][0])
        id_kvs, fence_kvs, cur_kvs = _responses(r)
        if id_kvs:  # this very proposal committed earlier (a retry after a timeout)
            return self._k_read_epoch(int(id_kvs[0]["value"]))
        current_fence = _int_value(fence_kvs)[0]
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
                                   f"committed epoch ({self._cur_epoch(_responses(r)[0])})")

    def admit(self, node: str, epoch: int) -> None:
        r = self.t.txn(f"admit {node} at epoch {epoch}", [*self._epoch_compare(epoch),
                       value_is(self._k_ack(node), str(epoch))], [], [get(self.k_cur), get(self._k_ack(node))])
        if not r.get("succeeded"):
            cur_kvs, ack_kvs = _responses(r)
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
                body = {"create_request": {"key": _b64(key), "start_revision": str(rev + 1)}}
                with self._session.post(url, json=body, stream=True, timeout=(1.0, self.idle)) as resp:
                    self._resp = resp
                    for line in resp.iter_lines():
                        if self._stop.is_set():
                            return
                        if line:
                            for ev in json.loads(line).get("result", {}).get("events", []):
                                kv = _decode_kv(ev["kv"])
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

