"""Log-space arithmetic for the lattice closed forms: logs that take 0 to -inf, n * log(x) with
0 * log(0) = 0, log(1 - q) exact for tiny q, and a log-sum that keeps every digit where p**n and
1 - p**n - ... would lose them in naive floating point."""
from __future__ import annotations

import math


def log_or_ninf(x: float) -> float:
    """log(x), with log(0) = -inf."""
    return math.log(x) if x > 0 else -math.inf


def n_log(n: int, x: float) -> float:
    """n * log(x) with 0 * log(0) = 0 and log(0) = -inf."""
    if n == 0:
        return 0.0
    return n * math.log(x) if x > 0 else -math.inf


def n_log1m(n: int, q: float) -> float:
    """n * log(1 - q), exact for tiny q (log1p)."""
    if n == 0:
        return 0.0
    return n * math.log1p(-q) if q < 1 else -math.inf


def log_add_exp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without leaving log space."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def log_falling_ratio(a: int, b: int, n: int) -> float:
    """log of a(a-1)...(a-n+1) / b(b-1)...(b-n+1); -inf when a < n."""
    if a < n:
        return -math.inf
    return (math.lgamma(a + 1) - math.lgamma(a - n + 1)) - (math.lgamma(b + 1) - math.lgamma(b - n + 1))


def log_beta(a: float, b: float) -> float:
    """log B(a, b), the Beta function."""
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
