"""What fails and how failures depend on each other: `FailureSpec` (per-unit marginals p_c, p_r, p_a plus
a dependence model) and the two parameter maps the closed forms and the sampler share (the shock of the
common-shock and blocks models, the slot pool of the contention model).

Correlated failures (correction 4 (docs/corrections.md)): at a fixed per-unit commit probability p, positive
correlation RAISES P(all C) and LOWERS P(mixed): independence is the worst case for positively
associated failures, not the best, so the paper's Remark 5.8 has the direction backwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

CorrelationModel = Literal["independent", "beta-binomial", "common-shock", "blocks", "contention"]
MODELS: tuple[str, ...] = ("independent", "beta-binomial", "common-shock", "blocks", "contention")


@dataclass(frozen=True)
class FailureSpec:
    """Per-unit marginals plus a dependence model.

    p_c + p_r + p_a = 1. `rho` is the pairwise correlation of the unit-failure indicators
    (within a block for the "blocks" model, where blocks are independent of each other). The
    "contention" model is the negatively dependent one (rho < 0): units take distinct slots of a
    shared pool in which a fixed number of slots fail, so one failure makes others less likely.
    """

    p_c: float
    p_r: float
    p_a: float = 0.0
    model: CorrelationModel = "independent"
    rho: float = 0.0
    block_size: int = 8

    def __post_init__(self) -> None:
        for name in ("p_c", "p_r", "p_a"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if not math.isclose(self.p_c + self.p_r + self.p_a, 1.0, rel_tol=0, abs_tol=1e-12):
            raise ValueError(f"p_c + p_r + p_a must be 1, got {self.p_c + self.p_r + self.p_a!r}")
        if self.model not in MODELS:
            raise ValueError(f"unknown correlation model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.model == "contention":
            if not -1.0 <= self.rho <= 0.0:
                raise ValueError(f"the contention model is negatively dependent: rho must be in [-1, 0], got {self.rho}")
        elif not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1] for {self.model}, got {self.rho}")
        if self.model != "independent" and self.p_a > 0:
            raise ValueError("correlated models are binary (R/C); use p_a = 0")
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")

    @classmethod
    def binary(cls, p: float, *, model: CorrelationModel = "independent", rho: float = 0.0,
               block_size: int = 8, q: float | None = None) -> FailureSpec:
        """Binary model with commit probability p; pass q = 1 - p directly to keep its digits."""
        q = (1.0 - p) if q is None else q
        return cls(p_c=1.0 - q, p_r=q, p_a=0.0, model=model, rho=rho, block_size=block_size)

    @property
    def q(self) -> float:
        """Per-unit failure (non-commit) probability."""
        return self.p_r + self.p_a

    @property
    def effectively_independent(self) -> bool:
        return self.model == "independent" or self.rho == 0.0


def shock_probability(q: float, rho: float) -> float:
    """Probability s of a shared shock that gives unit-failure correlation rho at marginal q.

    With failure = shock OR own failure (prob q'), q = s + (1-s) q' and
    Cov = s (1-q)^2 / (1-s) = rho q (1-q)  =>  s = rho q / (1 - q + rho q).
    """
    if q <= 0:
        return 0.0
    return rho * q / (1.0 - q + rho * q)


def shock_split(q: float, rho: float) -> tuple[float, float]:
    """(s, q_own): the shared shock's probability and each unit's own failure probability given no
    shock, so that failure = shock OR own failure has marginal q and correlation rho."""
    s = shock_probability(q, rho)
    q_own = (q - s) / (1.0 - s) if s < 1 else 0.0
    return s, q_own


def contention_pool(n: int, q: float, rho: float) -> tuple[int, int]:
    """Pool size M and failing slots Q for the contention model: drawing n distinct slots without
    replacement gives pairwise correlation -1/(M-1) = rho and marginal Q/M ~ q (Q is rounded)."""
    if rho >= 0:
        raise ValueError("the contention model needs rho < 0")
    pool = round(1.0 + 1.0 / -rho)
    if pool < n:
        raise ValueError(f"rho = {rho} needs a pool of {pool} < n = {n} slots; exchangeable units allow "
                         f"rho >= -1/(n-1) = {-1.0 / max(n - 1, 1):.3g}")
    bad = round(q * pool)
    if q > 0 and abs(bad / pool - q) > 0.05 * q:
        raise ValueError(f"a pool of {pool} slots cannot hold marginal q = {q:g} (nearest {bad}/{pool}); "
                         f"pick rho = -1/(M-1) with q*M close to an integer")
    return pool, bad
