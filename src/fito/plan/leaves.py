"""Plain values a JSON tree carries without pickle, beyond JSON's own: opaque bytes (`bytes`, `bytearray`,
`io.BytesIO`, e.g. a torch.save'd loss history, kept as bytes and never unpickled), `pathlib` paths,
`torch.dtype`, `torch.device`, `datetime` values and `Enum` members. Each comes back as the same type.

An Enum is stored by its class's import path and its member's name. Restoring never imports anything the
checkpoint names: the class must already be imported (the program that uses it has), and must be an Enum."""
from __future__ import annotations

import base64
import datetime as dt
import enum
import io
import pathlib
import sys
from typing import Any

import torch

from fito.errors import UnsafeCheckpointError

BYTES_KINDS = {"bytes": bytes, "bytearray": bytearray, "BytesIO": io.BytesIO}
PATH_KINDS = {"Path": pathlib.Path, "PurePosixPath": pathlib.PurePosixPath, "PureWindowsPath": pathlib.PureWindowsPath}
TIME_KINDS = {"datetime": dt.datetime, "date": dt.date, "time": dt.time}
MAX_NAME = 512  # a dtype, device, path or class name longer than this is refused before it is parsed
TAGS = ("B", "P", "dt", "dev", "iso", "td", "E")


def encode_leaf(value: Any) -> dict[str, Any] | None:
    """The node of a value this module carries, or None for anything else (checked before str/int: a StrEnum
    or IntEnum is kept as its Enum)."""
    if isinstance(value, enum.Enum):
        cls = type(value)
        return {"E": f"{cls.__module__}:{cls.__qualname__}", "name": value.name}
    if isinstance(value, (bytes, bytearray, io.BytesIO)):
        kind = "BytesIO" if isinstance(value, io.BytesIO) else type(value).__name__ if type(value) in (bytes, bytearray) else None
        if kind is None:
            return None
        data = value.getvalue() if isinstance(value, io.BytesIO) else bytes(value)
        node = {"B": base64.b64encode(data).decode("ascii"), "k": kind}
        if isinstance(value, io.BytesIO):
            node["pos"] = value.tell()
        return node
    if isinstance(value, pathlib.PurePath):
        kind = "Path" if isinstance(value, pathlib.Path) else type(value).__name__
        return {"P": str(value), "k": kind} if kind in PATH_KINDS else None
    if isinstance(value, torch.dtype):
        return {"dt": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"dev": str(value)}
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        kind = type(value).__name__
        return {"iso": value.isoformat(), "k": kind} if type(value) in TIME_KINDS.values() else None
    if type(value) is dt.timedelta:
        return {"td": [value.days, value.seconds, value.microseconds]}
    return None


def decode_leaf(node: dict[str, Any], where: str) -> Any:
    """Inverse of encode_leaf over an untrusted node holding one of TAGS."""
    try:
        if "B" in node:
            kind = BYTES_KINDS.get(node.get("k"))  # type: ignore[arg-type]
            if kind is None or not isinstance(node["B"], str):
                _bad(where, "bytes, bytearray or BytesIO in base64", node.get("k"))
            data = base64.b64decode(node["B"], validate=True)
            if kind is not io.BytesIO:
                return kind(data)
            out = io.BytesIO(data)
            pos = node.get("pos", 0)
            out.seek(pos if isinstance(pos, int) and not isinstance(pos, bool) and 0 <= pos <= len(data) else 0)
            return out
        if "P" in node:
            return PATH_KINDS[_kind(node, PATH_KINDS, where)](_name(node["P"], where))
        if "dt" in node:
            found = getattr(torch, _name(node["dt"], where), None)
            if not isinstance(found, torch.dtype):
                _bad(where, "a torch dtype", node["dt"])
            return found
        if "dev" in node:
            return torch.device(_name(node["dev"], where))
        if "iso" in node:
            return TIME_KINDS[_kind(node, TIME_KINDS, where)].fromisoformat(_name(node["iso"], where))
        if "td" in node:
            parts = node["td"]
            if not isinstance(parts, list) or len(parts) != 3 or not all(type(p) is int for p in parts):
                _bad(where, "a timedelta as [days, seconds, microseconds]", parts)
            return dt.timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])
        return _enum(node, where)
    except (ValueError, TypeError, OverflowError, RuntimeError) as exc:  # malformed strings, out-of-range numbers
        _bad(where, "a well-formed value", f"{type(exc).__name__}: {str(exc)[:120]}")


def _enum(node: dict[str, Any], where: str) -> enum.Enum:
    path, name = _name(node["E"], where), node.get("name")
    module, _, qualname = path.partition(":")
    cls: Any = sys.modules.get(module)  # never imported here: a checkpoint must not choose what code runs
    for part in qualname.split(".") if cls is not None and qualname else ["?"]:
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
        _bad(where, f"the Enum class {path}, already imported (fito never imports what a checkpoint names); "
             "import its module before restoring", "no such class loaded")
    if not isinstance(name, str) or name not in cls.__members__:
        _bad(where, f"a member of {path}", name)
    return cls.__members__[name]


def _kind(node: dict[str, Any], kinds: dict[str, Any], where: str) -> str:
    kind = node.get("k")
    if kind not in kinds:
        _bad(where, f"one of {sorted(kinds)}", kind)
    return kind  # type: ignore[return-value]


def _name(s: Any, where: str) -> str:
    if not isinstance(s, str) or len(s) > MAX_NAME:
        _bad(where, f"a string of at most {MAX_NAME} characters", s)
    return s


def _bad(where: str, expected: str, found: Any) -> None:
    raise UnsafeCheckpointError(path="state tree", unit=where, expected=expected, found=repr(found)[:200])
