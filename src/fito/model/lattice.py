"""The epoch lattice of §5: types, classification of state vectors, closed forms and Monte Carlo.

After a checkpoint attempt for epoch e every persistence unit is in one of three states,
R (reverted to e-1) < A (ambiguous) < C (committed e); the binary model drops A. The lattice is
the componentwise product; its atomic points are only the top C^n and the bottom R^n.

Closed forms are evaluated in log space so that they stay exact for n up to 10^7 and p up to
1 - 1e-9 (where p**n and 1 - p**n - ... lose every digit in naive floating point).

Correlated failures (correction 4 (docs/corrections.md)): at a fixed per-unit commit probability p, positive
correlation RAISES P(all C) and LOWERS P(mixed): independence is the worst case for positively
associated failures, not the best, so the paper's Remark 5.8 has the direction backwards.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Literal

import numpy as np

CorrelationModel = Literal["independent", "beta-binomial", "common-shock", "blocks", "contention"]
MODELS: tuple[str, ...] = ("independent", "beta-binomial", "common-shock", "blocks", "contention")


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


# ----------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class LatticeProbabilities:
    """Closed-form probabilities of landing on the top, the bottom or the interior."""

    n: int
    spec: FailureSpec
    log_all_c: float
    log_all_r: float
    all_c: float
    all_r: float
    atomic: float
    mixed: float
    any_ambiguous: float

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["spec"] = asdict(self.spec)
        return d


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _nlog(n: int, x: float) -> float:
    """n * log(x) with 0 * log(0) = 0 and log(0) = -inf."""
    if n == 0:
        return 0.0
    return n * math.log(x) if x > 0 else -math.inf


def _nlog1m(n: int, q: float) -> float:
    """n * log(1 - q), exact for tiny q (log1p)."""
    if n == 0:
        return 0.0
    return n * math.log1p(-q) if q < 1 else -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def shock_probability(q: float, rho: float) -> float:
    """Probability s of a shared shock that gives unit-failure correlation rho at marginal q.

    With failure = shock OR own failure (prob q'), q = s + (1-s) q' and
    Cov = s (1-q)^2 / (1-s) = rho q (1-q)  =>  s = rho q / (1 - q + rho q).
    """
    if q <= 0:
        return 0.0
    return rho * q / (1.0 - q + rho * q)


def _shock_logs(m: int, q: float, rho: float) -> tuple[float, float]:
    """log P(all C), log P(all R) for m units sharing one shock."""
    s = shock_probability(q, rho)
    q_own = (q - s) / (1.0 - s) if s < 1 else 0.0
    log_c = _log(1.0 - s) + _nlog1m(m, q_own) if s < 1 else -math.inf
    log_r = _logaddexp(_log(s), (_log(1.0 - s) + _nlog(m, q_own)) if s < 1 else -math.inf)
    return log_c, log_r


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


def _log_falling_ratio(a: int, b: int, n: int) -> float:
    """log of a(a-1)...(a-n+1) / b(b-1)...(b-n+1); -inf when a < n."""
    if a < n:
        return -math.inf
    return (math.lgamma(a + 1) - math.lgamma(a - n + 1)) - (math.lgamma(b + 1) - math.lgamma(b - n + 1))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def closed_form(n: int, spec: FailureSpec) -> LatticeProbabilities:
    """Exact P(all C), P(all R), P(atomic), P(mixed) and P(any A), computed in log space."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    q = spec.q
    if spec.effectively_independent or q == 0.0 or q == 1.0:
        log_c = _nlog1m(n, q)
        log_r = _nlog(n, spec.p_r)
    elif spec.model == "beta-binomial":
        if spec.rho >= 1.0:  # all units share one coin
            log_c, log_r = _log(1.0 - q), _log(q)
        else:
            s = 1.0 / spec.rho - 1.0
            a, b = q * s, (1.0 - q) * s  # failure ~ Bernoulli(pi), pi ~ Beta(a, b)
            log_c = _log_beta(a, b + n) - _log_beta(a, b)
            log_r = _log_beta(a + n, b) - _log_beta(a, b)
    elif spec.model == "common-shock":
        log_c, log_r = _shock_logs(n, q, spec.rho)
    elif spec.model == "contention":
        pool, bad = contention_pool(n, q, spec.rho)
        log_c = _log_falling_ratio(pool - bad, pool, n)
        log_r = _log_falling_ratio(bad, pool, n)
    else:  # blocks: independent blocks, each with its own shock
        k, rest = divmod(n, spec.block_size)
        bc, br = _shock_logs(spec.block_size, q, spec.rho)
        log_c, log_r = k * bc, k * br
        if rest:
            rc, rr = _shock_logs(rest, q, spec.rho)
            log_c, log_r = log_c + rc, log_r + rr
    log_atomic = _logaddexp(log_c, log_r)
    any_amb = -math.expm1(_nlog1m(n, spec.p_a)) if spec.p_a > 0 else 0.0
    return LatticeProbabilities(
        n=n, spec=spec, log_all_c=log_c, log_all_r=log_r, all_c=math.exp(log_c), all_r=math.exp(log_r),
        atomic=math.exp(log_atomic), mixed=-math.expm1(log_atomic), any_ambiguous=any_amb,
    )


def first_n_below(p: float, threshold: float) -> int:
    """Smallest n with p**n < threshold (correction 1: 0.9999**n < 0.67 first at n = 4005)."""
    if not (0 < p < 1 and 0 < threshold < 1):
        raise ValueError("need 0 < p < 1 and 0 < threshold < 1")
    n = math.floor(math.log(threshold) / math.log(p))
    while p ** n >= threshold:  # guard the floor against rounding at the boundary
        n += 1
    while n > 1 and p ** (n - 1) < threshold:
        n -= 1
    return n


# The §5.4 table as the paper prints it (n = 4000, binary model): p -> stated P(atomic).
PAPER_TABLE_5_4: dict[float, float] = {0.999: 0.0183, 0.9999: 0.67031, 0.99999: 0.961}


@dataclass(frozen=True)
class TableRow:
    p: float
    paper: float
    ours: float
    mixed: float
    approx_exp: float  # exp(-n (1-p)), the near-1 asymptote


def section_5_4_table(n: int = 4000) -> list[TableRow]:
    """Recompute the §5.4 table; the paper's values are kept beside ours for comparison."""
    rows = []
    for p, stated in PAPER_TABLE_5_4.items():
        cf = closed_form(n, FailureSpec.binary(p))
        rows.append(TableRow(p=p, paper=stated, ours=cf.atomic, mixed=cf.mixed, approx_exp=math.exp(-n * (1 - p))))
    return rows


# ----------------------------------------------------------------------------------------------
# Monte Carlo
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonteCarloResult:
    """Counts of sampled state vectors by class, with binomial standard errors."""

    n: int
    samples: int
    all_c: int
    all_r: int
    mixed: int
    any_ambiguous: int

    def rate(self, count: int) -> float:
        return count / self.samples

    def stderr(self, count: int) -> float:
        r = self.rate(count)
        return math.sqrt(max(r * (1 - r), 1.0 / self.samples) / self.samples)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        for key in ("all_c", "all_r", "mixed", "any_ambiguous"):
            c = getattr(self, key)
            d[f"p_{key}"] = self.rate(c)
            d[f"se_{key}"] = self.stderr(c)
        return d


def sample_states(n: int, spec: FailureSpec, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `rows` state vectors (uint8 array rows x n with values of EpochState) unit by unit."""
    u = rng.random((rows, n))
    out = np.full((rows, n), EpochState.C, dtype=np.uint8)
    q = spec.q
    if spec.effectively_independent:
        out[u < spec.p_r + spec.p_a] = EpochState.A
        out[u < spec.p_r] = EpochState.R
        return out
    if spec.model == "beta-binomial":
        if spec.rho >= 1.0:
            fail_p = (rng.random((rows, 1)) < q).astype(float)
        else:
            s = 1.0 / spec.rho - 1.0
            fail_p = rng.beta(q * s, (1 - q) * s, size=(rows, 1))
        out[u < fail_p] = EpochState.R
        return out
    if spec.model == "contention":
        pool, bad = contention_pool(n, q, spec.rho)
        k = rng.hypergeometric(bad, pool - bad, n, size=rows)
        ranks = u.argsort(axis=1).argsort(axis=1)  # k failing units at uniformly random positions
        out[ranks < k[:, None]] = EpochState.R
        return out
    s_shock = shock_probability(q, spec.rho)
    q_own = (q - s_shock) / (1 - s_shock) if s_shock < 1 else 0.0
    if spec.model == "common-shock":
        shock = rng.random((rows, 1)) < s_shock
    else:
        blocks = -(-n // spec.block_size)
        shock = np.repeat(rng.random((rows, blocks)) < s_shock, spec.block_size, axis=1)[:, :n]
    out[(u < q_own) | shock] = EpochState.R
    return out


def monte_carlo(n: int, spec: FailureSpec, samples: int, *, seed: int = 0,
                max_cells: int = 4_000_000) -> MonteCarloResult:
    """Sample whole state vectors and classify them; chunked to bound memory."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    rng = np.random.default_rng(seed)
    chunk = max(1, max_cells // n)
    all_c = all_r = amb = 0
    done = 0
    while done < samples:
        rows = min(chunk, samples - done)
        x = sample_states(n, spec, rows, rng)
        all_c += int(np.count_nonzero((x == EpochState.C).all(axis=1)))
        all_r += int(np.count_nonzero((x == EpochState.R).all(axis=1)))
        amb += int(np.count_nonzero((x == EpochState.A).any(axis=1)))
        done += rows
    return MonteCarloResult(n=n, samples=samples, all_c=all_c, all_r=all_r,
                            mixed=samples - all_c - all_r, any_ambiguous=amb)


@dataclass
class CorrelationSweep:
    """P(mixed) at fixed p for several rho: the direction of Remark 5.8, measured."""

    n: int
    p: float
    model: CorrelationModel
    rows: list[tuple[float, float, float]] = field(default_factory=list)  # (rho, P(all C), P(mixed))


def correlation_sweep(n: int, p: float, rhos: Sequence[float], model: CorrelationModel = "beta-binomial",
                      block_size: int = 8) -> CorrelationSweep:
    sweep = CorrelationSweep(n=n, p=p, model=model)
    for rho in rhos:
        cf = closed_form(n, FailureSpec.binary(p, model=model, rho=rho, block_size=block_size))
        sweep.rows.append((rho, cf.all_c, cf.mixed))
    return sweep
