"""Correction 11 (docs/corrections.md): Theorem 6.4 is false at the value level.

The mixed tuple (theta_t, m_{t-1}, v_t, step t) of a real AdamW run is reached EXACTLY (to rounding) by
another real `torch.optim.AdamW` run from an epoch-consistent start. Per coordinate, the run gets the
gradient x r^k at k = t-1 .. 1 steps before the last step and y at step t, with r = b1/b2 (the weighting
that maximises m^2/v, by Cauchy-Schwarz), so
    m = (1-b1)(S x + y),   v = (1-b2)(S x^2 + y^2),   S = sum_{k=1..t-1} (b1^2/b2)^k,
two equations for x and y, solvable whenever m^2/v is within the bound that ANY t steps of AdamW from zero
moments obey; and theta_0 is solved backwards (AdamW's update does not depend on the weights except
through the decay). What the theorem can only mean is provenance: the tuple is not
the state of the run that was checkpointed, which epoch tags check and no value test can."""
from __future__ import annotations

from dataclasses import dataclass

import torch

LR, BETAS, EPS, WD = 1e-2, (0.9, 0.999), 1e-8, 1e-2


@dataclass(frozen=True)
class Reachability:
    t: int
    coordinates: int
    max_err_theta: float   # |theta reached - theta_t|, max over coordinates
    max_err_m: float       # |m reached - m_{t-1}|
    max_err_v: float       # |v reached - v_t|
    step: int              # AdamW's step counter at the end: t

    @property
    def max_err(self) -> float:
        return max(self.max_err_theta, self.max_err_m, self.max_err_v)


def _adamw(param: torch.Tensor) -> torch.optim.AdamW:
    return torch.optim.AdamW([param], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)


def _run(theta0: torch.Tensor, grads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.optim.AdamW]:
    p = torch.nn.Parameter(theta0.clone())
    opt = _adamw(p)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach(), opt


def mixed_tuple(t: int, seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(theta_t, m_{t-1}, v_t) of a real AdamW run on a small least-squares problem (float64)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, size, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(size, generator=gen, dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros(size, dtype=torch.float64))
    opt = _adamw(p)
    m_prev = torch.zeros(size, dtype=torch.float64)
    for _ in range(t):
        m_prev = opt.state[p]["exp_avg"].clone() if opt.state else m_prev
        opt.zero_grad()
        ((x @ p - y) ** 2).mean().backward()
        opt.step()
    return p.detach().clone(), m_prev, opt.state[p]["exp_avg_sq"].clone()


def reach(theta_t: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int) -> Reachability:
    """Build the consistent run that ends on (theta_t, m, v, step t) and measure how exactly it does."""
    if t < 2:
        raise ValueError("t must be >= 2: two gradient steps carry the moments")
    b1, b2 = BETAS
    a, c = m / (1 - b1), v / (1 - b2)               # a = S x + y,  c = S x^2 + y^2
    r = b1 / b2
    S = sum((b1 * r) ** k for k in range(1, t))
    disc = (S + S ** 2) * c - S * a ** 2            # x real iff disc >= 0 (m^2/v within the t-step bound)
    if bool((disc < 0).any()):
        raise ValueError("m^2/v beyond what t AdamW steps from zero moments can produce: no such run")
    x = (a * S + torch.sqrt(disc)) / (S + S ** 2)
    y = a - S * x
    grads = [x * r ** k for k in range(t - 1, 0, -1)] + [y]
    drift, _ = _run(torch.zeros_like(theta_t), grads)   # where the updates alone take theta_0 = 0
    theta0 = (theta_t - drift) / (1 - LR * WD) ** t     # decay is the only theta-dependent part
    theta, opt = _run(theta0, grads)
    state = next(iter(opt.state.values()))
    return Reachability(
        t=t, coordinates=m.numel(),
        max_err_theta=float((theta - theta_t).abs().max()),
        max_err_m=float((state["exp_avg"] - m).abs().max()),
        max_err_v=float((state["exp_avg_sq"] - v).abs().max()),
        step=int(state["step"]))
