"""A restore loads a plain module by exchanging bytes with its own verified targets (fito.ckpt.exchange): in
place like load_state_dict, with the old values kept in the targets instead of a host snapshot, and put back
exactly when anything fails -- at every point an interrupt could land."""
from __future__ import annotations

import pytest
import torch

import fito
from fito.ckpt.exchange import Exchange, exchangeable


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))


def test_a_plain_module_is_restored_in_place_by_exchange(tmp_path):
    saved = _model(0)
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"model": saved})
    model = _model(1)
    before = {n: (p, p.data_ptr()) for n, p in model.named_parameters()}
    assert exchangeable(model, saved.state_dict()) is not None
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.restore({"model": model})
    for name, p in model.named_parameters():
        assert p is before[name][0] and p.data_ptr() == before[name][1]  # the same tensors, loaded in place
        assert torch.equal(p, saved.get_parameter(name))


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
    with fito.Checkpointer(tmp_path / "ck") as ck, pytest.raises(fito.FitoError, match="refused"):
        ck.restore({"model": model, "later": Refuses()})
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]), k


def _pairs() -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(3)
    live = [torch.randn(5, 3), torch.zeros(0), torch.tensor(7, dtype=torch.int64), torch.rand(11) > 0.5,
            torch.randn(4, dtype=torch.complex64)]
    new = [torch.randn(5, 3), torch.zeros(0), torch.tensor(-2, dtype=torch.int64), torch.rand(11) > 0.5,
           torch.randn(4, dtype=torch.complex64)]
    return list(zip(live, [t.clone() for t in new])), [t.clone() for t in live], new


def test_undo_at_every_point_an_interrupt_could_land_restores_every_byte():
    pairs, old, _ = _pairs()
    total = sum(1 for _ in Exchange(_pairs()[0]).steps(chunk_bytes=8))
    assert total > 10
    for stop in range(total + 1):
        pairs, old, _ = _pairs()
        exchange = Exchange(pairs)
        steps = exchange.steps(chunk_bytes=8)
        for _ in range(stop):
            next(steps)
        exchange.undo()
        for (live, _), want in zip(pairs, old):
            assert torch.equal(live, want), f"undo after {stop} of {total} steps"


def test_a_whole_exchange_loads_the_new_values_and_keeps_the_old_ones_in_the_targets():
    pairs, old, new = _pairs()
    Exchange(pairs).run()
    for (live, target), want_live, want_target in zip(pairs, new, old):
        assert torch.equal(live, want_live) and torch.equal(target, want_target)


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
