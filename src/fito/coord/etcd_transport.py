"""Talking to etcd: raw v3 HTTP-gateway calls (`etcd3gw`) with failover across cluster members and a bounded
total time, linearizable range reads, and the base64 key/value coding the gateway speaks.

- Endpoint failover: every request goes to the last endpoint that answered; on a connection error,
  timeout or "unavailable" answer it moves to the next member, with jittered backoff, until a deadline;
  then CoordinationUnavailableError. The bound on any call is `deadline + request_timeout`.
- Linearizable reads only (etcd's default, asked for explicitly): no serializable reads from a
  possibly stale member.

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

from fito.errors import CoordinationUnavailableError

API_PATH = "/v3/"

# Errors after which another member (or the same one, later) may succeed.
_RETRYABLE = (
    gw_exc.ConnectionFailedError,
    gw_exc.ConnectionTimeoutError,
    gw_exc.InternalServerError,
    requests.exceptions.RequestException,
)


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


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
        body: dict[str, Any] = {"key": b64(key), "serializable": False}
        if prefix:
            body.update(range_end=prefix_end(key), sort_order="ASCEND", sort_target="KEY")
        r = self.call(what, "kv/range", body)
        return [decode_kv(kv) for kv in r.get("kvs", [])], int(r["header"]["revision"])

    def txn(self, what: str, compare: list[dict], success: list[dict], failure: list[dict]) -> dict[str, Any]:
        return self.call(what, "kv/txn", {"compare": compare, "success": success, "failure": failure})

    def close(self) -> None:
        for c in self._clients:
            c.session.close()


def _detail(exc: BaseException) -> str:
    text = getattr(exc, "detail_text", None) or str(exc)
    return text.strip().replace("\n", " ")[:200]


def decode_kv(kv: dict[str, Any]) -> dict[str, Any]:
    out = dict(kv)
    out["key"] = unb64(kv["key"])
    out["value"] = unb64(kv.get("value", ""))
    for f in ("create_revision", "mod_revision", "version", "lease"):
        out[f] = int(kv.get(f, 0))
    return out


def new_transport(endpoints: Sequence[str] | EtcdTransport, **kw: float) -> EtcdTransport:
    """A store's transport: the one given, or a new one over the given endpoints."""
    return endpoints if isinstance(endpoints, EtcdTransport) else EtcdTransport(endpoints, **kw)
