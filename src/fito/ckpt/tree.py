"""Turn a state (nested dicts/lists of tensors and plain values) into a JSON tree plus a list of tensors,
and back. The tree is data, never code: no pickle, nothing executable, every leaf type named here."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fito.errors import StateMismatchError, UnsafeCheckpointError

DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
        torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128,
    )
}


NUMPY_KINDS = "biufc"  # bool, int, uint, float, complex: plain numbers only, never objects


def numpy_dtype(name: object) -> np.dtype:
    """A numpy dtype from an untrusted string, restricted to plain numbers."""
    try:
        dtype = np.dtype(name) if isinstance(name, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in NUMPY_KINDS or dtype.itemsize > 16:
        raise UnsafeCheckpointError(path="state tree", unit=None, expected="a numeric numpy dtype", found=repr(name)[:80])
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise StateMismatchError(f"tensors of dtype {name} are not supported by fito checkpoints")
    return name


Array = torch.Tensor | np.ndarray


def encode(value: Any, path: str, tensors: list[tuple[str, Array]]) -> Any:
    """Encode `value`; tensors (and numpy arrays) are appended to `tensors` with a unit name = their path."""
    if isinstance(value, torch.Tensor):
        tensors.append((path, value.detach()))
        return {"T": len(tensors) - 1, "dtype": dtype_name(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in NUMPY_KINDS:
            raise StateMismatchError(f"{path}: numpy arrays of dtype {value.dtype} are not supported")
        tensors.append((path, np.ascontiguousarray(value)))
        return {"N": len(tensors) - 1, "dtype": value.dtype.str, "shape": list(value.shape)}
    if value is None or isinstance(value, (bool, str)):
        return {"v": value}
    if isinstance(value, (int, np.integer)):
        return {"v": int(value)}
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return {"v": f} if math.isfinite(f) else {"f": repr(f)}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"d": {k: encode(v, f"{path}/{k}", tensors) for k, v in value.items()}}
        return {"m": [[encode(k, f"{path}/<key>", tensors), encode(v, f"{path}/{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, list):
        return {"l": [encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, tuple):
        return {"t": [encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    raise StateMismatchError(
        f"{path}: cannot checkpoint a value of type {type(value).__name__}; fito stores tensors, numpy arrays, "
        "and JSON-like values (dict, list, tuple, str, int, float, bool, None)"
    )


def decode(node: Any, tensors: list[Array], where: str) -> Any:
    """Inverse of `encode`, over an untrusted tree: every malformed node is an UnsafeCheckpointError."""
    if not isinstance(node, dict) or len(node) == 0:
        _bad(where, "a tagged node", node)
    if "v" in node:
        v = node["v"]
        if v is not None and not isinstance(v, (bool, int, float, str)):
            _bad(where, "a JSON scalar", v)
        return v
    if "f" in node:
        if node["f"] not in ("inf", "-inf", "nan"):
            _bad(where, "inf, -inf or nan", node["f"])
        return float(node["f"])
    if "d" in node and isinstance(node["d"], dict):
        return {k: decode(v, tensors, f"{where}/{k}") for k, v in node["d"].items()}
    if "m" in node and isinstance(node["m"], list):
        out = {}
        for pair in node["m"]:
            if not isinstance(pair, list) or len(pair) != 2:
                _bad(where, "a [key, value] pair", pair)
            key = decode(pair[0], tensors, where)
            try:
                hash(key)
            except TypeError:
                _bad(where, "a hashable mapping key", key)
            out[key] = decode(pair[1], tensors, f"{where}/{pair[0]}")
        return out
    if "l" in node and isinstance(node["l"], list):
        return [decode(v, tensors, f"{where}/{i}") for i, v in enumerate(node["l"])]
    if "t" in node and isinstance(node["t"], list):
        return tuple(decode(v, tensors, f"{where}/{i}") for i, v in enumerate(node["t"]))
    for tag in ("T", "N"):
        if tag in node:
            index = node[tag]
            if not isinstance(index, int) or not 0 <= index < len(tensors):
                _bad(where, f"a tensor index below {len(tensors)}", index)
            return tensors[index]
    _bad(where, "a known node tag", sorted(node))


def array_specs(node: Any, out: dict[int, tuple[str, str, list[int]]]) -> None:
    """Collect {array index: (tag "T"|"N", dtype, shape)} from an untrusted tree, validating each spec."""
    if isinstance(node, dict):
        for tag in ("T", "N"):
            if tag in node and isinstance(node.get(tag), int):
                dtype, shape = node.get("dtype"), node.get("shape")
                if tag == "T" and (not isinstance(dtype, str) or dtype not in DTYPES):
                    _bad("state tree", "a torch dtype", dtype)
                if tag == "N":
                    numpy_dtype(dtype)
                if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
                    _bad("state tree", "a shape of non-negative ints", shape)
                out[node[tag]] = (tag, dtype, shape)
                return
        for v in node.values():
            array_specs(v, out)
    elif isinstance(node, list):
        for v in node:
            array_specs(v, out)


def _bad(where: str, expected: str, found: Any) -> None:
    raise UnsafeCheckpointError(path="state tree", unit=where, expected=expected, found=repr(found)[:200])
