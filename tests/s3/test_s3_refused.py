"""Damaged objects under an S3 prefix, put there by a raw obstore PUT (what a buggy tool, another job or a bad
copy would do): a corrupted, truncated, foreign, other-step or oversized object, or a stray entry in the decision
log. Each restore is refused with CheckpointCorruptError before anything is touched (the model and optimizer
unchanged), and reads a bounded number of bytes (an object over its limit is refused by its size, not fetched)."""
from __future__ import annotations

from typing import Any, Callable

import obstore
import pytest
import torch

import fito
from fito.errors import CheckpointCorruptError
from fito.storage.s3 import S3Storage

JUNK = 48 << 20


class _CountsReads(S3Storage):
    """S3Storage that adds up the bytes its reads fetched (each ranged reader counts its own)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.readers: list[Any] = []

    def open_read(self, rel: str):  # type: ignore[no-untyped-def]
        r = super().open_read(rel)
        self.readers.append(r)
        return r

    @property
    def fetched(self) -> int:
        return sum(r.fetched for r in self.readers)


def _state(step: int) -> dict[str, Any]:
    torch.manual_seed(step)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    opt.step()
    return {"model": model, "optim": opt, "rng": fito.RNGState(), "data": fito.DataPosition(seed=step)}


def _moments(opt: torch.optim.Optimizer) -> list[tuple[float, ...]]:
    return [tuple(float(t.double().sum()) for t in s.values()) for s in opt.state.values()]


def _key(storage: S3Storage, step: int, suffix: str) -> str:
    return next(o.key for o in storage.list(f"epochs/{step:012d}") if o.key.endswith(suffix))


def _raw(storage: S3Storage, key: str) -> bytes:
    return bytes(obstore.get(storage.store, key).bytes())


def _put(storage: S3Storage, key: str, data: bytes) -> None:
    obstore.put(storage.store, key, data)  # unconditional: overwrites, as a stray tool would


def _flip(b: bytes) -> bytes:
    mid = len(b) // 2
    return b[:mid] + bytes([b[mid] ^ 0x10]) + b[mid + 1:]


# name -> (the object to damage, its damaged bytes from (its bytes, the same object of step 1, of another job))
CASES: dict[str, tuple[str, Callable[[bytes, bytes, bytes], bytes]]] = {
    "corrupted rank object": (".fito", lambda mine, old, foreign: _flip(mine)),
    "truncated rank object": (".fito", lambda mine, old, foreign: mine[: len(mine) // 2]),
    "foreign rank object": (".fito", lambda mine, old, foreign: foreign),
    "other step's rank object": (".fito", lambda mine, old, foreign: old),
    "oversized rank object": (".fito", lambda mine, old, foreign: mine + bytes(JUNK)),
    "corrupted manifest": ("manifest.json", lambda mine, old, foreign: _flip(mine)),
    "other step's manifest": ("manifest.json", lambda mine, old, foreign: old),
    "oversized manifest": ("manifest.json", lambda mine, old, foreign: bytes(JUNK)),
}


@pytest.mark.slow
def test_a_damaged_object_under_the_prefix_is_refused_before_anything_is_touched(seaweed, monkeypatch) -> None:
    import fito.ckpt.manifest
    import fito.format.manifest

    for module in (fito.format.manifest, fito.ckpt.manifest):  # 256 MiB by default: too big to upload here
        monkeypatch.setattr(module, "MAX_MANIFEST_BYTES", JUNK // 2)
    url = seaweed.new_url()
    storage = _CountsReads(url, storage_options=seaweed.options())
    ck = fito.Checkpointer(storage)
    for step in (1, 2):
        ck.save(step, _state(step))
    other = S3Storage(seaweed.new_url(), storage_options=seaweed.options())
    fito.Checkpointer(other).save(2, _state(7))  # another job: the same shapes, other values
    whole = sum(o.size for o in storage.list("epochs/000000000002"))

    for name, (suffix, damage) in CASES.items():
        key = _key(storage, 2, suffix)
        mine = _raw(storage, key)
        _put(storage, key, damage(mine, _raw(storage, _key(storage, 1, suffix)), _raw(other, _key(other, 2, suffix))))
        target = _state(5)
        model, opt = target["model"], target["optim"]
        before = {k: v.clone() for k, v in model.state_dict().items()}
        moments = _moments(opt)
        storage.readers.clear()
        with pytest.raises(CheckpointCorruptError) as caught:
            fito.Checkpointer(storage).restore(target)
        assert key.rsplit("/", 1)[-1] in str(caught.value) or "epoch 2" in str(caught.value), (name, caught.value)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), f"{name}: the model changed"
        assert _moments(opt) == moments, f"{name}: the optimizer changed"
        assert storage.fetched <= whole + (1 << 20), f"{name}: fetched {storage.fetched} bytes for {whole}"
        _put(storage, key, mine)  # repaired: the next case starts from a whole checkpoint
    got = _state(5)
    assert fito.Checkpointer(storage).restore(got) == 2
    assert all(torch.equal(a, b) for a, b in zip(got["model"].state_dict().values(),
                                                 _state(2)["model"].state_dict().values()))


def test_a_stray_object_in_the_decision_log_is_refused(seaweed) -> None:
    storage = S3Storage(seaweed.new_url(), storage_options=seaweed.options())
    fito.Checkpointer(storage).save(1, _state(1))
    _put(storage, "decisions.d/log/00000000000000000009", b'{"op": "decision"}')  # not the next slot
    target = _state(5)
    before = {k: v.clone() for k, v in target["model"].state_dict().items()}
    with pytest.raises(CheckpointCorruptError, match=r"decisions\.d/log.*contiguous slots"):
        fito.Checkpointer(storage).restore(target)
    assert all(torch.equal(before[k], v) for k, v in target["model"].state_dict().items())
