"""Exact lattice probabilities (§5): P(all C), P(all R), P(atomic), P(mixed) and P(any A) for every
dependence model of `FailureSpec`, the §5.4 table recomputed beside the paper's values, the smallest n
below a threshold (correction 1) and a correlation sweep (correction 4).

Closed forms are evaluated in log space (fito.model.logspace) so that they stay exact for n up to 10^7
and p up to 1 - 1e-9 (where p**n and 1 - p**n - ... lose every digit in naive floating point).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from fito.model.failure_spec import CorrelationModel, FailureSpec, contention_pool, shock_split
from fito.model.logspace import log_add_exp, log_beta, log_falling_ratio, log_or_ninf, n_log, n_log1m


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


def _shock_logs(m: int, q: float, rho: float) -> tuple[float, float]:
    """log P(all C), log P(all R) for m units sharing one shock."""
    s, q_own = shock_split(q, rho)
    log_c = log_or_ninf(1.0 - s) + n_log1m(m, q_own) if s < 1 else -math.inf
    log_r = log_add_exp(log_or_ninf(s), (log_or_ninf(1.0 - s) + n_log(m, q_own)) if s < 1 else -math.inf)
    return log_c, log_r


def closed_form(n: int, spec: FailureSpec) -> LatticeProbabilities:
    """Exact P(all C), P(all R), P(atomic), P(mixed) and P(any A), computed in log space."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    q = spec.q
    if spec.effectively_independent or q == 0.0 or q == 1.0:
        log_c = n_log1m(n, q)
        log_r = n_log(n, spec.p_r)
    elif spec.model == "beta-binomial":
        if spec.rho >= 1.0:  # all units share one coin
            log_c, log_r = log_or_ninf(1.0 - q), log_or_ninf(q)
        else:
            s = 1.0 / spec.rho - 1.0
            a, b = q * s, (1.0 - q) * s  # failure ~ Bernoulli(pi), pi ~ Beta(a, b)
            log_c = log_beta(a, b + n) - log_beta(a, b)
            log_r = log_beta(a + n, b) - log_beta(a, b)
    elif spec.model == "common-shock":
        log_c, log_r = _shock_logs(n, q, spec.rho)
    elif spec.model == "contention":
        pool, bad = contention_pool(n, q, spec.rho)
        log_c = log_falling_ratio(pool - bad, pool, n)
        log_r = log_falling_ratio(bad, pool, n)
    else:  # blocks: independent blocks, each with its own shock
        k, rest = divmod(n, spec.block_size)
        bc, br = _shock_logs(spec.block_size, q, spec.rho)
        log_c, log_r = k * bc, k * br
        if rest:
            rc, rr = _shock_logs(rest, q, spec.rho)
            log_c, log_r = log_c + rc, log_r + rr
    log_atomic = log_add_exp(log_c, log_r)
    any_amb = -math.expm1(n_log1m(n, spec.p_a)) if spec.p_a > 0 else 0.0
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
