"""Every optimizer in torch.optim round-trips bit-exactly through save/restore (issue 9, item 8): train, save,
restore into a fresh model and optimizer, train on in both, and compare every parameter and every state value."""
from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch

import fito

Build = Callable[[torch.nn.Module], torch.optim.Optimizer]


def _groups(model: torch.nn.Module) -> list[list[torch.nn.Parameter]]:
    """Two parameter groups: the first layer, and the rest (so per-group flags can differ)."""
    params = list(model.parameters())
    return [params[:2], params[2:]]


def _mixed(cls: type, key: str, a: Any, b: Any, **common: Any) -> Build:
    return lambda m: cls([{"params": g, key: v} for g, v in zip(_groups(m), (a, b))], **common)


# name -> (builder, needs sparse gradients). One builder per flag combination the CPU build accepts; not here:
# capturable=True (CUDA/XLA only) and differentiable=True (autograd refuses its in-place step on leaf parameters,
# so it cannot train an nn.Module; it is for optimizing non-leaf tensors inside a graph).
CASES: dict[str, tuple[Build, bool]] = {
    "SGD": (lambda m: torch.optim.SGD(m.parameters(), lr=0.05), False),
    "SGD-momentum-nesterov": (lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True), False),
    "SGD-momentum-mixed": (_mixed(torch.optim.SGD, "momentum", 0.0, 0.9, lr=0.05), False),
    "SGD-fused": (lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, fused=True), False),
    "Adam": (lambda m: torch.optim.Adam(m.parameters(), lr=1e-2), False),
    "Adam-amsgrad-mixed": (_mixed(torch.optim.Adam, "amsgrad", True, False, lr=1e-2), False),
    "Adam-foreach": (lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, foreach=True, amsgrad=True), False),
    "Adam-fused": (lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, fused=True), False),
    "AdamW": (lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1), False),
    "AdamW-amsgrad-mixed-fused": (_mixed(torch.optim.AdamW, "amsgrad", False, True, lr=1e-2, fused=True), False),
    "Adamax": (lambda m: torch.optim.Adamax(m.parameters(), lr=1e-2), False),
    "Adagrad": (lambda m: torch.optim.Adagrad(m.parameters(), lr=1e-2, lr_decay=1e-3), False),
    "Adagrad-fused": (lambda m: torch.optim.Adagrad(m.parameters(), lr=1e-2, fused=True), False),
    "Adadelta": (lambda m: torch.optim.Adadelta(m.parameters()), False),
    "RMSprop": (lambda m: torch.optim.RMSprop(m.parameters(), lr=1e-3), False),
    "RMSprop-centered-momentum-mixed": (_mixed(torch.optim.RMSprop, "centered", True, False, lr=1e-3, momentum=0.5), False),
    "Rprop": (lambda m: torch.optim.Rprop(m.parameters(), lr=1e-3), False),
    "ASGD": (lambda m: torch.optim.ASGD(m.parameters(), lr=1e-2, t0=2), False),
    "NAdam": (lambda m: torch.optim.NAdam(m.parameters(), lr=1e-2, decoupled_weight_decay=True, weight_decay=0.01), False),
    "RAdam": (lambda m: torch.optim.RAdam(m.parameters(), lr=1e-2), False),
    "Adafactor": (lambda m: torch.optim.Adafactor(m.parameters(), lr=1e-2), False),
    "Adafactor-foreach": (lambda m: torch.optim.Adafactor(m.parameters(), lr=1e-2, foreach=True), False),
    "LBFGS": (lambda m: torch.optim.LBFGS(m.parameters(), lr=0.5, history_size=3, max_iter=4), False),
    "LBFGS-strong-wolfe": (lambda m: torch.optim.LBFGS(m.parameters(), history_size=2, max_iter=3, line_search_fn="strong_wolfe"), False),
    "SparseAdam": (lambda m: torch.optim.SparseAdam(list(m.parameters()), lr=1e-2), True),
    "Muon": (lambda m: torch.optim.Muon([p for p in m.parameters() if p.dim() == 2], lr=1e-2), False),
}


def _model(sparse: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if sparse:
        return torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Embedding(10, 4, sparse=True))
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int, sparse: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        if sparse:
            idx = torch.randint(0, 10, (5,), generator=g)
            target = torch.randn(5, 4, generator=g)

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = ((model[0](idx) - target) ** 2).mean() + ((model[1](idx) + target) ** 2).mean()
                loss.backward()
                return loss
        else:
            x, y = torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss
        opt.step(closure)


def _trained(name: str, steps: int, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model and its optimizer of case `name`, trained `steps` steps (0: fresh, no state)."""
    build, sparse = CASES[name]
    model = _model(sparse)
    opt = build(model)
    _train(model, opt, steps, seed=seed, sparse=sparse)
    return model, opt


def _assert_equal(a: Any, b: Any, where: str) -> None:
    """Bit-exact equality of nested state (tensors by value and dtype, everything else by ==)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.detach(), b.detach()), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            _assert_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}/{i}")
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_every_optimizer_class_in_torch_optim_is_covered():
    classes = {c for c in vars(torch.optim).values()
               if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer}
    covered = {type(build(_model(sparse))) for build, sparse in CASES.values()}
    assert classes <= covered, f"add a round-trip case for {sorted(c.__name__ for c in classes - covered)}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimizer_round_trips_bit_exactly(tmp_path, name):
    sparse = CASES[name][1]
    model, opt = _trained(name, 3, seed=1)
    ck = fito.Checkpointer(tmp_path / "ck")
    ck.save(3, {"model": model, "optim": opt})

    fresh_model, fresh_opt = _trained(name, 0, seed=0)
    with torch.no_grad():
        for p in fresh_model.parameters():
            p.add_(1.0)  # the restore must overwrite every parameter
    assert ck.restore({"model": fresh_model, "optim": fresh_opt}) == 3
    _assert_equal(opt.state_dict(), fresh_opt.state_dict(), f"{name} right after restore")

    _train(model, opt, 3, seed=2, sparse=sparse)
    _train(fresh_model, fresh_opt, 3, seed=2, sparse=sparse)
    _assert_equal(model.state_dict(), fresh_model.state_dict(), f"{name} params after 3 more steps")
    _assert_equal(opt.state_dict(), fresh_opt.state_dict(), f"{name} optimizer after 3 more steps")
    ck.close()


# Factored second moments (rows and columns of a matrix) do not have their parameter's shape: only a step
# tells their layout, so a restore into a fresh Adafactor still takes DCP's zero-gradient step (and undoes it
# on failure). LBFGS keeps flat history vectors: its step is tried, raises without a closure, and is undone
# (then its state is read without one). Every other optimizer's fresh state is laid out from its parameters.
STEPPED_ON_FRESH_RESTORE = {"Adafactor", "LBFGS"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_fresh_optimizer_is_restored_without_a_zero_gradient_step(tmp_path, name):
    model, opt = _trained(name, 2, seed=1)
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.save(2, {"model": model, "optim": opt})
    fresh_model, fresh_opt = _trained(name, 0, seed=0)
    steps: list[int] = []
    fresh_opt.register_step_pre_hook(lambda *_: steps.append(1))
    with fito.Checkpointer(tmp_path / "ck") as ck:
        assert ck.restore({"model": fresh_model, "optim": fresh_opt}) == 2
    assert bool(steps) == (name.split("-")[0] in STEPPED_ON_FRESH_RESTORE), f"{name}: {len(steps)} step() calls"
    _assert_equal(opt.state_dict(), fresh_opt.state_dict(), f"{name} right after restore")
    assert all(p.grad is None for p in fresh_model.parameters())  # no placeholder gradient left behind


class _Refuses:
    """An entry whose loading raises: everything restored before it must be put back."""

    def state_dict(self) -> dict[str, int]:
        return {"x": 1}

    def load_state_dict(self, sd: dict[str, int]) -> None:
        raise RuntimeError("refused")


def _trained_then_failed_restore(tmp_path, name: str, hook: bool):  # type: ignore[no-untyped-def]
    model, opt = _trained(name, 2, seed=1)
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.save(2, {"model": model, "optim": opt, "later": _Refuses()})
    other, other_opt = _trained(name, 3, seed=5)  # a live optimizer with moments of its own
    if hook:
        other_opt.register_load_state_dict_pre_hook(lambda o, sd: None)
    before = copy.deepcopy(other_opt.state_dict())
    state_object = other_opt.state
    with fito.Checkpointer(tmp_path / "ck") as ck, pytest.raises(fito.FitoError, match="refused"):
        ck.restore({"model": other, "optim": other_opt, "later": _Refuses()})
    _assert_equal(other_opt.state_dict(), before, f"{name} after a failed restore")
    return other_opt.state is state_object


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_trained_optimizer_gets_its_own_state_objects_back_when_a_later_entry_fails(tmp_path, name):
    """torch's load_state_dict replaces an optimizer's state, so the snapshot is the old objects: no copy of
    the moments is taken, and after a failure the optimizer holds exactly its old tensors again."""
    assert _trained_then_failed_restore(tmp_path, name, hook=False)


def test_an_optimizer_with_load_hooks_is_snapshot_by_copy_and_put_back(tmp_path):
    assert not _trained_then_failed_restore(tmp_path, "AdamW", hook=True)  # a copy, loaded back: new objects
