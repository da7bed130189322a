"""A restore loads a plain module from its own verified targets (fito.ckpt.exchange) with no host snapshot:
a tensor nobody else holds takes its target's storage (the same Parameter object, no copy), any other trades
bytes with its target in place like load_state_dict; either is put back exactly when anything fails -- at
every point an interrupt could land."""
from __future__ import annotations

import pytest
import torch

import fito
from fito.ckpt.exchange import Exchange, exchangeable


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))


def test_a_plain_module_takes_its_verified_targets_as_storage(tmp_path):
    saved = _model(0)
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"model": saved})
    model = _model(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: (p, p.data_ptr()) for n, p in model.named_parameters()}
    assert exchangeable(model, saved.state_dict()) is not None
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.restore({"model": model})
    for name, p in model.named_parameters():
        assert p is before[name][0] and p.data_ptr() != before[name][1]  # the same Parameters, adopted: no copy
        assert torch.equal(p, saved.get_parameter(name))
    assert [p for g in opt.param_groups for p in g["params"]] == list(model.parameters())


def test_a_tensor_somebody_else_can_see_is_loaded_in_its_own_storage(tmp_path):
    """A view, a shared-memory module: nobody may be left looking at the old values."""
    saved = _model(0)
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"model": saved})
    model = _model(1)
    row = model[0].weight[0]  # a view of the first weight: that one must be written in place
    seen, other = model[0].weight.data_ptr(), model[2].weight.data_ptr()
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.restore({"model": model})
    assert model[0].weight.data_ptr() == seen and torch.equal(row, saved[0].weight[0])
    assert model[2].weight.data_ptr() != other  # nobody else held it: adopted
    shared = _model(1).share_memory()
    ptrs = [p.data_ptr() for p in shared.parameters()]
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.restore({"model": shared})
    assert [p.data_ptr() for p in shared.parameters()] == ptrs and all(p.is_shared() for p in shared.parameters())
    assert all(torch.equal(a, b) for a, b in zip(shared.parameters(), saved.parameters()))


class Refuses:
    def state_dict(self) -> dict:
        return {"x": 1}

    def load_state_dict(self, sd: dict) -> None:
        raise RuntimeError("refused")


def test_a_failure_after_the_exchange_puts_the_module_back(tmp_path):
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"model": _model(0), "later": Refuses()})
    model = _model(1)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    ptrs = [p.data_ptr() for p in model.parameters()]
    with fito.Checkpointer(tmp_path / "ck") as ck, pytest.raises(fito.FitoError, match="refused"):
        ck.restore({"model": model, "later": Refuses()})
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]), k
    assert [p.data_ptr() for p in model.parameters()] == ptrs  # the adopted storages were given back


def _pairs() -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(3)
    live = [torch.randn(5, 3), torch.zeros(0), torch.tensor(7, dtype=torch.int64), torch.rand(11) > 0.5,
            torch.randn(4, dtype=torch.complex64)]
    new = [torch.randn(5, 3), torch.zeros(0), torch.tensor(-2, dtype=torch.int64), torch.rand(11) > 0.5,
           torch.randn(4, dtype=torch.complex64)]
    return list(zip(live, [t.clone() for t in new])), [t.clone() for t in live], new


@pytest.mark.parametrize("adopt", [True, False])
def test_undo_at_every_point_an_interrupt_could_land_restores_every_byte(adopt):
    pairs, old, _ = _pairs()
    total = sum(1 for _ in Exchange(_pairs()[0], adopt=adopt).steps(chunk_bytes=8))
    assert total == (len(pairs) if adopt else 3 * sum(-(-t.nbytes // 8) for t, _ in pairs))
    for stop in range(total + 1):
        pairs, old, _ = _pairs()
        ptrs = [live.data_ptr() for live, _ in pairs]
        exchange = Exchange(pairs, adopt=adopt)
        steps = exchange.steps(chunk_bytes=8)
        for _ in range(stop):
            next(steps)
        exchange.undo()
        for (live, _), want in zip(pairs, old):
            assert torch.equal(live, want), f"undo after {stop} of {total} steps"
        assert [live.data_ptr() for live, _ in pairs] == ptrs


def test_a_whole_exchange_loads_the_new_values_and_keeps_the_old_ones_in_the_targets():
    pairs, old, new = _pairs()
    Exchange(pairs, adopt=False).run()
    for (live, target), want_live, want_target in zip(pairs, new, old):
        assert torch.equal(live, want_live) and torch.equal(target, want_target)


def test_a_whole_adoption_loads_the_new_values_with_no_copy():
    pairs, _, new = _pairs()
    Exchange(pairs).run()
    for (live, target), want in zip(pairs, new):
        assert torch.equal(live, want) and (live.numel() == 0 or live.data_ptr() == target.data_ptr())


def test_modules_whose_loading_is_not_a_plain_copy_take_the_snapshot_path(tmp_path):
    tied = _model(0)
    tied[2].weight = torch.nn.Parameter(torch.randn(4, 16))
    tied.add_module("head", torch.nn.Linear(16, 4))
    tied.head.weight = tied[2].weight
    assert exchangeable(tied, tied.state_dict()) is None
    assert exchangeable(torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4).state_dict()) is None  # own loading
    hooked = _model(0)
    calls: list[str] = []
    hooked.register_load_state_dict_pre_hook(lambda *a, **k: calls.append("pre"))
    assert exchangeable(hooked, hooked.state_dict()) is None
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"model": _model(0)})
        ck.restore({"model": hooked})
    assert calls == ["pre"]  # the module's own load_state_dict ran, hooks included
    assert all(torch.equal(a, b) for a, b in zip(hooked.state_dict().values(), _model(0).state_dict().values()))
