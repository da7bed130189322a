"""Small training states whose every value can be compared exactly (shared by the checkpoint tests)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

import fito


def make_state(seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    return {"model": model, "optim": opt, "sched": sched, "rng": fito.RNGState(), "data": fito.DataPosition(seed=seed),
            "extra": torch.zeros(3, dtype=torch.bfloat16), "meta": {"note": "x", "n": 0}}


def train_steps(state: dict[str, Any], n: int) -> None:
    """n real AdamW steps that consume the RNG (dropout, numpy, random) and the data position."""
    model, opt, sched, pos = state["model"], state["optim"], state["sched"], state["data"]
    g = torch.Generator().manual_seed(99)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 2, generator=g)
    for _ in range(n):
        idx = pos.order(64)[pos.index:pos.index + 8]
        noise = float(np.random.rand()) * 1e-3
        loss = torch.nn.functional.mse_loss(model(x[idx]) + noise, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        pos.advance(8, 64)
        state["extra"] += 1
        state["meta"] = {"note": "x", "n": state["meta"]["n"] + 1}


def snapshot(state: dict[str, Any]) -> dict[str, Any]:
    """Everything observable about a state, as exact values (tensors cloned)."""
    import random

    out = {
        "model": {k: v.clone() for k, v in state["model"].state_dict().items()},
        "optim": {i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                  for i, s in state["optim"].state_dict()["state"].items()},
        "groups": state["optim"].state_dict()["param_groups"],
        "sched": state["sched"].state_dict(),
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "python_rng": random.getstate(),
        "data": state["data"].state_dict(),
        "extra": state["extra"].clone(),
        "meta": dict(state["meta"]),
    }
    return out


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    def eq(x: Any, y: Any, where: str) -> None:
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), where
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y), where
        elif isinstance(x, dict):
            assert set(x) == set(y), where
            for k in x:
                eq(x[k], y[k], f"{where}/{k}")
        else:
            assert x == y, where

    eq(a, b, "state")
