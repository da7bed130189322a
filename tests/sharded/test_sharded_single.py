"""`fito.Checkpointer` on the sharded core, one process: per-rank-format checkpoints (fito-manifest/1) still
restore; the zero-gradient step DCP takes on a fresh optimizer is undone when a restore fails; non-tensor
values keep their JSON types; strictness both ways; owned tensors; the rank_local argument."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fito
from fito.ckpt.inspect import verify
from fito.commit.manifests import manifest_bytes
from fito.format.manifest import format_of
from fito.testing.v1_format import save_v1
from training_state import assert_same, make_state, snapshot, train_steps


def _formats(root: Path) -> dict[int, str | None]:
    from fito.ckpt.inspect import open_store
    storage, store = open_store(root)
    try:
        return {d.epoch: format_of(manifest_bytes(storage, d)) for d in store.committed()}
    finally:
        store.close()


def test_a_per_rank_format_checkpoint_still_restores_beside_sharded_ones(ckdir):
    state = make_state(0)
    train_steps(state, 2)
    at2 = snapshot(state)
    ck = fito.Checkpointer(ckdir)
    save_v1(ck, 2, state)  # what today's checkpoints on disk look like
    train_steps(state, 2)
    at4 = snapshot(state)
    ck.save(4, state)
    assert _formats(ckdir) == {2: "fito-manifest/1", 4: "fito-manifest/2"}
    target = make_state(7)
    assert fito.Checkpointer(ckdir).restore(target) == 4
    assert_same(at4, snapshot(target))
    target = make_state(7)
    assert fito.Checkpointer(ckdir).restore(target, step=2) == 2  # through the v1 read path
    assert_same(at2, snapshot(target))
    assert verify(ckdir, 2).whole and verify(ckdir, 4).whole
    # a damaged sharded step falls back to the older per-rank one, all or nothing
    obj = next((ckdir / "epochs" / "000000000004").glob("*/rank-00000.fito"))
    data = bytearray(obj.read_bytes())
    data[64 + 3] ^= 0xFF  # inside the first item (after the 64-byte header): the tail may be padding
    obj.write_bytes(bytes(data))
    target = make_state(7)
    assert fito.Checkpointer(ckdir).restore(target, fallback=True) == 2
    assert_same(at2, snapshot(target))
    assert not verify(ckdir, 4).whole


def _corrupt_newest(root: Path) -> None:
    obj = next(p for p in sorted((root / "epochs").glob("*/*/rank-00000.fito")))
    manifest = json.loads((obj.parent / "manifest.json").read_bytes())
    piece = next(c for t in manifest["tensors"] if t["fqn"].startswith("optim/") for c in t["chunks"])  # moments (packed)
    data = bytearray(obj.read_bytes())
    data[piece["offset"]] ^= 0x01
    obj.write_bytes(bytes(data))


class Refusing:
    """A stateful entry that refuses every checkpoint (after the optimizer entry was applied)."""

    def state_dict(self) -> dict:
        return {"x": 1}

    def load_state_dict(self, sd: dict) -> None:
        raise ValueError("refusing")


@pytest.mark.parametrize("how", ["damaged bytes", "a later entry raises"])
def test_a_failed_restore_leaves_a_fresh_optimizer_exactly_as_it_was(ckdir, how):
    state = make_state(0)
    train_steps(state, 3)
    state["late"] = Refusing()
    fito.Checkpointer(ckdir).save(3, state)
    if how == "damaged bytes":
        _corrupt_newest(ckdir)
    target = make_state(5)
    target["late"] = Refusing()
    model, opt = target["model"], target["optim"]
    grads = [torch.full_like(p, 0.5) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):  # gradients set: DCP would skip creating the state; fito hides them
        p.grad = g
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    attributes = set(opt.__dict__)
    with pytest.raises(fito.FitoError):
        fito.Checkpointer(ckdir).restore(target)
    assert not opt.state, "the zero-gradient step that read the optimizer's layout was not undone"
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert set(opt.__dict__) == attributes
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_a_fresh_optimizer_gets_its_moments_and_step_counters(ckdir):
    state = make_state(0)
    train_steps(state, 3)
    fito.Checkpointer(ckdir).save(3, state)
    target = make_state(5)
    fito.Checkpointer(ckdir).restore(target)
    for p, q in zip(state["model"].parameters(), target["model"].parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(target["optim"].state[q][key], state["optim"].state[p][key]), key


def test_non_tensor_values_keep_their_json_types_and_tensors_come_back_owned(ckdir):
    value = {"counts": {1: "one", 2: [1.5, float("inf")], (3, "x"): None}, "pair": (1, 2), "t": [torch.arange(4.0)]}
    ck = fito.Checkpointer(ckdir)
    ck.save(1, {"value": value, "w": torch.arange(6.0)})
    out = {"value": None, "w": torch.zeros(6)}
    ck.restore(out)
    got = out["value"]
    assert got["counts"] == {1: "one", 2: [1.5, float("inf")], (3, "x"): None} and got["pair"] == (1, 2)
    t = got["t"][0]
    assert type(t) is torch.Tensor and t._base is None and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert torch.equal(t, torch.arange(4.0)) and torch.equal(out["w"], torch.arange(6.0))


def test_strict_both_ways_at_the_entry_level(ckdir):
    ck = fito.Checkpointer(ckdir)
    ck.save(1, {"w": torch.zeros(2), "v": torch.ones(2)})
    out = {"w": torch.full((2,), 3.0)}
    with pytest.raises(fito.StateMismatchError, match=r"holds entries \['v'\] that the state to restore lacks"):
        ck.restore(out)
    assert torch.equal(out["w"], torch.full((2,), 3.0))
    with pytest.raises(fito.StateMismatchError, match="no entry 'u'"):
        ck.restore({"w": torch.zeros(2), "v": torch.zeros(2), "u": torch.zeros(1)})


def test_reserved_names_and_bad_rank_local_policies_are_refused(ckdir):
    ck = fito.Checkpointer(ckdir)
    with pytest.raises(fito.StateMismatchError, match="reserved for fito"):
        ck.save(1, {"__rank__": torch.zeros(1)})
    ck.save(1, {"w": torch.zeros(1), "rng": fito.RNGState()})
    for bad in ("keep", {0: "zero"}, {"rng": "drop"}, {True: 0}):
        with pytest.raises(ValueError, match=r"rank_local(\[.*\])?="):
            ck.restore({"w": torch.zeros(1), "rng": fito.RNGState()}, rank_local=bad)
    # on the world size that saved, each rank gets its own copy whatever the policy ("reset" included)
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    ck.save(2, {"w": torch.zeros(1), "rng": fito.RNGState()})
    torch.manual_seed(4)
    ck.restore({"w": torch.zeros(1), "rng": fito.RNGState()}, rank_local="reset")
    assert torch.equal(torch.get_rng_state(), rng)
