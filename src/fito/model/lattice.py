"""The epoch lattice of §5: unit states, the lattice order, and classification of state vectors.

After a checkpoint attempt for epoch e every persistence unit is in one of three states,
R (reverted to e-1) < A (ambiguous) < C (committed e); the binary model drops A. The lattice is
the componentwise product; its atomic points are only the top C^n and the bottom R^n.

What failures do on it lives beside: fito.model.failure_spec (the failure model),
fito.model.lattice_closed_form (exact probabilities, the §5.4 table) and fito.model.lattice_monte_carlo.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal


class EpochState(IntEnum):
    """One unit's position after an attempt; the integer order is the lattice order R < A < C."""

    R = 0
    A = 1
    C = 2


BINARY_STATES: frozenset[EpochState] = frozenset({EpochState.R, EpochState.C})
TERNARY_STATES: frozenset[EpochState] = frozenset(EpochState)

StateVector = tuple[EpochState, ...]


@dataclass(frozen=True)
class EpochLattice:
    """`{R < A < C}^n` (ternary) or `{R < C}^n` (binary), ordered componentwise."""

    n: int
    ternary: bool = True

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"a lattice needs n >= 1 components, got {self.n}")

    @property
    def states(self) -> frozenset[EpochState]:
        return TERNARY_STATES if self.ternary else BINARY_STATES

    @property
    def size(self) -> int:
        """Number of lattice points: 3^n or 2^n."""
        return len(self.states) ** self.n

    @property
    def top(self) -> StateVector:
        return (EpochState.C,) * self.n

    @property
    def bottom(self) -> StateVector:
        return (EpochState.R,) * self.n

    def element(self, values: Iterable[EpochState | int | str]) -> StateVector:
        """Coerce and type-check a state vector: right length, and no A in the binary lattice."""
        vec = tuple(_coerce(v) for v in values)
        if len(vec) != self.n:
            raise ValueError(f"expected {self.n} components, found {len(vec)}")
        bad = [i for i, s in enumerate(vec) if s not in self.states]
        if bad:
            raise ValueError(f"state A at positions {bad} is not an element of the binary lattice {{R < C}}^{self.n}")
        return vec

    def leq(self, x: Sequence[EpochState], y: Sequence[EpochState]) -> bool:
        return all(a <= b for a, b in zip(self.element(x), self.element(y)))

    def join(self, x: Sequence[EpochState], y: Sequence[EpochState]) -> StateVector:
        return tuple(max(a, b) for a, b in zip(self.element(x), self.element(y)))

    def meet(self, x: Sequence[EpochState], y: Sequence[EpochState]) -> StateVector:
        return tuple(min(a, b) for a, b in zip(self.element(x), self.element(y)))

    def classify(self, values: Iterable[EpochState | int | str]) -> Classification:
        return classify(self.element(values))


def _coerce(v: EpochState | int | str) -> EpochState:
    if isinstance(v, str):
        return EpochState[v.upper()]
    return EpochState(int(v))


@dataclass(frozen=True)
class Classification:
    """Where a state vector sits: the top, the bottom, or the (mixed) interior."""

    kind: Literal["atomic-top", "atomic-bottom", "mixed"]
    ambiguous_positions: tuple[int, ...]
    committed: int
    reverted: int

    @property
    def atomic(self) -> bool:
        return self.kind != "mixed"


def classify(values: Iterable[EpochState | int | str]) -> Classification:
    """Classify a state vector; any A makes it mixed (it cannot be resumed soundly)."""
    vec = [_coerce(v) for v in values]
    if not vec:
        raise ValueError("empty state vector")
    amb = tuple(i for i, s in enumerate(vec) if s is EpochState.A)
    nc = sum(1 for s in vec if s is EpochState.C)
    nr = sum(1 for s in vec if s is EpochState.R)
    kind: Literal["atomic-top", "atomic-bottom", "mixed"]
    if nc == len(vec):
        kind = "atomic-top"
    elif nr == len(vec):
        kind = "atomic-bottom"
    else:
        kind = "mixed"
    return Classification(kind=kind, ambiguous_positions=amb, committed=nc, reverted=nr)
