"""How fito.dcp.Reader reads (one process): each object is opened once per load, not once per item; with
scratch_targets a chunk read whole lands in its target and is verified there; without it (a user's live
state) a damaged block still leaves every target untouched. Faults at the storage seam."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.distributed.checkpoint as dcp

import fito.dcp
from fito.coord.sqlite import SqliteDecisionStore
from fito.commit.manifests import load_sharded_manifest
from fito.errors import CheckpointCorruptError
from fito.storage.localfs import LocalFS

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class CountingFS(LocalFS):
    """LocalFS that counts how often each file is opened for reading."""

    def __init__(self, root) -> None:
        super().__init__(root, create=False)
        self.opens: Counter[str] = Counter()

    def open_read(self, rel: str):
        self.opens[rel] += 1
        return super().open_read(rel)


def tensors(n: int, fill: float | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"t{i}": (torch.randn(3, 5) if fill is None else torch.full((3, 5), fill)) for i in range(n)}


def saved(root, n: int) -> dict[str, torch.Tensor]:
    s = tensors(n)
    dcp.save(s, storage_writer=fito.dcp.Writer(root, 1), planner=fito.dcp.SavePlanner())
    return s


def object_file(root) -> tuple[str, int]:
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    d = store.committed()[-1]
    store.close()
    m = load_sharded_manifest(LocalFS(root, create=False), d)
    piece = next(c.piece for t in m.tensors.values() for c in t.chunks if c.piece.length)
    return m.objects[0].file, piece.offset + piece.length // 2


def test_each_object_is_opened_once_per_load_not_once_per_item(tmp_path):
    want = saved(tmp_path, 40)
    fs = CountingFS(tmp_path)
    target = tensors(40, fill=0.0)
    dcp.load(target, storage_reader=fito.dcp.Reader(fs), planner=fito.dcp.LoadPlanner())
    assert all(torch.equal(target[k], v) for k, v in want.items())
    obj, _ = object_file(tmp_path)
    assert fs.opens[obj] <= 2, fs.opens  # its size check, then one open for the header and all 40 items (was 42)


@pytest.mark.parametrize("scratch", [False, True])
def test_scratch_targets_are_filled_in_place_and_a_flipped_bit_is_refused_either_way(tmp_path, scratch):
    want = saved(tmp_path, 3)
    target = tensors(3, fill=0.0)
    ptrs = {k: t.data_ptr() for k, t in target.items()}
    dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path, scratch_targets=scratch), planner=fito.dcp.LoadPlanner())
    assert all(torch.equal(target[k], v) and target[k].data_ptr() == ptrs[k] for k, v in want.items())

    obj, at = object_file(tmp_path)
    with open(tmp_path / obj, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))
    target = tensors(3, fill=-1.0)
    with pytest.raises(BaseException) as info:  # DCP wraps it in CheckpointException (a BaseException)
        dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path, scratch_targets=scratch), planner=fito.dcp.LoadPlanner())
    failures = getattr(info.value, "failures", None)
    err = next(iter(failures.values()))[0] if failures else info.value
    assert isinstance(err, CheckpointCorruptError) and "block" in str(err)
    if not scratch:  # a user's live state: nothing touched
        assert all(torch.equal(t, torch.full((3, 5), -1.0)) for t in target.values())


@pytest.mark.parametrize("damaged_block", [0, 5, 12])
def test_long_spans_are_read_in_runs_hashed_beside_the_next_run_and_every_block_is_checked(tmp_path, damaged_block):
    from fito import knobs

    want = {"w": torch.randn(13 * 256)}  # 13 blocks of 1 KiB: runs of 4 blocks, the last one short
    with knobs.override(FITO_BLOCK_BYTES=1024):
        dcp.save(want, storage_writer=fito.dcp.Writer(tmp_path, 1), planner=fito.dcp.SavePlanner())
    with knobs.override(FITO_READ_RUN_BYTES=4096 + 100):  # rounded down to whole blocks
        for scratch in (False, True):
            target = {"w": torch.zeros(13 * 256)}
            dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path, scratch_targets=scratch), planner=fito.dcp.LoadPlanner())
            assert torch.equal(target["w"], want["w"])
        obj, _ = object_file(tmp_path)
        piece = load_sharded_manifest(LocalFS(tmp_path, create=False), _decision(tmp_path)).tensors["w"].chunks[0].piece
        with open(tmp_path / obj, "r+b") as f:
            f.seek(piece.offset + damaged_block * 1024 + 7)
            byte = f.read(1)[0]
            f.seek(piece.offset + damaged_block * 1024 + 7)
            f.write(bytes([byte ^ 0x01]))
        target = {"w": torch.full((13 * 256,), -1.0)}
        with pytest.raises(BaseException) as info:
            dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path), planner=fito.dcp.LoadPlanner())
    failures = getattr(info.value, "failures", None)
    err = next(iter(failures.values()))[0] if failures else info.value
    assert isinstance(err, CheckpointCorruptError) and f"block {damaged_block}" in str(err), err
    assert torch.equal(target["w"], torch.full((13 * 256,), -1.0))


def _decision(root):
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    try:
        return store.committed()[-1]
    finally:
        store.close()
