"""A training state's entries as torch.distributed.checkpoint items plus fito's own JSON, and back.

Per entry, its tensors (plain tensors and DTensors; numpy arrays as their bytes in uint8 tensors) become DCP
items named `<entry>/<path>` (see fito.ckpt.rank_local for the names); everything else -- kind, class, the
structure, every non-tensor value (param_groups, scheduler state, extra state, int dict keys, tuples) -- is
one JSON document per entry in fito's tree codec, where each tensor is a reference {"T"|"N": index, dtype,
shape} to the item `keys[index]`. DCP would stringify int keys and flatten containers; the JSON keeps them.

Modules and optimizers go through DCP's `get_state_dict`: parameter and moment names are FQNs (DDP's
`module.` prefix dropped; FSDP2 and TP shards stay DTensors), so a checkpoint loads into any parallelism of
the same model, and an optimizer's moments follow its parameters by name, not by position."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.tensor import DTensor

from fito.ckpt import packs
from fito.ckpt.live_layout import MASTERS, FreshOptimizers, loose_params, owner_of
from fito.ckpt.optim_state import check_state_dict
from fito.ckpt.rank_local import is_pack_path
from fito.ckpt.state import class_name, kind_of
from fito.plan.tree import DTYPES, MAX_DEPTH, array_specs, decode, encode, entry_path, numpy_dtype, too_deep
from fito.errors import StateMismatchError, UnsafeCheckpointError

DOC_FORMAT = "fito-entry/1"  # a document without packs: as written before packs existed
PACKED_DOC_FORMAT = "fito-entry/2"  # with packs (fito.ckpt.packs); readers without packs refuse it by name
MAX_DOC_BYTES = 64 << 20


@dataclass
class Captured:
    """One entry of a state as it is saved: its JSON document and its tensors (`leaves[i]` is `keys[i]`)."""

    name: str
    kind: str
    doc: dict[str, Any]
    leaves: list[torch.Tensor] = field(default_factory=list)
    rank_local: bool = False  # declared by its class (`fito_rank_local = True`), e.g. RNGState, DataPosition

    @property
    def keys(self) -> list[str]:
        return self.doc["keys"]

    @property
    def sharded(self) -> bool:
        return any(isinstance(t, DTensor) for t in self.leaves)

    def doc_text(self) -> str:
        return json.dumps(self.doc, separators=(",", ":"))

    def packed(self, digests: list[str | None]) -> tuple[str, list[packs.Item]]:
        """The document as saved and the DCP tensors, small plain tensors packed (fito.ckpt.packs)."""
        layout, items = packs.build(self.keys, self.leaves, digests)
        if not layout:
            return self.doc_text(), items
        return json.dumps({**self.doc, "format": PACKED_DOC_FORMAT, "packs": layout}, separators=(",", ":")), items


# ---------------------------------------------------------------- save: entries -> documents and tensors
def check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("__"):
        raise StateMismatchError(f"state key {name!r}: use non-empty strings without '/' that do not start with '__' "
                                 "(reserved for fito)")


def capture(state: Mapping[str, Any], internal: Mapping[str, Any] | None = None) -> list[Captured]:
    """Every entry of `state` (plus fito's `internal` values) as documents and tensors. Tensors still alias
    the live objects. A fresh optimizer is saved with its empty state (the step DCP uses to read it is undone)."""
    out = []
    for name, obj in state.items():
        check_name(name)
        out.append(capture_entry(name, obj, state))
    for name, value in (internal or {}).items():
        out.append(capture_entry(name, value, state))
    return out


def capture_entry(name: str, obj: Any, state: Mapping[str, Any]) -> Captured:
    kind = kind_of(obj)
    cls = class_name(obj) if kind in ("optimizer", "stateful") else None
    if kind == "module":
        data: Any = dict(get_model_state_dict(obj))
    elif kind == "optimizer":
        # the checks of fito's own format first: a partial state (a moment missing for one parameter) that
        # the optimizer would crash on is refused, naming group and parameters
        dims = [p.dim() for g in obj.param_groups for p in g["params"]]
        check_state_dict(obj.state_dict(), dims, name, saving=True)
        fresh = FreshOptimizers([obj])
        try:
            data = fresh.state_dict(owner_of(obj, state), obj)
        finally:
            fresh.undo()
        if fresh.is_fresh(obj):
            data = {"state": {}, "param_groups": data["param_groups"]}
        masters = loose_params(obj, state)
        if masters:  # parameters only this optimizer holds (fp32 masters): their values are state too
            data = {**data, MASTERS: {fqn: p.detach() for fqn, p in masters.items()}}
    elif kind == "stateful":
        data = obj.state_dict()
    else:
        data = obj
    leaves: list[torch.Tensor] = []
    keys = ItemNames()
    node = encode_tree(data, (), f"/{name}/data", leaves, keys, 0)
    doc = {"format": DOC_FORMAT, "kind": kind, "class": cls, "data": node, "keys": list(keys)}
    return Captured(name, kind, doc, leaves, bool(getattr(type(obj), "fito_rank_local", False)))


class ItemNames(list[str]):
    """Item names in leaf order, each made unique (`path#n`), never a pack's name (`__pack__/<n>`); a set
    beside the list keeps adding O(1), so an entry of 20,000 tensors is not quadratic."""

    def __init__(self) -> None:
        super().__init__()
        self._taken: set[str] = set()

    def add(self, path: str) -> None:
        name, n = path, 0
        while name in self._taken or is_pack_path(name):
            n += 1
            name = f"{path}#{n}"
        self._taken.add(name)
        self.append(name)


def encode_tree(value: Any, parts: tuple[str, ...], where: str, leaves: list[torch.Tensor], keys: ItemNames,
                depth: int) -> Any:
    """fito's tree codec (fito.plan.tree), with tensors -- DTensors too -- handed to DCP as leaves."""
    if depth > MAX_DEPTH:
        raise too_deep(where)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        found: list[tuple[str, Any]] = []
        local = value.to_local() if isinstance(value, DTensor) else value
        node = encode(local, where, found)  # the checks and the spec of fito's codec (dtype, layout, subclass)
        tag = "T" if "T" in node else "N"
        if isinstance(value, DTensor):
            leaf: torch.Tensor = value
            node["shape"] = list(value.shape)  # the global shape: DCP stores chunks of it
        elif tag == "T":
            leaf = found[0][1]
        else:
            array = found[0][1]
            array = array if array.flags.writeable else array.copy()
            leaf = torch.from_numpy(array.reshape(-1).view(np.uint8))
        node[tag] = len(leaves)
        leaves.append(leaf)
        keys.add("/".join(parts))
        return node
    d = depth + 1
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"d": {k: encode_tree(v, (*parts, k), f"{where}/{k}", leaves, keys, d) for k, v in value.items()}}
        return {"m": [[encode(k, f"{where}/<key>", []),
                       encode_tree(v, (*parts, str(k)), f"{where}/{k}", leaves, keys, d)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [encode_tree(v, (*parts, str(i)), f"{where}/{i}", leaves, keys, d) for i, v in enumerate(value)]
        return {"l" if isinstance(value, list) else "t": items}
    return encode(value, where, [])  # a scalar; anything else is refused there, naming the entry


# ---------------------------------------------------------------- restore: documents -> entries
def parse_doc(text: Any, where: str) -> dict[str, Any]:
    """An entry's document, read back from a verified value: every field checked before use."""
    def bad(expected: str, found: Any) -> UnsafeCheckpointError:
        return UnsafeCheckpointError(path=where, unit=None, expected=expected, found=repr(found)[:120])

    if not isinstance(text, str) or len(text) > MAX_DOC_BYTES:
        raise bad(f"an entry document (a JSON string of at most {MAX_DOC_BYTES} bytes)", type(text).__name__)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise bad("JSON", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") not in (DOC_FORMAT, PACKED_DOC_FORMAT):
        raise bad(f"format {DOC_FORMAT} or {PACKED_DOC_FORMAT}", doc.get("format") if isinstance(doc, dict) else doc)
    if ("packs" in doc) != (doc["format"] == PACKED_DOC_FORMAT):
        raise bad(f"packs in a {PACKED_DOC_FORMAT} document only, and there always", sorted(doc))
    if doc.get("kind") not in ("module", "optimizer", "stateful", "tensor", "value"):
        raise bad("an entry kind", doc.get("kind"))
    if doc.get("class") is not None and not isinstance(doc.get("class"), str):
        raise bad("a class name", doc.get("class"))
    keys = doc.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise bad("a list of distinct item names", keys)
    specs: dict[int, tuple[str, str, list[int]]] = {}
    array_specs(doc.get("data"), specs)
    if sorted(specs) != list(range(len(keys))):
        raise bad(f"{len(keys)} tensor references, numbered from 0", sorted(specs)[:8])
    doc["specs"] = specs
    # {leaf index: (pack, offset, length)}, checked against the specs: in range, disjoint, of the right length
    doc["packed"], doc["pack_bytes"] = packs.parse_layout(doc.get("packs", []), keys, specs, bad)
    return doc


def leaf_spec(spec: tuple[str, str, list[int]]) -> tuple[torch.dtype, tuple[int, ...]]:
    """The dtype and shape of the DCP item behind a tensor reference (a numpy array is stored as its bytes)."""
    tag, dtype, shape = spec
    if tag == "T":
        return DTYPES[dtype], tuple(shape)
    return torch.uint8, (math.prod(shape) * numpy_dtype(dtype).itemsize,)


def new_leaf(spec: tuple[str, str, list[int]]) -> tuple[torch.Tensor, Any]:
    """(what DCP reads into, what user code gets): a fresh tensor, or a fresh numpy array and its bytes."""
    dtype, shape = leaf_spec(spec)
    if spec[0] == "T":
        t = torch.empty(shape, dtype=dtype)
        return t, t
    array = np.empty(spec[2], dtype=numpy_dtype(spec[1]))  # owns its data; DCP fills it through the view
    return torch.from_numpy(array.reshape(-1).view(np.uint8)), array


def decode_entry(doc: dict[str, Any], leaves: list[Any], where: str) -> Any:
    """The entry's saved data, its tensors and arrays taken from `leaves` (filled by DCP)."""
    return decode(doc["data"], leaves, where)
