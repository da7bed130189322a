"""Early write-back of new local objects (fito.storage.writeback): the kernel is asked to start writing each
window as soon as it is written, the bytes are exactly what was written, and `FITO_WRITEBACK_BYTES=0` turns
it off. Durability is still only `persist` (an fsync), which the crash-state tests pin."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import fito
from fito import knobs
from fito.storage import LocalFS, writeback

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")


@linux
def test_each_full_window_is_handed_to_the_disk(tmp_path: Path) -> None:
    assert writeback.available()
    fs = LocalFS(tmp_path)
    payload = os.urandom(5 * 4096 + 100)
    with knobs.override(FITO_WRITEBACK_BYTES=8192):
        with fs.create("obj") as f:
            view = memoryview(payload)
            for start in range(0, len(view), 3000):  # writes that do not line up with the windows
                f.write(view[start:start + 3000])
            requests = f.requests
    assert requests == len(payload) // 8192  # 20580 bytes: two full windows of 8192 were started
    fs.persist("obj")
    assert (tmp_path / "obj").read_bytes() == payload


@linux
def test_zero_turns_it_off(tmp_path: Path) -> None:
    fs = LocalFS(tmp_path)
    with knobs.override(FITO_WRITEBACK_BYTES=0):
        with fs.create("obj") as f:
            f.write(bytes(1 << 20))
            assert f.requests == 0
    assert (tmp_path / "obj").stat().st_size == 1 << 20


def test_a_negative_window_is_refused() -> None:
    with knobs.override(FITO_WRITEBACK_BYTES=-1), pytest.raises(ValueError, match="FITO_WRITEBACK_BYTES=-1"):
        knobs.writeback_bytes()


def test_start_on_something_it_cannot_write_back_is_only_a_miss(tmp_path: Path) -> None:
    r, w = os.pipe()  # sync_file_range refuses a pipe (ESPIPE): no exception, the save goes on
    try:
        assert writeback.start(w, 0, 4096) is False
    finally:
        os.close(r)
        os.close(w)


@linux
def test_a_save_writes_back_while_it_writes(tmp_path: Path) -> None:
    """A Checkpointer's objects go through the write-back file, and what it wrote restores bit-exactly."""
    class Counting(LocalFS):
        def create(self, rel: str):  # type: ignore[no-untyped-def]
            f = super().create(rel)
            files.append(f)
            return f

    files: list[writeback.WritebackFile] = []
    weights = {"w": torch.randn(1 << 20)}  # 4 MiB
    with knobs.override(FITO_WRITEBACK_BYTES=1 << 20, FITO_BLOCK_BYTES=1 << 20), fito.Checkpointer(Counting(tmp_path / "ck"), progress=False) as ck:
        ck.save(1, {"state": weights})
        assert max(f.requests for f in files) >= 3  # 4 MiB written in 1 MiB blocks: a window after each
        got = {"state": {"w": torch.zeros(1 << 20)}}
        assert ck.restore(got) == 1
    assert torch.equal(got["state"]["w"], weights["w"])
