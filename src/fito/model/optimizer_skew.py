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
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fito.errors import FitoError

COMPONENTS: tuple[str, ...] = ("theta", "m", "v", "step", "data_position", "rng")


class MixedEpochError(FitoError):
    """An optimizer step was asked to run on a tuple whose components reflect different epochs."""

    def __init__(self, tags: Mapping[str, int]) -> None:
        self.tags = dict(tags)
        groups: dict[int, list[str]] = {}
        for name, epoch in self.tags.items():
            groups.setdefault(epoch, []).append(name)
        majority = max(groups, key=lambda e: (len(groups[e]), e))
        odd = ", ".join(f"{n} from epoch {e}" for n, e in self.tags.items() if e != majority)
        super().__init__(f"mixed-epoch state: expected every component at epoch {majority}, found {odd}; "
                         "restore a whole committed epoch instead")


@dataclass(frozen=True)
class Tagged:
    """A component value with the epoch it reflects."""

    value: Any
    epoch: int


@dataclass
class EpochTypedState:
    """The §3.1 tuple S = (theta, m, v, step, d, xi) with an epoch tag on every component."""

    components: dict[str, Tagged]

    def tags(self) -> dict[str, int]:
        return {name: t.epoch for name, t in self.components.items()}

    def mixed_with(self, others: Mapping[int, EpochTypedState], assignment: Mapping[str, int]) -> EpochTypedState:
        """Take each component named in `assignment` from the state of that epoch (a mixed tuple)."""
        comps = dict(self.components)
        for name, epoch in assignment.items():
            comps[name] = others[epoch].components[name]
        return EpochTypedState(comps)


def check_epoch_consistent(state: EpochTypedState) -> int:
    """Return the common epoch, or raise MixedEpochError: AdamW is only defined on Epoch_t tuples."""
    missing = [c for c in COMPONENTS if c not in state.components]
    if missing:
        raise FitoError(f"epoch-typed state lacks components {missing}; a silent default is a type violation")
    tags = state.tags()
    if len(set(tags.values())) != 1:
        raise MixedEpochError(tags)
    return next(iter(tags.values()))


# ----------------------------------------------------------------------------------------------
# A small real problem
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkewConfig:
    """Sizes of the experiment; the defaults finish in well under two minutes on 2 CPU cores."""

    restore_step: int = 500       # t: the epoch being restored
    v_lag: int = 490              # v taken from t - v_lag ("far earlier": step 10)
    data_lag: int = 50            # data position taken from t - data_lag
    horizon: int = 1000           # steps run after the restore
    report_at: tuple[int, ...] = (10, 100, 1000)
    lr: float = 1e-2
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch: int = 64
    train_size: int = 4096
    eval_size: int = 1024
    in_dim: int = 16
    hidden: int = 64
    spike_ratio: float = 2.0      # eval loss above spike_ratio x the correct run's counts as a spike

    def eval_points(self) -> list[int]:
        pts = set(range(1, min(self.horizon, 20) + 1)) | set(self.report_at)
        pts |= {k for k in (30, 50, 75, 100, 150, 200, 300, 500, 700, 1000, 1500, 2000) if k <= self.horizon}
        return sorted(k for k in pts if k <= self.horizon)


class Problem:
    """Generated regression data (a random teacher MLP plus noise) and a deterministic data stream:
    the batch at stream position k depends only on (seed, k), so a data position is a single int."""

    def __init__(self, cfg: SkewConfig, seed: int, dtype: torch.dtype = torch.float32) -> None:
        self.cfg, self.seed, self.dtype = cfg, seed, dtype
        g = torch.Generator().manual_seed(10_000 + seed)
        teacher = nn.Sequential(nn.Linear(cfg.in_dim, 32), nn.Tanh(), nn.Linear(32, 1))
        with torch.no_grad():
            for p in teacher.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.8)
            x = torch.randn(cfg.train_size + cfg.eval_size, cfg.in_dim, generator=g)
            y = teacher(x) + 0.1 * torch.randn(x.shape[0], 1, generator=g)
        self.x_train, self.y_train = x[: cfg.train_size].to(dtype), y[: cfg.train_size].to(dtype)
        self.x_eval, self.y_eval = x[cfg.train_size:].to(dtype), y[cfg.train_size:].to(dtype)
        self.batches_per_pass = cfg.train_size // cfg.batch
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def batch(self, position: int, shuffle_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        data_pass, k = divmod(position, self.batches_per_pass)
        key = (shuffle_seed, data_pass)
        if key not in self._perms:
            self._perms[key] = np.random.default_rng([self.seed, shuffle_seed, data_pass]).permutation(
                self.cfg.train_size)
        idx = torch.from_numpy(self._perms[key][k * self.cfg.batch:(k + 1) * self.cfg.batch])
        return self.x_train[idx], self.y_train[idx]

    def new_model(self) -> nn.Module:
        torch.manual_seed(self.seed)
        model = nn.Sequential(nn.Linear(self.cfg.in_dim, self.cfg.hidden), nn.Tanh(),
                              nn.Linear(self.cfg.hidden, self.cfg.hidden), nn.Tanh(),
                              nn.Linear(self.cfg.hidden, 1))
        return model.to(self.dtype)

    def new_optimizer(self, model: nn.Module) -> torch.optim.AdamW:
        c = self.cfg
        return torch.optim.AdamW(model.parameters(), lr=c.lr, betas=c.betas, eps=c.eps,
                                 weight_decay=c.weight_decay, foreach=True)

    @torch.no_grad()
    def eval_loss(self, model: nn.Module) -> float:
        return float(nn.functional.mse_loss(model(self.x_eval), self.y_eval))


class Run:
    """Model + AdamW + data position: the mutable training state of one trajectory."""

    def __init__(self, problem: Problem, shuffle_seed: int = 0) -> None:
        self.problem = problem
        self.model = problem.new_model()
        self.opt = problem.new_optimizer(self.model)
        self.position = 0
        self.shuffle_seed = shuffle_seed
        self.keep_grads = False  # Example 6.6 needs g_t; the experiment does not
        self.last_grads: list[torch.Tensor] = []

    def step(self) -> torch.Tensor:
        x, y = self.problem.batch(self.position, self.shuffle_seed)
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(self.model(x), y)
        loss.backward()
        if self.keep_grads:
            self.last_grads = [p.grad.detach().clone() for p in self.model.parameters()]  # type: ignore[union-attr]
        self.opt.step()
        self.position += 1
        return loss.detach()

    @property
    def epoch(self) -> int:
        """Optimizer steps taken so far; the epoch the state reflects."""
        return self.position

    def capture(self) -> EpochTypedState:
        """Deep copy of the state, each component tagged with the current epoch."""
        e = self.epoch
        params = list(self.model.parameters())
        st = [self.opt.state[p] for p in params]
        return EpochTypedState({
            "theta": Tagged([p.detach().clone() for p in params], e),
            "m": Tagged([s["exp_avg"].clone() for s in st], e),
            "v": Tagged([s["exp_avg_sq"].clone() for s in st], e),
            "step": Tagged(float(st[0]["step"]), e),
            "data_position": Tagged(self.position, e),
            "rng": Tagged(torch.get_rng_state().clone(), e),
        })

    def restore(self, state: EpochTypedState, *, strict: bool = True) -> None:
        """Copy a state in. strict=True refuses mixed tuples; the experiment uses strict=False
        precisely to observe what an unchecked loader would do."""
        if strict:
            check_epoch_consistent(state)
        c = state.components
        params = list(self.model.parameters())
        with torch.no_grad():
            for p, w in zip(params, c["theta"].value):
                p.copy_(w)
        for p, m, v in zip(params, c["m"].value, c["v"].value):
            self.opt.state[p] = {"step": torch.tensor(float(c["step"].value), dtype=torch.float32),
                                 "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
        self.position = int(c["data_position"].value)
        torch.set_rng_state(c["rng"].value)

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    def flat_m(self) -> torch.Tensor:
        return torch.cat([self.opt.state[p]["exp_avg"].reshape(-1) for p in self.model.parameters()])


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------


def _ulp_nudge(state: EpochTypedState) -> EpochTypedState:
    comps = dict(state.components)
    w = state.components["theta"]
    comps["theta"] = Tagged([torch.nextafter(t, torch.full_like(t, math.inf)) for t in w.value], w.epoch)
    return EpochTypedState(comps)


def _zero_moments(state: EpochTypedState, *, keep_step: bool) -> EpochTypedState:
    """m = v = 0. With the step counter kept this is the silent re-init of a loader that dropped the
    moments: zeros reflect epoch 0 while the step says t, a mixed tuple. With the step reset as well it
    is AdamW's own valid starting state at the current weights (bias correction restarts too)."""
    comps = dict(state.components)
    e = state.components["step"].epoch
    tag = 0 if keep_step else e
    comps["m"] = Tagged([torch.zeros_like(t) for t in state.components["m"].value], tag)
    comps["v"] = Tagged([torch.zeros_like(t) for t in state.components["v"].value], tag)
    if not keep_step:
        comps["step"] = Tagged(0.0, e)
    return EpochTypedState(comps)


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str           # "correct", "mix" (a type violation) or "noise" (a harmless baseline)
    description: str


def variants(cfg: SkewConfig) -> list[Variant]:
    t = cfg.restore_step
    return [
        Variant("correct", "correct", f"every component from step {t}"),
        Variant("m_prev", "mix", f"m from step {t - 1} (Example 6.6)"),
        Variant("v_stale", "mix", f"v from step {t - cfg.v_lag}"),
        Variant("weights_stale", "mix", f"weights from step {t - 1}, optimizer from {t}"),
        Variant("data_stale", "mix", f"data position from step {t - cfg.data_lag}"),
        Variant("zero_opt_step_kept", "mix", f"m = v = 0 (silent re-init) with step counter {t} kept"),
        Variant("opt_reset", "noise", "m = v = 0 and step = 0: a deliberate, bias-corrected optimizer reset"),
        Variant("ulp_nudge", "noise", "weights moved by 1 ulp"),
        Variant("reshuffle", "noise", "same state, data order reshuffled after the restore"),
    ]


def build_variant(name: str, cfg: SkewConfig, history: Mapping[int, EpochTypedState]) -> tuple[EpochTypedState, int]:
    """The state to restore for a variant, and the shuffle seed of the data order afterwards."""
    t = cfg.restore_step
    s = history[t]
    table: dict[str, Callable[[], tuple[EpochTypedState, int]]] = {
        "correct": lambda: (s, 0),
        "m_prev": lambda: (s.mixed_with(history, {"m": t - 1}), 0),
        "v_stale": lambda: (s.mixed_with(history, {"v": t - cfg.v_lag}), 0),
        "weights_stale": lambda: (s.mixed_with(history, {"theta": t - 1}), 0),
        "data_stale": lambda: (s.mixed_with(history, {"data_position": t - cfg.data_lag}), 0),
        "zero_opt_step_kept": lambda: (_zero_moments(s, keep_step=True), 0),
        "opt_reset": lambda: (_zero_moments(s, keep_step=False), 0),
        "ulp_nudge": lambda: (_ulp_nudge(s), 0),
        "reshuffle": lambda: (s, 1),
    }
    if name not in table:
        raise ValueError(f"unknown variant {name!r}")
    return table[name]()


# ----------------------------------------------------------------------------------------------
# Experiment
# ----------------------------------------------------------------------------------------------


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


def _history_steps(cfg: SkewConfig) -> set[int]:
    t = cfg.restore_step
    return {t, t - 1, t - cfg.v_lag, t - cfg.data_lag}


def train_to_restore(problem: Problem) -> tuple[Run, dict[int, EpochTypedState]]:
    """Train from scratch to the restore step, capturing the epochs the variants draw from."""
    cfg = problem.cfg
    need = _history_steps(cfg)
    if min(need) < 1:
        raise ValueError("restore_step must exceed v_lag and data_lag")
    run = Run(problem)
    history: dict[int, EpochTypedState] = {}
    while run.epoch < cfg.restore_step:
        run.step()
        if run.epoch in need:
            history[run.epoch] = run.capture()
    return run, history


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


# ----------------------------------------------------------------------------------------------
# Example 6.6, exactly
# ----------------------------------------------------------------------------------------------


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
