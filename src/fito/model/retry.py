"""Retry amplification (paper §8): checkpoint failure -> retry -> extra load -> more failures.

A fleet of `jobs` training jobs shares a storage system of `capacity` load units per step. Every step each
job writes one checkpoint (1 unit). A failed operation, under the naive policy, is retried at the next step
as a restart from the previous checkpoint: re-read it and write again (`retry_cost` units). Operations fail
with probability  f(u) = p0 + (1 - p0) * max(0, 1 - 1/u),  u = load / capacity: the base rate plus the
share of the load that does not fit (timeouts of an overloaded store).

With headroom, a small p0 is absorbed. But the loop has a second, runaway equilibrium: once the retry
backlog is large enough, retries alone overload the store, so most operations fail and each failure adds a
retry. A short capacity dip (a storage hiccup) can push the naive system across, and it stays there after
the capacity comes back (a metastable failure). Policies that bound the retry load do not:

- backoff: exponential backoff with full jitter (delay uniform in [1, base * 2^attempt], capped).
- budget: at most `budget` * jobs retries per step; a failure beyond the budget or past `max_attempts`
  falls back one epoch: the job keeps its last committed checkpoint and carries on, its next scheduled
  checkpoint replaces the failed one (presumed abort makes this safe: the failed attempt never existed).
- fito: backoff with jitter + budget + fall back one epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POLICIES = ("naive", "backoff", "budget", "fito")


@dataclass(frozen=True)
class RetryParams:
    jobs: int = 100
    capacity: float = 130.0
    retry_cost: float = 2.0
    p0: float = 0.01
    steps: int = 300
    dip: float = 0.5  # capacity multiplier during the dip (1.0: no dip)
    dip_start: int = 50
    dip_steps: int = 5
    budget: float = 0.1  # retries per step, as a fraction of jobs (budget, fito)
    max_attempts: int = 3  # then fall back one epoch (budget, fito)
    backoff_base: int = 1
    backoff_cap: int = 32

    def __post_init__(self) -> None:
        checks = [(self.jobs >= 1, "jobs must be >= 1"), (self.capacity > 0, "capacity must be > 0"),
                  (self.retry_cost >= 0, "retry_cost must be >= 0"), (0 <= self.p0 < 1, "p0 must be in [0, 1)"),
                  (self.steps >= 1, "steps must be >= 1"), (self.dip > 0, "dip must be > 0"),
                  (self.dip_start >= 0 and self.dip_steps >= 0, "dip_start and dip_steps must be >= 0"),
                  (self.budget >= 0, "budget must be >= 0"), (self.max_attempts >= 1, "max_attempts must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class RetryTrace:
    policy: str
    params: RetryParams
    load: np.ndarray  # per step, storage load units
    capacity: np.ndarray
    ops: np.ndarray  # operations attempted (checkpoints + retries)
    failures: np.ndarray
    retries: np.ndarray  # retries attempted
    fallbacks: np.ndarray  # failures given up (job kept its previous committed epoch)
    backlog: np.ndarray  # retries waiting (scheduled for later steps)

    @property
    def fail_fraction(self) -> np.ndarray:
        return self.failures / np.maximum(self.ops, 1)

    def tail_fail_fraction(self, window: int = 50) -> float:
        return float(self.fail_fraction[-window:].mean())

    @property
    def runaway(self) -> bool:
        """Still failing most operations long after the trigger ended (well past any recovery)."""
        return self.tail_fail_fraction() > 0.5

    def recovery_steps(self, threshold: float | None = None) -> int | None:
        """Steps after the dip ended until the failure fraction stays below `threshold` for 10 steps."""
        p = self.params
        thr = threshold if threshold is not None else max(3 * p.p0, 0.05)
        end = p.dip_start + p.dip_steps
        ff = self.fail_fraction
        for t in range(end, len(ff) - 10):
            if (ff[t:t + 10] < thr).all():
                return t - end
        return None

    def summary(self) -> dict[str, object]:
        return {
            "policy": self.policy, "runaway": self.runaway, "tail_fail_fraction": self.tail_fail_fraction(),
            "recovery_steps": self.recovery_steps(), "peak_load_over_capacity": float((self.load / self.capacity).max()),
            "final_backlog": int(self.backlog[-1]), "total_retries": int(self.retries.sum()),
            "total_fallbacks": int(self.fallbacks.sum()),
        }


def fail_probability(load: float, capacity: float, p0: float) -> float:
    u = load / capacity
    return p0 + (1.0 - p0) * max(0.0, 1.0 - 1.0 / u) if u > 0 else p0


def simulate(policy: str, params: RetryParams = RetryParams(), *, seed: int = 0) -> RetryTrace:
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r}: choose one of {', '.join(POLICIES)}")
    p = params
    rng = np.random.default_rng(seed)
    backoff = policy in ("backoff", "fito")
    bounded = policy in ("budget", "fito")
    max_att = p.max_attempts if bounded else 10**9
    horizon = p.steps + p.backoff_cap * 2 + 2
    # queue[t, a]: retries due at step t that will be attempt number a (1-based); attempts beyond the
    # array are folded into the last column (only the naive/backoff policies get there)
    A = (p.max_attempts + 1) if bounded else 64
    queue = np.zeros((horizon, A + 1), dtype=np.int64)
    out = {k: np.zeros(p.steps) for k in ("load", "capacity", "ops", "failures", "retries", "fallbacks", "backlog")}

    for t in range(p.steps):
        cap = p.capacity * (p.dip if p.dip_start <= t < p.dip_start + p.dip_steps else 1.0)
        due = queue[t].copy()
        fallbacks = 0
        if bounded:  # the retry budget: oldest attempts first is as good as any; drop the excess
            allowed = int(p.budget * p.jobs)
            kept = np.zeros_like(due)
            for a in range(A + 1):
                take = min(int(due[a]), allowed)
                kept[a], allowed = take, allowed - take
            fallbacks += int((due - kept).sum())
            due = kept
        n_retry = int(due.sum())
        ops = p.jobs + n_retry
        load = p.jobs * 1.0 + n_retry * p.retry_cost
        f = fail_probability(load, cap, p.p0)
        # failures among fresh checkpoints (attempt 0) and among retries (by attempt number)
        fresh_fail = int(rng.binomial(p.jobs, f))
        retry_fail = rng.binomial(due, f) if n_retry else np.zeros_like(due)
        failed_by_attempt = retry_fail.copy()
        failed_by_attempt[0] += fresh_fail  # column 0: failures of first tries
        for a in range(A + 1):
            n = int(failed_by_attempt[a])
            if n == 0:
                continue
            nxt = a + 1  # the attempt number of the retry
            if nxt > max_att:
                fallbacks += n
                continue
            col = min(nxt, A)
            if backoff:
                span = min(p.backoff_cap, p.backoff_base * 2 ** (nxt - 1))
                delays = rng.integers(1, span + 1, size=n)
                np.add.at(queue[:, col], t + delays, 1)
            else:
                queue[t + 1, col] += n
        out["load"][t], out["capacity"][t], out["ops"][t] = load, cap, ops
        out["failures"][t] = fresh_fail + int(retry_fail.sum())
        out["retries"][t], out["fallbacks"][t] = n_retry, fallbacks
        out["backlog"][t] = int(queue[t + 1:].sum())
    return RetryTrace(policy=policy, params=p, **out)


def runaway_threshold(
    policy: str, params: RetryParams = RetryParams(), *, dips: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3),
    seed: int = 0,
) -> float | None:
    """The mildest capacity dip (largest multiplier) after which `policy` runs away; None if none does."""
    from dataclasses import replace

    for d in dips:
        if simulate(policy, replace(params, dip=d), seed=seed).runaway:
            return d
    return None


def phase_map(
    policy: str, params: RetryParams = RetryParams(), *, headrooms: tuple[float, ...] = (1.1, 1.3, 1.5, 2.0),
    dips: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4), seed: int = 0,
) -> list[tuple[float, float, bool]]:
    """(capacity/jobs, dip multiplier, runaway?) over a grid: where the loop runs away."""
    from dataclasses import replace

    return [(h, d, simulate(policy, replace(params, capacity=h * params.jobs, dip=d), seed=seed).runaway)
            for h in headrooms for d in dips]


def critical_backlog(params: RetryParams = RetryParams(), *, limit: float | None = None) -> float | None:
    """Mean-field tipping point of the naive loop at full capacity: failures F feed F retries next step,
    F' = f((jobs + retry_cost*F)/capacity) * (jobs + F). Below the first unstable fixed point F* the
    backlog drains; above it, it grows every step. None if the map never tips (enough headroom)."""
    p = params
    hi = limit if limit is not None else 50.0 * p.jobs

    def excess(f: float) -> float:
        return fail_probability(p.jobs + p.retry_cost * f, p.capacity, p.p0) * (p.jobs + f) - f

    steps = 20000
    prev = excess(0.0)
    for i in range(1, steps + 1):
        f = hi * i / steps
        cur = excess(f)
        if prev < 0 <= cur:  # the map crosses upward: growth from here on
            lo_f, hi_f = hi * (i - 1) / steps, f
            for _ in range(60):
                mid = (lo_f + hi_f) / 2
                lo_f, hi_f = (mid, hi_f) if excess(mid) < 0 else (lo_f, mid)
            return (lo_f + hi_f) / 2
        prev = cur
    return None
