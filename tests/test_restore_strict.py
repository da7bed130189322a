"""A restore applies every entry or none (issue 9, item 6), and silent mismatches are clear errors naming the
entry, what was expected and what was found (item 9)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import fito
from fito.testing.dist import run_ranks
import fito.errors
RestoreFailedError = getattr(fito.errors, "RestoreFailedError", fito.StateMismatchError)  # absent before issue 9
from training_state import assert_same, make_state, snapshot, train_steps


class Config:
    """A user object whose load_state_dict rejects a checkpoint written under another configuration."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.loads = 0

    def state_dict(self) -> dict:
        return {"width": self.width}

    def load_state_dict(self, sd: dict) -> None:
        self.loads += 1
        if sd["width"] != self.width:
            raise ValueError(f"checkpoint was written with width={sd['width']}, this run has width={self.width}")


class HalfLoading(torch.nn.Linear):
    """A module whose load_state_dict writes its weights, then raises (a failing entry that is half-applied)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: ANN001
        super().load_state_dict(state_dict, strict=strict, assign=assign)
        raise RuntimeError("refusing after loading")


def _saved(ckdir: Path, **extra) -> None:
    state = make_state(0)
    train_steps(state, 3)
    state.update(extra)
    fito.Checkpointer(ckdir).save(3, state)


# ------------------------------------------------------------------ item 6: all or nothing

def test_a_stateful_entry_that_raises_leaves_every_earlier_entry_unchanged(ckdir):
    _saved(ckdir, config=Config(width=4))
    target = make_state(7)
    train_steps(target, 1)
    target["config"] = Config(width=8)  # after model, optim, sched, rng, data in the mapping
    before = snapshot(target)
    with pytest.raises(RestoreFailedError, match=r"entry 'config' failed with ValueError: checkpoint was written with width=4.*unchanged"):
        fito.Checkpointer(ckdir).restore(target)
    assert target["config"].loads == 2  # applied (raised), then put back from its snapshot
    assert_same(before, snapshot(target))  # model, optimizer, scheduler, RNG, data position, tensor, value


def test_the_failing_entry_itself_is_put_back_even_when_it_was_half_loaded(ckdir):
    torch.manual_seed(0)
    fito.Checkpointer(ckdir).save(1, {"w": torch.ones(3), "layer": HalfLoading(4, 2)})
    torch.manual_seed(1)
    target = {"w": torch.zeros(3), "layer": HalfLoading(4, 2)}
    weight = target["layer"].weight.detach().clone()
    with pytest.raises(fito.StateMismatchError, match=r"entry 'layer' failed with RuntimeError: refusing after loading"):
        fito.Checkpointer(ckdir).restore(target)
    assert torch.equal(target["layer"].weight, weight) and torch.equal(target["w"], torch.zeros(3))


def test_an_invalid_rng_state_is_refused_before_anything_is_applied(ckdir):
    rng = fito.RNGState()
    bad = rng.state_dict()
    bad["torch"] = torch.zeros_like(bad["torch"])  # the right size and dtype, but not a valid mt19937 state
    rng.state_dict = lambda: bad  # this (still RNGState) object reports an invalid state
    model = torch.nn.Linear(3, 3)
    fito.Checkpointer(ckdir).save(1, {"model": model, "rng": rng})
    target = {"model": torch.nn.Linear(3, 3), "rng": fito.RNGState()}
    before = {k: v.clone() for k, v in target["model"].state_dict().items()}
    torch_rng = torch.get_rng_state()
    with pytest.raises(fito.StateMismatchError, match=r"rng: not a valid RNGState state \(RuntimeError: Invalid mt19937"):
        fito.Checkpointer(ckdir).restore(target)
    assert all(torch.equal(before[k], v) for k, v in target["model"].state_dict().items())
    assert torch.equal(torch.get_rng_state(), torch_rng)


def test_a_validator_failure_and_a_later_stateful_failure_share_the_rollback(ckdir):
    """With a validator, candidates are applied to be checked; a stateful failing after the model is loaded
    still leaves the model as it was."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)
    ck = fito.Checkpointer(ckdir, validator=lambda: float(model(x).sum().detach()))
    ck.save(1, {"model": model, "config": Config(4)})
    torch.manual_seed(1)
    target = torch.nn.Linear(4, 1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    loader = fito.Checkpointer(ckdir, validator=lambda: float(target(x).sum().detach()))
    with pytest.raises(fito.StateMismatchError, match="entry 'config' failed"):
        loader.restore({"model": target, "config": Config(8)})
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_a_load_failure_on_one_rank_leaves_every_rank_unchanged(tmp_path):
    helpers = str(Path(__file__).parent / "helpers")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (helpers, os.environ.get("PYTHONPATH")) if p)}
    results = run_ranks("restore_rank", [str(tmp_path / "ck")], 2, env=env, timeout=240)
    outcomes = {}
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        line = json.loads(r.stdout.strip().splitlines()[-1])
        outcomes[line["rank"]] = line
    assert outcomes[0]["error"] == outcomes[1]["error"] == "RestoreFailedError"
    assert outcomes[0]["unchanged"] and outcomes[1]["unchanged"]


# ------------------------------------------------------------------ item 9: no silent mismatch

def test_optimizer_over_parameters_in_another_order_gets_each_moment_by_name(ckdir):
    """Moments are keyed by parameter name (FQN, via DCP's get_state_dict), not by position: an optimizer built
    over the same parameters in another order gets each moment back on its own parameter (issue 10; the
    per-rank format refused it, before that it swapped them silently)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    fito.Checkpointer(ckdir).save(1, {"model": model, "optim": opt})
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    p = list(fresh.parameters())
    swapped = torch.optim.Adam([p[2], p[3], p[0], p[1]])  # same shapes, other order
    fito.Checkpointer(ckdir).restore({"model": fresh, "optim": swapped})
    saved = dict(model.named_parameters())
    for name, param in fresh.named_parameters():
        assert torch.equal(param, saved[name])
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(swapped.state[param][key], opt.state[saved[name]][key]), (name, key)
    assert torch.equal(swapped.state[p[0]]["exp_avg"], opt.state[saved["0.weight"]]["exp_avg"])
    assert not torch.equal(opt.state[saved["0.weight"]]["exp_avg"], opt.state[saved["1.weight"]]["exp_avg"])


def test_optimizer_without_its_model_in_the_state_is_checked_by_position(ckdir):
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD([a, b], lr=0.1, momentum=0.9)
    (a.sum() + b.sum()).backward()
    opt.step()
    fito.Checkpointer(ckdir).save(1, {"optim": opt})
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(3))], lr=0.1, momentum=0.9)
    with pytest.raises(fito.StateMismatchError, match=r"optim/state/optim.param0/momentum_buffer: expected \(2, 2\) "
                                                      r"torch.float32, checkpoint has \(3,\) torch.float32"):
        fito.Checkpointer(ckdir).restore({"optim": other})
    assert not other.state  # the zero step that read its layout was undone
    same = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))], lr=0.1, momentum=0.9)
    fito.Checkpointer(ckdir).restore({"optim": same})
    assert torch.equal(same.state[same.param_groups[0]["params"][1]]["momentum_buffer"], opt.state[b]["momentum_buffer"])


def test_a_scheduler_of_another_class_is_refused(ckdir):
    _saved(ckdir)
    target = make_state(0)
    target["sched"] = torch.optim.lr_scheduler.ExponentialLR(target["optim"], gamma=0.9)
    before = snapshot(target)
    with pytest.raises(fito.StateMismatchError, match=r"sched: saved from a torch.optim.lr_scheduler.StepLR, "
                                                      r"restoring into a torch.optim.lr_scheduler.ExponentialLR"):
        fito.Checkpointer(ckdir).restore(target)
    assert_same(before, snapshot(target))


class Holder:
    """A stateful object holding tensors nested in its state (like a scheduler or a data loader)."""

    def __init__(self, n: int) -> None:
        self.stats = {"mean": torch.zeros(n), "hist": [torch.zeros(2, n)]}

    def state_dict(self) -> dict:
        return {"stats": self.stats}

    def load_state_dict(self, sd: dict) -> None:
        self.stats = sd["stats"]


def test_a_nested_tensor_of_another_shape_is_refused(ckdir):
    fito.Checkpointer(ckdir).save(1, {"w": torch.ones(2), "holder": Holder(3)})
    target = {"w": torch.zeros(2), "holder": Holder(5)}
    with pytest.raises(fito.StateMismatchError, match=r"holder/stats/mean: expected \(5,\) torch.float32, checkpoint has \(3,\)"):
        fito.Checkpointer(ckdir).restore(target)
    assert torch.equal(target["w"], torch.zeros(2))
    target = {"w": torch.zeros(2), "holder": Holder(3)}
    target["holder"].stats["hist"][0] = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(fito.StateMismatchError, match=r"holder/stats/hist/0: expected \(2, 3\) torch.float64"):
        fito.Checkpointer(ckdir).restore(target)


def test_numpy_arrays_are_checked_against_the_current_array(ckdir):
    fito.Checkpointer(ckdir).save(1, {"arr": np.arange(6, dtype=np.int16), "cfg": {"table": np.zeros((2, 2))}})
    with pytest.raises(fito.StateMismatchError, match=r"arr: expected numpy \(4,\) int16, checkpoint has \(6,\) int16"):
        fito.Checkpointer(ckdir).restore({"arr": np.zeros(4, dtype=np.int16), "cfg": None})
    with pytest.raises(fito.StateMismatchError, match=r"arr: expected numpy \(6,\) float32, checkpoint has \(6,\) int16"):
        fito.Checkpointer(ckdir).restore({"arr": np.zeros(6, dtype=np.float32), "cfg": None})
    with pytest.raises(fito.StateMismatchError, match=r"cfg/table: expected numpy \(3, 2\) float64"):
        fito.Checkpointer(ckdir).restore({"arr": None, "cfg": {"table": np.zeros((3, 2))}})
    out = {"arr": np.zeros(6, dtype=np.int16), "cfg": None}  # matching (or no) current value: restored
    fito.Checkpointer(ckdir).restore(out)
    assert np.array_equal(out["arr"], np.arange(6)) and out["cfg"]["table"].shape == (2, 2)
