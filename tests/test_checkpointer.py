"""Save/restore round trips, retention, and strictness against the caller's objects."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fito
from training_state import assert_same, make_state, snapshot, train_steps


def test_round_trip_restores_every_kind_of_entry_in_place(ckdir):
    state = make_state(0)
    train_steps(state, 4)
    state["arr"] = np.arange(6, dtype=np.int16).reshape(2, 3)
    state["scalar"] = torch.tensor(3.5, dtype=torch.float64)
    state["empty"] = torch.zeros(0, 4)
    before = snapshot(state)
    ck = fito.Checkpointer(ckdir)
    assert ck.save(4, state) == 4
    assert ck.committed() == [4]

    fresh = make_state(1)
    fresh.update(arr=None, scalar=torch.tensor(0.0, dtype=torch.float64), empty=torch.ones(0, 4))
    model_param = fresh["model"][0].weight
    assert fito.Checkpointer(ckdir).restore(fresh) == 4
    assert fresh["model"][0].weight is model_param  # in place, same Parameter object
    assert_same(before, snapshot(fresh))
    assert np.array_equal(fresh["arr"], state["arr"]) and fresh["arr"].dtype == np.int16
    assert fresh["scalar"].item() == 3.5


def test_restore_specific_step_and_newest_by_commit_order(ckdir):
    ck = fito.Checkpointer(ckdir)
    t = {"w": torch.zeros(4)}
    for step in (1, 2, 3):
        t["w"].fill_(step)
        ck.save(step, t)
    out = {"w": torch.empty(4)}
    assert ck.restore(out) == 3 and out["w"].eq(3).all()
    assert ck.restore(out, step=2) == 2 and out["w"].eq(2).all()
    with pytest.raises(fito.NoCommittedEpochError, match="step 9 is not committed"):
        ck.restore(out, step=9)


def test_retention_keeps_last_k_and_deletes_their_files(ckdir):
    ck = fito.Checkpointer(ckdir, keep=2)
    t = {"w": torch.zeros(4)}
    for step in range(1, 6):
        ck.save(step, t)
    assert ck.committed() == [4, 5]
    on_disk = sorted(p.name for p in (ckdir / "epochs").iterdir())
    assert on_disk == ["000000000004", "000000000005"]


def test_nothing_committed_is_a_clear_error(ckdir):
    with pytest.raises(fito.NoCommittedEpochError, match="no committed checkpoint"):
        fito.Checkpointer(ckdir).restore({"w": torch.zeros(1)})


def test_mismatched_objects_are_rejected_before_anything_is_touched(ckdir):
    state = make_state(0)
    train_steps(state, 2)
    fito.Checkpointer(ckdir).save(2, state)
    other = make_state(5)
    other["model"] = torch.nn.Linear(8, 3)  # a different architecture
    other["optim"] = torch.optim.AdamW(other["model"].parameters())
    other["sched"] = torch.optim.lr_scheduler.StepLR(other["optim"], 3)
    before = snapshot(other)
    with pytest.raises(fito.StateMismatchError, match="module keys differ"):
        fito.Checkpointer(ckdir).restore(other)
    assert_same(before, snapshot(other))


def test_missing_entry_and_unsupported_value_are_named(ckdir):
    fito.Checkpointer(ckdir).save(1, {"w": torch.zeros(2)})
    with pytest.raises(fito.StateMismatchError, match="no entry 'v'"):
        fito.Checkpointer(ckdir).restore({"w": torch.zeros(2), "v": torch.zeros(2)})
    with pytest.raises(fito.StateMismatchError, match="cannot checkpoint a value of type object"):
        fito.Checkpointer(ckdir).save(2, {"w": object()})


def test_partial_optimizer_state_is_an_error_not_a_zero_init(ckdir):
    state = make_state(0)
    train_steps(state, 2)
    sd = state["optim"].state_dict()
    del sd["state"][0]["exp_avg_sq"]  # a moment missing for one parameter
    planted = state["optim"]
    planted.state_dict = lambda: sd  # this optimizer now reports a partial state
    ck = fito.Checkpointer(ckdir)
    # Refused at save (a checkpoint that could never restore is never written), naming group and parameters.
    with pytest.raises(fito.StateMismatchError, match=r"different optimizer state keys in group 0 .*parameter 0"):
        ck.save(1, {"optim": planted})
    assert ck.committed() == [] and not (ckdir / "epochs").exists()


def test_blake3_hash_option_round_trips(ckdir):
    ck = fito.Checkpointer(ckdir, hash="blake3")
    ck.save(1, {"w": torch.arange(10.0)})
    out = {"w": torch.zeros(10)}
    assert ck.restore(out) == 1 and torch.equal(out["w"], torch.arange(10.0))


def test_stale_coordinator_cannot_commit(ckdir):
    old = fito.Checkpointer(ckdir)
    old.save(1, {"w": torch.zeros(2)})  # old coordinator holds a fence
    new = fito.Checkpointer(ckdir)
    new.save(2, {"w": torch.ones(2)})  # a newer coordinator took over
    with pytest.raises(fito.SaveAbortedError, match="fencing token"):
        old.save(3, {"w": torch.full((2,), 3.0)})
    assert new.committed() == [1, 2]


def test_garbage_collection_never_deletes_a_newer_coordinators_attempt(ckdir, monkeypatch):
    """The model checker's zombie trace: an old coordinator's GC must not delete the live job's attempt."""
    from fito.commit.attempt import attempt_id
    from fito.commit.retention import collect_garbage

    zombie = fito.Checkpointer(ckdir)
    zombie.save(1, {"w": torch.zeros(2)})  # fence 1, taken at its first save
    live = fito.Checkpointer(ckdir)
    assert live.store.acquire_fence() == 2  # a restarted job starting its first save (start of _commit), step 2
    log_id = live.store.log_id()
    live_attempt = ckdir / "epochs" / "000000000002" / attempt_id(2, log_id)
    live_attempt.mkdir(parents=True)
    (live_attempt / "rank-00000.fito").write_bytes(b"being written")
    stale_attempt = ckdir / "epochs" / "000000000002" / attempt_id(1, log_id)
    stale_attempt.mkdir()

    collect_garbage(zombie.storage, zombie.store, 1, keep=None)  # the zombie sees it is stale: deletes nothing
    assert live_attempt.exists() and stale_attempt.exists()
    # The race: the zombie checked the fence just before the new job took it. Its own leftovers go,
    # the newer coordinator's attempt stays.
    monkeypatch.setattr(zombie.store, "current_fence", lambda: 1)
    collect_garbage(zombie.storage, zombie.store, 1, keep=None)
    assert live_attempt.exists() and not stale_attempt.exists()
    assert live.committed() == [1]


def test_restored_optimizer_moments_do_not_pin_the_models_bytes(ckdir):
    """Moments alias the read buffer (no copy); that buffer must hold the optimizer's entry only."""
    model = torch.nn.Linear(256, 256, bias=False)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 256)).sum().backward()
    opt.step()
    ck = fito.Checkpointer(ckdir)
    ck.save(1, {"model": model, "optim": opt})
    ck.restore({"model": model, "optim": opt})
    param_bytes = model.weight.numel() * 4
    pinned = opt.state[model.weight]["exp_avg"].untyped_storage().nbytes()
    assert pinned < 2.5 * param_bytes  # exp_avg + exp_avg_sq (+ headers), not the model's third as well
