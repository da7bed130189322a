"""Epoch-typed training state (§6, §3.1): the tuple S = (theta, m, v, step, data position, RNG) with the
epoch each component reflects, and the type check that refuses a tuple whose tags differ
(`MixedEpochError`): AdamW is only defined on tuples of one epoch."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fito.errors import FitoError

COMPONENTS: tuple[str, ...] = ("theta", "m", "v", "step", "data_position", "rng")


class MixedEpochError(FitoError):
    """An optimizer step was asked to run on a tuple whose components reflect different epochs."""

    def __init__(self, tags: Mapping[str, int]) -> None:
        self.tags = dict(tags)
        groups: dict[int, list[str]] = {}
        for name, epoch in self.tags.items():
            groups.setdefault(epoch, []).append(name)
        majority = max(groups, key=lambda e: (len(groups[e]), e))
        odd = ", ".join(f"{n} from epoch {e}" for n, e in self.tags.items() if e != majority)
        super().__init__(f"mixed-epoch state: expected every component at epoch {majority}, found {odd}; "
                         "restore a whole committed epoch instead")


@dataclass(frozen=True)
class Tagged:
    """A component value with the epoch it reflects."""

    value: Any
    epoch: int


@dataclass
class EpochTypedState:
    """The §3.1 tuple S = (theta, m, v, step, d, xi) with an epoch tag on every component."""

    components: dict[str, Tagged]

    def tags(self) -> dict[str, int]:
        return {name: t.epoch for name, t in self.components.items()}

    def mixed_with(self, others: Mapping[int, EpochTypedState], assignment: Mapping[str, int]) -> EpochTypedState:
        """Take each component named in `assignment` from the state of that epoch (a mixed tuple)."""
        comps = dict(self.components)
        for name, epoch in assignment.items():
            comps[name] = others[epoch].components[name]
        return EpochTypedState(comps)


def check_epoch_consistent(state: EpochTypedState) -> int:
    """Return the common epoch, or raise MixedEpochError: AdamW is only defined on Epoch_t tuples."""
    missing = [c for c in COMPONENTS if c not in state.components]
    if missing:
        raise FitoError(f"epoch-typed state lacks components {missing}; a silent default is a type violation")
    tags = state.tags()
    if len(set(tags.values())) != 1:
        raise MixedEpochError(tags)
    return next(iter(tags.values()))
