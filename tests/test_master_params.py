"""Parameters that only the optimizer holds -- fp32 master weights of a bf16 model (issue 21, defect 2) -- are
saved with the optimizer and restored in place: a resume continues bit for bit. Before, they were silently left
out and the first step after a resume overwrote the restored weights with the masters' stale values."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import fito


def mixed(seed: int) -> tuple[dict[str, Any], list[torch.nn.Parameter]]:
    """A bf16 model whose optimizer steps fp32 master Parameters that no module of the state holds."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).to(torch.bfloat16)
    masters = [torch.nn.Parameter(p.detach().float()) for p in model.parameters()]
    return {"model": model, "optim": torch.optim.AdamW(masters, lr=1e-2)}, masters


def train(state: dict[str, Any], masters: list[torch.nn.Parameter], steps: range) -> None:
    model, opt = state["model"], state["optim"]
    for i in steps:
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(i)).bfloat16()
        model(x).float().pow(2).mean().backward()
        for p, m in zip(model.parameters(), masters):
            m.grad, p.grad = p.grad.float(), None
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for p, m in zip(model.parameters(), masters):
                p.copy_(m)


def test_fp32_masters_outside_the_state_resume_bit_exact(tmp_path: Path) -> None:
    state, masters = mixed(0)
    train(state, masters, range(3))
    fito.Checkpointer(tmp_path).save(3, state)
    saved = [m.detach().clone() for m in masters]
    train(state, masters, range(3, 5))

    fresh, fresh_masters = mixed(1)
    assert fito.Checkpointer(tmp_path).restore(fresh) == 3
    assert [torch.equal(a, b) for a, b in zip(fresh_masters, saved)] == [True] * 4  # in place, same objects
    assert fresh["optim"].param_groups[0]["params"][0] is fresh_masters[0]
    train(fresh, fresh_masters, range(3, 5))
    assert [torch.equal(a, b) for a, b in zip(fresh_masters, masters)] == [True] * 4
    assert [torch.equal(a, b) for a, b in zip(fresh["model"].parameters(), state["model"].parameters())] == [True] * 4


def test_masters_that_do_not_fit_are_refused_before_anything_changes(tmp_path: Path) -> None:
    state, masters = mixed(0)
    train(state, masters, range(2))
    fito.Checkpointer(tmp_path).save(2, state)
    other, other_masters = mixed(1)
    other["optim"] = torch.optim.AdamW([*other_masters, torch.nn.Parameter(torch.zeros(3))], lr=1e-2)
    before = [m.detach().clone() for m in other_masters]
    with pytest.raises(fito.StateMismatchError, match="optim.param4"):
        fito.Checkpointer(tmp_path).restore(other)
    assert [torch.equal(a, b) for a, b in zip(other_masters, before)] == [True] * 4


def test_plain_tensor_masters_are_refused_at_save_with_the_fix(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2)
    master = model.weight.detach().double().requires_grad_()  # a plain tensor, not a Parameter
    opt = torch.optim.SGD([master, model.bias], lr=0.1)
    with pytest.raises(fito.StateMismatchError) as info:
        fito.Checkpointer(tmp_path).save(1, {"model": model, "optim": opt})
    text = str(info.value)
    assert "'optim'" in text and "parameter 0 ((2, 4) torch.float64)" in text
    assert "torch.nn.Parameter" in text and "saves and restores it with the optimizer" in text


def test_masters_the_checkpoint_has_no_values_for_are_refused_even_when_partial(tmp_path: Path) -> None:
    state, masters = mixed(0)
    holder = torch.nn.ParameterList(masters)  # saved as a module of the state this time
    fito.Checkpointer(tmp_path).save(1, {**state, "masters": holder})
    other, other_masters = mixed(1)
    before = [m.detach().clone() for m in other_masters]
    with pytest.raises(fito.StateMismatchError, match=r"optim.param0.*no values for them.*overwrite the restored"):
        fito.Checkpointer(tmp_path).restore(other, strict=False)  # "masters" left out: they would be silently stale
    assert [torch.equal(a, b) for a, b in zip(other_masters, before)] == [True] * 4
