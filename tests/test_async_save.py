"""Background saves: the committed epoch holds the values at the call, failures surface, one in flight."""
from __future__ import annotations

import threading

import pytest
import torch

import fito
from fito.storage.localfs import LocalFS
from training_state import assert_same, make_state, snapshot, train_steps
from fito.protocol.layout import parse_attempt_path, parse_object


def test_mutations_after_the_call_do_not_reach_the_checkpoint(ckdir):
    state = make_state(0)
    train_steps(state, 3)
    at_call = snapshot(state)
    ck = fito.Checkpointer(ckdir)
    handle = ck.save(3, state, blocking=False)
    # Training goes on at once: every parameter and every optimizer moment changes.
    with torch.no_grad():
        for p in state["model"].parameters():
            p.add_(1000.0)
        for s in state["optim"].state.values():
            s["exp_avg"].mul_(-7.0)
            s["exp_avg_sq"].add_(5.0)
            s["step"].add_(100)
    state["extra"] += 50
    train_steps(state, 2)
    assert handle.wait() == 3 and handle.done() and handle.exception() is None
    restored = make_state(1)
    torch.manual_seed(1234)  # restore must bring back the RNG captured at the call
    assert fito.Checkpointer(ckdir).restore(restored) == 3
    expected = dict(at_call)
    got = snapshot(restored)
    for key in ("torch_rng", "numpy_rng", "python_rng"):  # restored RNG = the one at the call
        expected.pop(key), got.pop(key)
    assert_same(expected, got)


class GatedFS(LocalFS):
    """Storage whose writes wait for a gate: a save that stays in flight until the test opens it."""

    def __init__(self, root, gate: threading.Event) -> None:
        super().__init__(root)
        self.gate = gate

    def create(self, rel: str):  # type: ignore[override]
        self.gate.wait(10)
        return super().create(rel)


def test_one_save_in_flight_and_if_busy_error(ckdir):
    ck = fito.Checkpointer(ckdir)
    gate = threading.Event()
    ck.storage = GatedFS(ck.root, gate)
    h1 = ck.save(1, {"w": torch.ones(4)}, blocking=False)
    with pytest.raises(fito.SaveInProgressError, match="step 1 is still in flight"):
        ck.save(2, {"w": torch.ones(4)}, blocking=False, if_busy="error")
    gate.set()
    h2 = ck.save(2, {"w": torch.full((4,), 2.0)}, blocking=False)  # waits for step 1 first
    assert h1.done() and h2.wait() == 2
    assert ck.committed() == [1, 2]


class FailingFS(LocalFS):
    """The disk fails while writing `step`'s objects, and only those (injected at the storage seam)."""

    def __init__(self, root, step: int, error: OSError) -> None:
        super().__init__(root)
        self.step, self.error = step, error

    def create(self, rel: str):  # type: ignore[override]
        path = parse_attempt_path(rel.rsplit("/", 1)[0])
        if path is not None and path.step == self.step and parse_object(rel.rsplit("/", 1)[-1]) is not None:
            raise self.error
        return super().create(rel)


def _fail_writes_of(ck, step: int, error: OSError) -> None:
    ck.storage = FailingFS(ck.root, step, error)


def test_background_failure_surfaces_on_the_next_call(ckdir):
    ck = fito.Checkpointer(ckdir)
    ck.save(1, {"w": torch.ones(4)})

    _fail_writes_of(ck, 2, OSError(28, "No space left on device"))
    ck.save(2, {"w": torch.ones(4)}, blocking=False)
    with pytest.raises(fito.SaveAbortedError, match="background save of step 2 failed.*No space left"):
        ck.save(3, {"w": torch.ones(4)})
    assert ck.save(3, {"w": torch.ones(4)}) == 3  # reported once, then work goes on
    assert ck.committed() == [1, 3]


def test_wait_raises_the_background_error(ckdir):
    ck = fito.Checkpointer(ckdir)
    _fail_writes_of(ck, 1, OSError("EIO"))
    handle = ck.save(1, {"w": torch.ones(4)}, blocking=False)
    with pytest.raises(fito.SaveAbortedError, match="EIO"):
        handle.wait()
    ck.save(2, {"w": torch.ones(4)})  # observed via wait(): not raised again
    assert ck.committed() == [2]


def test_staging_copies_a_tensor_payload_once_byte_for_byte() -> None:
    # The path a device tensor takes (fito.ckpt.staging): the tensor itself, copied straight into the
    # buffer. Run here with host tensors of awkward kinds; benchmarks/gpu.py runs it with CUDA tensors.
    from fito.ckpt.staging import StagingBuffer

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    payloads = {"strided": base.t(), "bf16": torch.randn(5).to(torch.bfloat16), "bool": torch.tensor([True, False, True]),
                "scalar": torch.tensor(7, dtype=torch.int64), "empty": torch.empty(0), "json": memoryview(b'{"a": 1}')}
    staged = dict(StagingBuffer().stage(list(payloads.items())))
    for name, p in payloads.items():
        want = bytes(p) if isinstance(p, memoryview) else p.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert bytes(staged[name]) == want, name
    base.add_(1)  # the live tensor moves on; the staged bytes do not
    assert bytes(staged["strided"]) == torch.arange(24, dtype=torch.float32).reshape(4, 6).t().contiguous().numpy().tobytes()
