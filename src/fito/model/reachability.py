"""Correction 11 (docs/corrections.md): Theorem 6.4 is false at the value level.

The mixed tuple (theta_t, m_{t-1}, v_t, step t) of a real AdamW run is reached EXACTLY (to rounding) by
another real `torch.optim.AdamW` run from an epoch-consistent start: zero gradients first (m = v = 0,
the weights only decay), then one gradient x repeated for the j steps before step t and a gradient y at
step t, per coordinate, solving
    m = (1-b1)(B1 x + y),   v = (1-b2)(B2 x^2 + y^2),   B1 = sum_{i=1..j} b1^i,  B2 = sum_{i=1..j} b2^i
for the stale m and the current v (j = 1 is the two-gradient case; larger j reaches larger m^2/v), and
theta_0 solved backwards (AdamW's update does not depend on the weights except through the decay). What the theorem can only mean is provenance: the tuple is not
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
    a, c = m / (1 - b1), v / (1 - b2)               # a = B1 x + y,  c = B2 x^2 + y^2
    # the run of j equal gradients that reaches the largest m^2/v (about 45 for AdamW's betas)
    j = max(range(1, min(t - 1, 40) + 1),
            key=lambda k: sum(b1 ** i for i in range(1, k + 1)) ** 2 / sum(b2 ** i for i in range(1, k + 1)))
    B1, B2 = sum(b1 ** i for i in range(1, j + 1)), sum(b2 ** i for i in range(1, j + 1))
    disc = (B2 + B1 ** 2) * c - B2 * a ** 2         # x real iff disc >= 0
    if bool((disc < 0).any()):
        raise ValueError("m^2/v beyond what AdamW reaches from zero moments: not a state AdamW produced")
    x = (a * B1 + torch.sqrt(disc)) / (B2 + B1 ** 2)
    y = a - B1 * x
    grads = [torch.zeros_like(m)] * (t - 1 - j) + [x] * j + [y]
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
