"""The small real problem the §6 experiments train: generated regression data (a random teacher MLP plus
noise) with a deterministic data stream, an MLP under real `torch.optim.AdamW` (CPU), and `Run`, one
trajectory's mutable training state, captured and restored as an epoch-typed tuple; `train_to_restore`
trains one to the restore step, keeping the epochs the restored tuples draw from."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fito.model.epoch_typed import EpochTypedState, Tagged, check_epoch_consistent


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
