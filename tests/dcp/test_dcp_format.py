"""Bytes-level pieces of the sharded format and the pure coverage check: strict, bounded manifest parsing;
block arithmetic; every chunk vouched for exactly once."""
from __future__ import annotations

import json

import pytest

from fito.errors import UnsafeCheckpointError
from fito.format import manifest as fmt
from fito.format.objects import ObjectHeader, block_count, block_digest, block_span, check_header
from fito.protocol.coverage import Voucher, check_coverage
from fito.protocol.messages import manifest_path, shard_path

EPOCH, ATTEMPT, BLOCK = 7, "f3-abc-1234", 64


def _piece(rank: int, offset: int, length: int) -> fmt.Piece:
    return fmt.Piece(rank, offset, length, tuple("0" * 32 for _ in range(block_count(length, BLOCK))), EPOCH)


def _manifest() -> fmt.ShardedManifest:
    objects = tuple(fmt.ObjectEntry(r, shard_path(EPOCH, ATTEMPT, r), 1024) for r in range(2))
    w = fmt.TensorEntry("model.w", "float32", (4, 10), (
        fmt.Chunk((0, 0), (2, 10), _piece(0, 64, 80)), fmt.Chunk((2, 0), (2, 10), _piece(1, 64, 80))))
    return fmt.ShardedManifest(EPOCH, ATTEMPT, "xxh3-128", BLOCK, objects, {"model.w": w},
                               {"meta.epoch": _piece(0, 192, 30)}, {"model.w": ("model", "w"), "meta.epoch": ("meta", "epoch")})


def _doc() -> dict:
    return json.loads(fmt.build(_manifest()))


def _parse(doc: dict) -> fmt.ShardedManifest:
    return fmt.parse(json.dumps(doc).encode(), where=manifest_path(EPOCH, ATTEMPT), epoch=EPOCH, attempt=ATTEMPT)


def test_manifest_round_trips():
    m = _parse(_doc())
    assert m.tensors == _manifest().tensors and m.values == _manifest().values and m.flatten == _manifest().flatten
    assert m.world_size == 2


def _hostile(edit) -> str:
    doc = _doc()
    edit(doc)
    with pytest.raises(UnsafeCheckpointError) as info:
        _parse(doc)
    return str(info.value)


@pytest.mark.parametrize("edit, says", [
    (lambda d: d["objects"][1].update(file="../../etc/passwd"), "rank 1 object"),
    (lambda d: d["objects"][0].update(file=shard_path(EPOCH - 1, ATTEMPT, 0)), "rank 0 object"),
    (lambda d: d["tensors"][0]["chunks"][0].update(tag=EPOCH - 1), "epoch tag 7"),
    (lambda d: d["tensors"][0]["chunks"][0].update(length=79), "80 bytes for float32"),
    (lambda d: d["tensors"][0]["chunks"][0].update(offset=1000), "inside the 1024-byte object"),
    (lambda d: d["tensors"][0]["chunks"][0].update(offset=65), "aligned range"),
    (lambda d: d["tensors"][0]["chunks"][0]["blocks"].pop(), "2 block hashes"),
    (lambda d: d["tensors"][0]["chunks"][0]["blocks"].__setitem__(0, "zz" * 16), "hex block hash"),
    (lambda d: d["tensors"][0]["chunks"].pop(), "covering all 40 elements"),
    (lambda d: d["tensors"][0].update(dtype="object"), "a dtype in"),
    # the right volume, inside the shape, but overlapping: rows 2..3 would never be read
    (lambda d: d["tensors"][0]["chunks"][1].update(offsets=[1, 0]), "chunks that do not overlap"),
    (lambda d: d["tensors"][0]["chunks"][1].update(rank=5), "a rank below 2"),
    (lambda d: d["values"].append(dict(d["values"][0])), "one entry for 'meta.epoch'"),
    (lambda d: d.update(format="fito-manifest/1"), "Checkpointer.restore"),
    (lambda d: d.update(attempt="f9-other"), "attempt f3-abc-1234"),
    (lambda d: d["flatten"].append(["x", [True]]), "flatten path parts"),
    (lambda d: d.update(block_bytes="64"), "block_bytes"),
])
def test_hostile_or_damaged_manifests_are_refused_with_what_was_expected(edit, says):
    assert says in _hostile(edit)


def test_deep_nesting_and_non_json_are_refused_not_a_recursion_error():
    where = manifest_path(EPOCH, ATTEMPT)
    for data in (b"[" * 200_000 + b"]" * 200_000, b'{"format": NaN}', b"\xff\xfe", b'{"a": 1, "a": 2}'):
        with pytest.raises(UnsafeCheckpointError):
            fmt.parse(data, where=where, epoch=EPOCH, attempt=ATTEMPT)


def test_block_span_covers_exactly_the_blocks_holding_a_range():
    assert block_span(0, 64, 200, 64) == (0, 1)
    assert block_span(63, 65, 200, 64) == (0, 2)
    assert block_span(130, 200, 200, 64) == (2, 4)
    assert block_span(0, 0, 0, 64) == (0, 1)  # an empty item still has its (empty) block vouched for
    assert block_count(0, 64) == 1 and block_count(129, 64) == 3
    with pytest.raises(ValueError):
        block_span(10, 201, 200, 64)


def test_object_header_names_each_field_that_differs():
    h = ObjectHeader(EPOCH, 1, 3, ATTEMPT)
    assert check_header(h.pack(), h) == []
    found = {what for what, _, _ in check_header(ObjectHeader(EPOCH + 1, 0, 3, "f9-x").pack(), h)}
    assert found == {"epoch tag", "rank", "attempt"}
    assert check_header(b"short", h)[0][0] == "header length"
    assert block_digest("xxh3-128", b"a") != block_digest("xxh3-128", b"b")


def test_coverage_every_chunk_exactly_once_with_its_size_and_tag():
    expected = {("w", (0,)): 40, ("w", (10,)): 40, ("meta", None): None}
    good = [Voucher(0, ("w", (0,)), 40, EPOCH), Voucher(1, ("w", (10,)), 40, EPOCH), Voucher(0, ("meta", None), 13, EPOCH)]
    assert check_coverage(EPOCH, expected, good) == []
    problems = check_coverage(EPOCH, expected, good[:1] + [Voucher(1, ("w", (0,)), 40, EPOCH)])
    assert any("not vouched for by any rank" in p and "w@[10]" in p and "meta" in p for p in problems)
    assert any("vouched for twice" in p and "ranks 0 and 1" in p for p in problems)
    wrong = check_coverage(EPOCH, expected, [Voucher(0, ("w", (0,)), 39, EPOCH), Voucher(1, ("w", (10,)), 40, EPOCH - 1),
                                             Voucher(0, ("meta", None), 1, EPOCH), Voucher(0, ("x", None), 1, EPOCH)])
    assert any("39 bytes, expected 40" in p and "epoch tag 6" in p for p in wrong)
    assert any("not in the plan" in p and "x" in p for p in wrong)
