"""§6: mixed-epoch optimizer state as a type violation, measured with real `torch.optim.AdamW`.

A training state (theta, m, v, step, data position, RNG) is epoch-typed when every component carries
the epoch it reflects; `check_epoch_consistent` rejects any tuple whose tags differ. The experiment
then restores deliberately mixed tuples anyway, and measures what they do to a small real problem
(an MLP regression on generated data, CPU) against a correct resume and against two harmless-noise
baselines (a 1-ulp nudge of the weights, a reshuffled data order).

What the measurements show (corrections 8 and 9 in docs/corrections.md): Example 6.6's skew of m by one step is a
perturbation of b1 (1 - b1) (m_{t-1} - g_t) = 0.09 (m_{t-1} - g_t) that DECAYS (Adam forgets it at
rate b1 per step); it does not compound in the loss. The dangerous mixes break the m/v scale relation
(v from far earlier, or m = v = 0 with the step counter kept): they spike the loss. A validation
forward pass at restore time cannot see any mix that leaves the weights alone.

This module runs the experiment and summarises it; its parts live beside it: fito.model.epoch_typed (the
tags and the check), fito.model.skew_problem (data, model, AdamW run), fito.model.skew_variants (the
restored tuples) and fito.model.skew_example_6_6 (Example 6.6's factor and its decay, exactly).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from fito.model.epoch_typed import MixedEpochError, check_epoch_consistent
from fito.model.skew_problem import Problem, Run, SkewConfig, train_to_restore
from fito.model.skew_variants import build_variant, variants


@dataclass
class Trajectory:
    """Eval loss and distance to the correct run at the eval points, for one variant and seed."""

    variant: str
    seed: int
    restore_loss: float                     # forward pass on held-out data right after the restore
    rejected: bool = False                  # did check_epoch_consistent refuse the restored tuple?
    eval_loss: dict[int, float] = field(default_factory=dict)
    param_distance: dict[int, float] = field(default_factory=dict)
    m_distance: dict[int, float] = field(default_factory=dict)


def _continue(run: Run, cfg: SkewConfig) -> tuple[dict[int, float], dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    points = set(cfg.eval_points())
    losses, params, moms = {}, {}, {}
    for k in range(1, cfg.horizon + 1):
        run.step()
        if k in points:
            losses[k] = run.problem.eval_loss(run.model)
            params[k] = run.flat_params()
            moms[k] = run.flat_m()
    return losses, params, moms


def run_seed(seed: int, cfg: SkewConfig, names: Sequence[str] | None = None) -> list[Trajectory]:
    """Reference = the uninterrupted run; every variant is a fresh Run restored from history."""
    torch.set_num_threads(1)
    problem = Problem(cfg, seed)
    ref_run, history = train_to_restore(problem)
    ref_restore_loss = problem.eval_loss(ref_run.model)
    ref_loss, ref_params, ref_m = _continue(ref_run, cfg)
    out = [Trajectory("uninterrupted", seed, ref_restore_loss, False, ref_loss,
                      {k: 0.0 for k in ref_loss}, {k: 0.0 for k in ref_loss})]
    for v in variants(cfg):
        if names is not None and v.name not in names:
            continue
        state, shuffle = build_variant(v.name, cfg, history)
        try:
            check_epoch_consistent(state)
            rejected = False
        except MixedEpochError:
            rejected = True
        run = Run(problem, shuffle_seed=shuffle)
        run.restore(state, strict=False)
        restore_loss = problem.eval_loss(run.model)
        loss, params, moms = _continue(run, cfg)
        out.append(Trajectory(
            v.name, seed, restore_loss, rejected, loss,
            {k: float(torch.linalg.vector_norm(params[k] - ref_params[k])) for k in params},
            {k: float(torch.linalg.vector_norm(moms[k] - ref_m[k])) for k in moms}))
    return out


@dataclass
class VariantSummary:
    variant: str
    kind: str
    description: str
    rejected_by_checker: bool
    restore_loss_equal: bool                 # the §9.3 forward-pass check sees nothing
    param_distance: dict[int, float]         # median over seeds
    loss_delta: dict[int, float]             # median over seeds of eval loss - correct run's
    max_loss_ratio: float                    # median over seeds of max eval-loss ratio in the window
    spike_seeds: int                         # seeds whose eval loss went above spike_ratio x correct
    seeds: int


@dataclass
class SkewReport:
    config: SkewConfig
    seeds: list[int]
    summaries: list[VariantSummary]
    trajectories: list[Trajectory]

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "seeds": self.seeds,
                "summaries": [asdict(s) for s in self.summaries]}


def run_experiment(seeds: Iterable[int], cfg: SkewConfig = SkewConfig(),
                   names: Sequence[str] | None = None,
                   progress: Callable[[int], None] | None = None) -> SkewReport:
    seeds = list(seeds)
    trajs: list[Trajectory] = []
    for s in seeds:
        trajs.extend(run_seed(s, cfg, names))
        if progress:
            progress(s)
    ref = {t.seed: t for t in trajs if t.variant == "uninterrupted"}
    correct = {t.seed: t for t in trajs if t.variant == "correct"}
    summaries = []
    for v in variants(cfg):
        rows = [t for t in trajs if t.variant == v.name]
        if not rows:
            continue
        rejected = all(t.rejected for t in rows)
        base = {s: (correct.get(s) or ref[s]) for s in seeds}
        ratios = [max(t.eval_loss[k] / base[t.seed].eval_loss[k] for k in t.eval_loss) for t in rows]
        summaries.append(VariantSummary(
            variant=v.name, kind=v.kind, description=v.description, rejected_by_checker=rejected,
            restore_loss_equal=all(t.restore_loss == ref[t.seed].restore_loss for t in rows),
            param_distance={k: float(np.median([t.param_distance[k] for t in rows])) for k in cfg.report_at
                            if k in rows[0].param_distance},
            loss_delta={k: float(np.median([t.eval_loss[k] - base[t.seed].eval_loss[k] for t in rows]))
                        for k in cfg.report_at if k in rows[0].eval_loss},
            max_loss_ratio=float(np.median(ratios)),
            spike_seeds=sum(r > cfg.spike_ratio for r in ratios),
            seeds=len(rows)))
    return SkewReport(cfg, seeds, summaries, trajs)
