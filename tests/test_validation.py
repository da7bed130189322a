"""Validation on restore (§9.3): a restored model must reproduce the held-out loss recorded at save."""
from __future__ import annotations

import copy

import pytest
import torch

import fito


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    xb, yb = torch.randn(32, 4), torch.randn(32, 1)
    return model, xb, yb


def _validator(model, xb, yb):
    def loss() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(xb), yb).item()
    return loss


def test_validation_catches_weights_that_do_not_reproduce_the_recorded_loss(tmp_path):
    model, xb, yb = _setup()
    ck = fito.Checkpointer(tmp_path, validator=_validator(model, xb, yb))
    ck.save(1, {"model": model})
    # Step 2's weights were damaged in memory after the loss was measured: hashes are of the damaged bytes,
    # so the structural checks pass; only the validation loss can tell.
    damaged = copy.deepcopy(model)
    with torch.no_grad():
        damaged[0].weight.add_(0.5)
    ck.save(2, {"model": damaged})

    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    loader = fito.Checkpointer(tmp_path, validator=_validator(target, xb, yb))
    with pytest.raises(fito.ValidationError, match="step 2: validation loss"):
        loader.restore({"model": target})
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # rolled back

    assert loader.restore({"model": target}, fallback=True) == 1
    assert all(torch.equal(model.state_dict()[k], v) for k, v in target.state_dict().items())


def test_validation_passes_on_a_faithful_restore_and_keeps_the_rng_stream(tmp_path):
    model, xb, yb = _setup()
    ck = fito.Checkpointer(tmp_path, validator=_validator(model, xb, yb))
    torch.manual_seed(5)
    ck.save(1, {"model": model})
    after_save = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), after_save)  # the validator did not consume the RNG
    target, _, _ = _setup()
    assert fito.Checkpointer(tmp_path, validator=_validator(target, xb, yb)).restore({"model": target}) == 1
