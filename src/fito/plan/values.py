"""Non-tensor values and tensor bytes for DCP items.

DCP turns every non-tensor leaf of a state into a BYTE_IO item and stores it with torch.save (pickle).
fito stores each such leaf as JSON through its own tree codec (tuples, int dict keys, inf/nan survive),
and reads it back without ever unpickling."""
from __future__ import annotations

import json
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from fito.plan.tree import decode, encode
from fito.errors import StateMismatchError, UnsafeCheckpointError

VALUE_FORMAT = "fito-value/1"
MAX_VALUE_BYTES = 64 << 20


def encode_value(value: Any, fqn: str) -> bytes:
    tensors: list[tuple[str, Any]] = []
    node = encode(value, fqn, tensors)
    if tensors:
        raise StateMismatchError(
            f"{fqn}: a tensor inside a {type(value).__name__}; DCP saves tensors only as leaves of dicts and "
            "lists, so put it in a list or dict (or under its own key)"
        )
    # "item" binds the bytes to their name: a manifest that points one value at another's bytes is refused
    data = json.dumps({"format": VALUE_FORMAT, "item": fqn, "tree": node}, separators=(",", ":")).encode()
    if len(data) > MAX_VALUE_BYTES:  # the read side refuses it (before reading it): never save what cannot be restored
        raise StateMismatchError(f"{fqn}: a value of {len(data)} bytes as JSON, over the limit of {MAX_VALUE_BYTES}; "
                                 "store large data as tensors (or numpy arrays), not as lists of numbers")
    return data


def decode_value(data: bytes | memoryview, where: str, item: str | None = None) -> Any:
    """Inverse of encode_value over untrusted bytes: every problem is an UnsafeCheckpointError. `item`: the
    name the manifest reads these bytes for; bytes that name another item are refused (values saved before
    the name was recorded carry none)."""
    if len(data) > MAX_VALUE_BYTES:
        raise UnsafeCheckpointError(path=where, unit=None, expected=f"a value of at most {MAX_VALUE_BYTES} bytes", found=f"{len(data)} bytes")
    try:
        doc = json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UnsafeCheckpointError(path=where, unit=None, expected="a JSON value", found=f"{type(exc).__name__}: {str(exc)[:120]}") from None
    if not isinstance(doc, dict) or doc.get("format") != VALUE_FORMAT or "tree" not in doc:
        raise UnsafeCheckpointError(path=where, unit=None, expected=f"format {VALUE_FORMAT}", found=repr(doc)[:80])
    if item is not None and "item" in doc and doc["item"] != item:
        raise UnsafeCheckpointError(path=where, unit=item, expected=f"the bytes of value {item!r}",
                                    found=f"the bytes of value {str(doc['item'])[:200]!r} (a manifest pointing one value at another's)")
    try:
        return decode(doc["tree"], [], where)
    except RecursionError:
        raise UnsafeCheckpointError(path=where, unit=None, expected="a value nested at most a few hundred levels", found="deeper nesting") from None


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of (this rank's part of) a tensor, row-major; copies only if it is not a contiguous CPU tensor."""
    t = t.detach()
    if isinstance(t, DTensor):
        t = t.to_local()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy())
