"""Monte Carlo on the epoch lattice (§5): whole state vectors drawn unit by unit under any dependence
model of `FailureSpec`, classified, and counted with binomial standard errors; the check beside the
closed forms of fito.model.lattice_closed_form."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from fito.model.failure_spec import FailureSpec, contention_pool, shock_split
from fito.model.lattice import EpochState


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
    s_shock, q_own = shock_split(q, spec.rho)
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
