"""Correction 11: Theorem 6.4 is false at the value level. The mixed tuple (theta_t, m_{t-1}, v_t, step t)
of a real AdamW run is where another real AdamW run, from an epoch-consistent start, lands exactly."""
from __future__ import annotations

import pytest
import torch

from fito.model.reachability import mixed_tuple, reach


@pytest.mark.parametrize("t", [2, 20, 500])
@pytest.mark.parametrize("seed", [0, 1])
def test_mixed_tuple_is_reached_exactly_by_a_consistent_run(t: int, seed: int) -> None:
    theta, m_prev, v = mixed_tuple(t, seed)
    r = reach(theta, m_prev, v, t)
    assert r.step == t and r.coordinates == theta.numel()
    # float64 rounding only: a few units in the last place of the values' own scale
    assert r.max_err_theta <= 1e-13 * float(theta.abs().max())
    assert r.max_err_m <= 1e-13 * float(m_prev.abs().max())
    assert r.max_err_v <= 1e-13 * float(v.abs().max())


def test_the_tuple_is_really_mixed() -> None:
    """The stale m differs from the run's own m_t by far more than the reconstruction error: the exact
    landing is not the trivial case of a consistent tuple."""
    t = 20
    theta, m_prev, v = mixed_tuple(t)
    _, m_next, _ = mixed_tuple(t + 1)  # m_prev of step t+1 is this run's own m_t
    assert float((m_next - m_prev).abs().max()) > 1e6 * reach(theta, m_prev, v, t).max_err_m


def test_rejects_what_adamw_cannot_produce() -> None:
    """v far too small for m (m^2/v above what any zero-initialised AdamW reaches) has no such run."""
    m = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError):
        reach(torch.zeros(3, dtype=torch.float64), m, 1e-6 * m, 20)
