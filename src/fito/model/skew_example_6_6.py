"""Example 6.6 of §6, exactly, on real AdamW tensors: restoring m from step t-1 perturbs the next m by
b1 (1 - b1) (m_{t-1} - g_t) = 0.09 (m_{t-1} - g_t), not "9% of the previous gradient", and under identical
gradients the perturbation decays as b1^k: it does not compound (correction 8 in docs/corrections.md)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fito.model.epoch_typed import EpochTypedState, Tagged
from fito.model.skew_problem import Problem, Run, SkewConfig, train_to_restore


@dataclass(frozen=True)
class Example66:
    """m'_{t+1} - m_{t+1} against b1 (m_{t-1} - m_t) and b1 (1 - b1) (m_{t-1} - g_t)."""

    t: int
    beta1: float
    fitted_factor: float          # least-squares c in  diff = c (m_{t-1} - g_t)
    max_err_identity: float       # max |diff - b1 (m_{t-1} - m_t)|
    max_err_factor: float         # max |diff - b1 (1-b1) (m_{t-1} - g_t)|
    scale: float                  # max |m_{t-1} - g_t|, for relative errors
    fitted_vs_previous_gradient: float   # least-squares c in diff = c g_t: NOT 0.09


def example_6_6(t: int = 20, seed: int = 0, dtype: torch.dtype = torch.float64) -> Example66:
    """Run real AdamW to step t, capture m_{t-1}, m_t and g_t, then take step t+1 twice:
    with the correct m_t and with m_{t-1} in its place (everything else identical)."""
    torch.set_num_threads(1)
    cfg = SkewConfig(restore_step=t, v_lag=1, data_lag=1, horizon=1)
    problem = Problem(cfg, seed, dtype=dtype)
    run = Run(problem)
    run.keep_grads = True
    m_prev: list[torch.Tensor] = []
    while run.epoch < t:
        if run.epoch == t - 1:
            m_prev = [run.opt.state[p]["exp_avg"].clone() for p in run.model.parameters()]
        run.step()
    g_t = torch.cat([g.reshape(-1) for g in run.last_grads])
    m_t = run.flat_m()
    mp = torch.cat([m.reshape(-1) for m in m_prev])
    good = run.capture()
    bad = EpochTypedState(dict(good.components))
    bad.components["m"] = Tagged(m_prev, t - 1)
    outs = []
    for state in (good, bad):
        r = Run(problem)
        r.restore(state, strict=False)
        r.step()
        outs.append(r.flat_m())
    diff = outs[1] - outs[0]
    b1 = cfg.betas[0]
    d = mp - g_t
    return Example66(
        t=t, beta1=b1,
        fitted_factor=float(diff @ d / (d @ d)),
        max_err_identity=float((diff - b1 * (mp - m_t)).abs().max()),
        max_err_factor=float((diff - b1 * (1 - b1) * d).abs().max()),
        scale=float(d.abs().max()),
        fitted_vs_previous_gradient=float(diff @ g_t / (g_t @ g_t)),
    )


@dataclass(frozen=True)
class SkewDecay:
    """Example 6.6's perturbation followed under identical gradients (the optimizer recursion alone)."""

    beta1: float
    m_ratio: list[float]          # ||m' - m|| / ||m_{t-1} - m_t|| after k = 1.. steps; equals b1^k
    theta_offset: list[float]     # ||theta' - theta||: converges to a bounded offset, does not grow


def m_skew_decay(seed: int = 0, t: int = 100, steps: int = 60) -> SkewDecay:
    """Two real AdamW optimizers, one restored with m from t-1, both fed the reference run's gradients.

    Isolates what the moment recursion does with the skew: it forgets it at rate b1 per step.
    (In a real continuation the gradients also differ once the weights differ; the experiment
    measures that separately.)"""
    torch.set_num_threads(1)
    cfg = SkewConfig(restore_step=t, v_lag=1, data_lag=1, horizon=steps)
    problem = Problem(cfg, seed, dtype=torch.float64)
    ref, history = train_to_restore(problem)
    ref.keep_grads = True
    bad = Run(problem)
    bad.restore(history[t].mixed_with(history, {"m": t - 1}), strict=False)
    m0 = float(torch.linalg.vector_norm(bad.flat_m() - ref.flat_m()))
    ratios, offsets = [], []
    for _ in range(steps):
        ref.step()
        for p, g in zip(bad.model.parameters(), ref.last_grads):
            p.grad = g.clone()
        bad.opt.step()
        ratios.append(float(torch.linalg.vector_norm(bad.flat_m() - ref.flat_m())) / m0)
        offsets.append(float(torch.linalg.vector_norm(bad.flat_params() - ref.flat_params())))
    return SkewDecay(beta1=cfg.betas[0], m_ratio=ratios, theta_offset=offsets)
