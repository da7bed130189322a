"""What a restore loads: everything, strictly (the default), or with `strict=False` what the state and the
checkpoint both hold, reporting the rest.

Strict: an entry of the state missing from the checkpoint, a saved entry the state lacks, or a module key only
one side has, refuses the restore before anything changes. `strict=False` is for loading weights only from a
model + optimizer checkpoint, or a model that dropped (or added) a head: entries and module keys only one side
has are left out -- the state's keep their current values, the checkpoint's are not applied -- and listed, like
`nn.Module.load_state_dict`'s result, in `Checkpointer.restore`'s `IncompatibleKeys` (`ck.left_out`) and in a
warning on the "fito" logger. Everything both sides hold is still checked as strictly (shapes, dtypes, bytes),
and an optimizer is loaded only whole: its parameters must be the saved ones."""
from __future__ import annotations

import logging
from typing import Any, MutableMapping, NamedTuple

import torch

from fito.ckpt.entries import leaf_spec
from fito.ckpt.live_layout import FreshOptimizers, templates
from fito.ckpt.sharded_save import VALIDATION_ENTRY
from fito.ckpt.state import class_name, kind_of
from fito.errors import StateMismatchError

log = logging.getLogger("fito")


class IncompatibleKeys(NamedTuple):
    """What a `strict=False` restore left out: `missing_keys` (in the state, not in the checkpoint: kept as they
    were) and `unexpected_keys` (in the checkpoint, not in the state: not applied). An entry is named by its
    state key ("optim"); a module's key by entry and FQN ("model/head.weight")."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Scope:
    """The restore's strictness, and what a partial one has left out so far (one candidate step at a time)."""

    def __init__(self, strict: bool) -> None:
        if not isinstance(strict, bool):
            raise ValueError(f"strict must be True or False, got {strict!r}")
        self.strict = strict
        self.missing: list[str] = []
        self.unexpected: list[str] = []

    def begin(self) -> None:
        """A new candidate step: nothing left out yet."""
        self.missing, self.unexpected = [], []

    def entries(self, state: MutableMapping[str, Any], saved: set[str], where: str) -> None:
        missing = [n for n in state if n not in saved]
        extra = sorted(saved - set(state))
        if self.strict and missing:
            raise StateMismatchError(f"{where}: no entry {missing[0]!r} in the checkpoint (it has {sorted(saved)}); "
                                     "restore into a state with the entries that were saved, or pass strict=False to "
                                     "leave it as it is")
        if self.strict and extra:
            raise StateMismatchError(f"{where}: the checkpoint holds entries {extra} that the state to restore lacks "
                                     f"(it has {sorted(saved)}); pass every saved entry, or pass strict=False to "
                                     "restore only the state's entries (e.g. the weights without the optimizer)")
        self.missing += missing
        self.unexpected += extra

    def module_keys(self, name: str, current: set[str], saved: set[str], where: str) -> None:
        if current == saved:
            return
        if self.strict:
            raise StateMismatchError(f"{where}: {name}: module keys differ; missing in checkpoint {sorted(current - saved)}, "
                                     f"unexpected {sorted(saved - current)}; pass strict=False to load the keys both "
                                     "hold and leave the others out (they are reported)")
        self.missing += [f"{name}/{k}" for k in sorted(current - saved)]
        self.unexpected += [f"{name}/{k}" for k in sorted(saved - current)]

    def result(self, where: str, rank: int) -> IncompatibleKeys:
        keys = IncompatibleKeys(list(self.missing), list(self.unexpected))
        if (keys.missing_keys or keys.unexpected_keys) and rank == 0:
            log.warning("%s: restored with strict=False; left out: missing (kept as they were) %s, unexpected (not "
                        "applied) %s", where, keys.missing_keys, keys.unexpected_keys)
        return keys


def templates_for(name: str, state: MutableMapping[str, Any], doc: dict[str, Any], src: int | None,
                  fresh: FreshOptimizers, scope: Scope, where: str) -> dict[str, torch.Tensor]:
    """The live tensors (layouts) entry `name`'s saved tensors are restored like, after checking the entry's
    kind, class and (for a module) keys against the state."""
    obj = state.get(name)
    if name == VALIDATION_ENTRY:
        return {}
    kind = kind_of(obj)
    if doc["kind"] != kind:
        raise StateMismatchError(f"{where}: entry {name!r} was saved as {doc['kind']}, restoring into a {kind}")
    if doc["class"] is not None and kind in ("optimizer", "stateful") and doc["class"] != class_name(obj):
        raise StateMismatchError(f"{where}: {name}: saved from a {doc['class']}, restoring into a {class_name(obj)}; "
                                 "restore into an object of the saved class")
    if kind == "module":
        live = templates(name, obj, state, fresh)  # its state dict: the keys to check, and the layouts
        saved = set(doc["data"]["d"]) if isinstance(doc["data"], dict) and isinstance(doc["data"].get("d"), dict) else set()
        scope.module_keys(name, set(live), saved, where)
        return live if src is None else {}
    if src is not None or kind not in ("optimizer", "tensor"):
        return {}  # a rank-local entry holds no DTensors; plain targets of the saved shapes
    specs = {path: leaf_spec(doc["specs"][i]) for i, path in enumerate(doc["keys"])}
    return templates(name, obj, state, fresh, specs)
