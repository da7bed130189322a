"""Turn a state (nested dicts/lists of tensors and plain values) into a JSON tree plus a list of tensors,
and back. The tree is data, never code: no pickle, nothing executable, every leaf type named here."""
from __future__ import annotations

import datetime as dt
import enum
import math
import pathlib
from typing import Any

import numpy as np
import torch

from fito.plan.leaves import TAGS as LEAF_TAGS, decode_leaf, encode_leaf
from fito.errors import StateMismatchError, UnsafeCheckpointError

DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
        torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128,
        # Added with torch 2.13 (issue 9, item 14): low-precision training formats and wide unsigned ints. Each
        # stores as plain bytes (`tensor_bytes` views them as uint8) and restores by a uint8 -> dtype view.
        torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz, torch.float8_e8m0fnu,
        torch.float4_e2m1fn_x2, torch.uint16, torch.uint32, torch.uint64, torch.complex32,
    )
}
# Not supported, refused at save: quantized dtypes (qint8, quint8, ...: the bytes alone lose scale and zero
# point), the sub-byte placeholders int1..int7 / uint1..uint7 (no copy kernel), and the opaque bits* dtypes.


NUMPY_KINDS = "biufc"  # bool, int, uint, float, complex: plain numbers only, never objects


def numpy_dtype(name: object) -> np.dtype:
    """A numpy dtype from an untrusted string, restricted to plain numbers."""
    try:
        dtype = np.dtype(name) if isinstance(name, str) else None
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in NUMPY_KINDS or dtype.itemsize > 16:
        raise UnsafeCheckpointError(path="state tree", unit=None, expected="a numeric numpy dtype", found=repr(name)[:80])
    return dtype


MAX_DEPTH = 100  # nesting levels of dicts/lists/tuples in a state tree, saved or read back: bounded, no RecursionError
MAX_ELEMENTS = 1 << 62  # a declared array shape beyond this is refused before anything is allocated


def entry_path(path: str) -> str:
    """The user's name of a value: "/model/data/0.weight" (tree path) -> "model/0.weight"."""
    parts = path.lstrip("/").split("/")
    if len(parts) > 1 and parts[1] == "data":
        del parts[1]
    return "/".join(parts) or "<state>"


def dtype_name(dtype: torch.dtype, path: str = "") -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise StateMismatchError(
            f"{entry_path(path)}: tensors of dtype {name} are not supported by fito checkpoints "
            f"(supported: {', '.join(DTYPES)}); convert it with .to(<a supported dtype>) before saving"
        )
    return name


def _plain_tensor(t: torch.Tensor, path: str) -> torch.Tensor:
    """The tensor whose bytes are saved, or a StateMismatchError naming the entry: checked before anything is
    written. Conjugate and negative views are resolved (a copy of that tensor only): they restore as ordinary
    tensors holding the same values."""
    where = entry_path(path)
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        raise StateMismatchError(f"{where}: tensor subclass {type(t).__name__} is not supported (its bytes alone do not "
                                 "describe it); save a plain tensor, e.g. a materialized or local copy")
    if t.is_nested:
        raise StateMismatchError(f"{where}: nested tensors are not supported; save t.unbind() as a list of tensors")
    if t.is_quantized:
        raise StateMismatchError(f"{where}: quantized tensors are not supported; save t.int_repr() with its scale "
                                 "and zero point, or t.dequantize()")
    if t.layout != torch.strided:
        raise StateMismatchError(f"{where}: {str(t.layout).removeprefix('torch.')} tensors are not supported; "
                                 "convert with .to_dense()")
    if t.device.type == "meta":
        raise StateMismatchError(f"{where}: meta tensors have no data to save; materialize it first "
                                 "(e.g. module.to_empty(device='cpu') and initialize or load it)")
    dtype_name(t.dtype, path)
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t


Array = torch.Tensor | np.ndarray


def too_deep(path: str) -> StateMismatchError:
    """The one refusal of a state nested too deep, for every save path (Checkpointer, fito.dcp)."""
    where = entry_path(path)
    where = where if len(where) <= 80 else f"{where[:60]}/.../{where.rsplit('/', 1)[-1]}"
    return StateMismatchError(f"{where}: nested deeper than {MAX_DEPTH} levels (the depth limit; or a "
                              "container that contains itself); fito checkpoints hold trees of bounded depth")


def check_depth(value: Any, path: str) -> None:
    """Refuse (too_deep) a state whose dicts, lists and tuples nest deeper than MAX_DEPTH, without recursion:
    run before anything else walks the state recursively (DCP's flattening would hit a bare RecursionError)."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise too_deep(where)
        if isinstance(node, dict):
            stack.extend((v, f"{where}/{k}", depth + 1) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{where}/{i}", depth + 1) for i, v in enumerate(node))


def encode(value: Any, path: str, tensors: list[tuple[str, Array]], depth: int = 0) -> Any:
    """Encode `value`; tensors (and numpy arrays) are appended to `tensors` with a unit name = their path."""
    if depth > MAX_DEPTH:
        raise too_deep(path)
    if isinstance(value, torch.Tensor):
        t = _plain_tensor(value, path)
        tensors.append((path, t))
        return {"T": len(tensors) - 1, "dtype": dtype_name(t.dtype, path), "shape": list(t.shape)}
    if isinstance(value, np.ndarray):
        try:
            dtype = numpy_dtype(value.dtype.str) if value.dtype.kind in NUMPY_KINDS else None
        except UnsafeCheckpointError:
            dtype = None
        if dtype is None:
            raise StateMismatchError(f"{entry_path(path)}: numpy arrays of dtype {value.dtype} are not supported "
                                     "(plain bool, int, uint, float or complex numbers only)")
        tensors.append((path, np.ascontiguousarray(value)))
        return {"N": len(tensors) - 1, "dtype": value.dtype.str, "shape": list(value.shape)}
    leaf = None if value is None or type(value) in (bool, str, int, float) else encode_leaf(value)
    if leaf is not None:  # bytes, BytesIO, paths, dtypes, devices, datetimes, Enum members (fito.plan.leaves)
        return leaf
    if value is None or isinstance(value, (bool, str)):
        return {"v": value}
    if isinstance(value, np.bool_):
        return {"v": bool(value)}
    if isinstance(value, (int, np.integer)):
        return {"v": int(value)}
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return {"v": f} if math.isfinite(f) else {"f": repr(f)}
    d = depth + 1
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"d": {k: encode(v, f"{path}/{k}", tensors, d) for k, v in value.items()}}
        return {"m": [[encode(k, f"{path}/<key>", tensors, d), encode(v, f"{path}/{k}", tensors, d)] for k, v in value.items()]}
    if isinstance(value, list):
        return {"l": [encode(v, f"{path}/{i}", tensors, d) for i, v in enumerate(value)]}
    if isinstance(value, tuple):
        return {"t": [encode(v, f"{path}/{i}", tensors, d) for i, v in enumerate(value)]}
    raise StateMismatchError(
        f"{entry_path(path)}: cannot checkpoint a value of type {type(value).__name__}; fito stores tensors, numpy "
        "arrays, JSON-like values (dict, list, tuple, str, int, float, bool, None), bytes, bytearray, io.BytesIO, "
        "pathlib paths, torch.dtype, torch.device, datetime values and Enum members"
    )


KEY_TYPES = (str, int, float, bool, type(None), tuple, bytes, enum.Enum, pathlib.PurePath, torch.dtype, torch.device,
             dt.date, dt.time, dt.timedelta)  # what a decoded mapping key may be (hashable plain data)


def decode(node: Any, tensors: list[Array], where: str, depth: int = 0) -> Any:
    """Inverse of `encode`, over an untrusted tree: every malformed node is an UnsafeCheckpointError."""
    if depth > MAX_DEPTH:
        _bad(where, f"at most {MAX_DEPTH} levels of nesting", "a deeper tree")
    if not isinstance(node, dict) or len(node) == 0:
        _bad(where, "a tagged node", node)
    d = depth + 1
    if "v" in node:
        v = node["v"]
        if v is not None and not isinstance(v, (bool, int, float, str)):
            _bad(where, "a JSON scalar", v)
        return v
    if "f" in node:
        if not isinstance(node["f"], str) or node["f"] not in ("inf", "-inf", "nan"):
            _bad(where, "inf, -inf or nan", node["f"])
        return float(node["f"])
    if "d" in node and isinstance(node["d"], dict):
        return {k: decode(v, tensors, f"{where}/{k}", d) for k, v in node["d"].items()}
    if "m" in node and isinstance(node["m"], list):
        out = {}
        for pair in node["m"]:
            if not isinstance(pair, list) or len(pair) != 2:
                _bad(where, "a [key, value] pair", pair)
            key = decode(pair[0], tensors, where, d)
            if not isinstance(key, KEY_TYPES) or not _hashable(key):
                _bad(where, "a plain, hashable mapping key", key)
            out[key] = decode(pair[1], tensors, f"{where}/{key}", d)
        return out
    if "l" in node and isinstance(node["l"], list):
        return [decode(v, tensors, f"{where}/{i}", d) for i, v in enumerate(node["l"])]
    if "t" in node and isinstance(node["t"], list):
        return tuple(decode(v, tensors, f"{where}/{i}", d) for i, v in enumerate(node["t"]))
    for tag in ("T", "N"):
        if tag in node:
            index = node[tag]
            if not _index(index) or not 0 <= index < len(tensors):
                _bad(where, f"a tensor index below {len(tensors)}", index)
            return tensors[index]
    if any(tag in node for tag in LEAF_TAGS):
        return decode_leaf(node, where)
    _bad(where, "a known node tag", sorted(node))


def array_specs(node: Any, out: dict[int, tuple[str, str, list[int]]], depth: int = 0) -> None:
    """Collect {array index: (tag "T"|"N", dtype, shape)} from an untrusted tree, validating each spec
    (dtype known, shape of non-negative ints whose product is bounded, each index used once)."""
    if depth > 3 * MAX_DEPTH + 3:  # JSON levels: a mapping with non-string keys is three per tree level
        _bad("state tree", f"at most {MAX_DEPTH} levels of nesting", "a deeper tree")
    if isinstance(node, dict):
        for tag in ("T", "N"):
            if tag in node and _index(node.get(tag)):
                dtype, shape = node.get("dtype"), node.get("shape")
                if tag == "T" and (not isinstance(dtype, str) or dtype not in DTYPES):
                    _bad("state tree", "a torch dtype", dtype)
                if tag == "N":
                    numpy_dtype(dtype)
                if not isinstance(shape, list) or not all(_index(s) for s in shape):
                    _bad("state tree", "a shape of non-negative ints", shape)
                if any(s > MAX_ELEMENTS for s in shape) or math.prod(shape) > MAX_ELEMENTS:
                    _bad("state tree", f"a shape of at most {MAX_ELEMENTS} elements", shape)
                if node[tag] in out:
                    _bad("state tree", "each array index used once", node[tag])
                out[node[tag]] = (tag, dtype, shape)
                return
        for v in node.values():
            array_specs(v, out, depth + 1)
    elif isinstance(node, list):
        for v in node:
            array_specs(v, out, depth + 1)


def _index(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _bad(where: str, expected: str, found: Any) -> None:
    raise UnsafeCheckpointError(path="state tree", unit=where, expected=expected, found=repr(found)[:200])
