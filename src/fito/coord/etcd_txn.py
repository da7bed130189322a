"""Building blocks of etcd v3 transactions: the requests (put, get) and compares (absent, present, value_is,
mod_is, token_is) both etcd stores write, the decoding of a transaction's range responses, the fence (a
strictly increasing token in one key, bumped by compare-and-swap) and `FencedPrefix`, the key prefix with
its fence key that each store lives under."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fito.coord.etcd_transport import EtcdTransport, b64, decode_kv, new_transport, prefix_end


def put(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def get(key: str, prefix: bool = False) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key), "serializable": False}
    if prefix:
        req["range_end"] = prefix_end(key)
    return {"request_range": req}


def absent(key: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def present(key: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}


def value_is(key: str, value: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def mod_is(key: str, mod_revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def token_is(key: str, token: int) -> dict[str, Any]:
    """The fence key holds `token` (token 0 means: no fence was ever handed out)."""
    return absent(key) if token == 0 else value_is(key, str(token))


def responses(r: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Decoded kvs of each range response of a transaction, in order."""
    out = []
    for resp in r.get("responses", []):
        rng = resp.get("response_range", {})
        out.append([decode_kv(kv) for kv in rng.get("kvs", [])])
    return out


def int_value(kvs: list[dict[str, Any]]) -> tuple[int, int]:
    """(integer value, mod_revision) of a counter key; (0, 0) if absent."""
    if not kvs:
        return 0, 0
    return int(kvs[0]["value"]), kvs[0]["mod_revision"]


class Fence:
    """A strictly increasing token kept in one key, incremented by compare-and-swap on its mod_revision."""

    def __init__(self, transport: EtcdTransport, key: str) -> None:
        self.t, self.key = transport, key

    def acquire(self) -> int:
        while True:
            token, mod = int_value(self.t.range("acquire fence", self.key)[0])
            cond = absent(self.key) if mod == 0 else mod_is(self.key, mod)
            r = self.t.txn("acquire fence", [cond], [put(self.key, str(token + 1))], [])
            if r.get("succeeded"):
                return token + 1
            # someone else (or our own timed-out try) moved it: read again, take a larger one

    def current(self) -> int:
        return int_value(self.t.range("read fence", self.key)[0])[0]


class FencedPrefix:
    """What both etcd stores are built on: a transport, their key prefix (ending in "/"), the fence key
    under it, and the fence kept there."""

    def __init__(self, endpoints: Sequence[str] | EtcdTransport, *, prefix: str, request_timeout: float,
                 deadline: float) -> None:
        self.t = new_transport(endpoints, request_timeout=request_timeout, deadline=deadline)
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.k_fence = self.prefix + "fence"
        self._fence = Fence(self.t, self.k_fence)

    def acquire_fence(self) -> int:
        return self._fence.acquire()

    def current_fence(self) -> int:
        return self._fence.current()

    def _k_id(self, decision_id: str) -> str:
        return f"{self.prefix}id/{decision_id}"
