"""Small plain tensors packed into a few DCP items per entry (fito.ckpt.packs): a bit-exact round trip of every
dtype and layout; big tensors and packing turned off stay items of their own; a checkpoint written before
packs existed still restores; a flipped bit in a pack and forged pack layouts are refused with the caller's
state untouched; `fito inspect` lists what a pack holds; on 2 gloo ranks a replicated entry's pack is written
once and a rank-local entry's packs are per rank and follow the rank_local policy on another world size."""
from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import fito
from fito import knobs
from fito.plan.tree import DTYPES
from fito.format.hashing import digest
from fito.format.objects import ALIGN, block_digest
from fito.testing.scenarios import run_scenarios

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "fixtures"))
from pre_packs_state import state as pre_packs_state  # noqa: E402


# ---------------------------------------------------------------- helpers
def _manifest_path(root: Path) -> Path:
    (path,) = sorted((root / "epochs").glob("*/*/manifest.json"))[-1:]
    return path


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads(_manifest_path(root).read_bytes())


def _bytes(x: Any) -> bytes:
    if isinstance(x, np.ndarray):
        return x.tobytes()
    return x.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b""


def _same(a: Any, b: Any) -> bool:
    """Equal bit for bit (NaNs and every float8 byte included), with the same type, dtype and shape."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and _bytes(a) == _bytes(b)
    if isinstance(a, torch.Tensor):
        return (type(b) is torch.Tensor and a.dtype == b.dtype and a.shape == b.shape and _bytes(a) == _bytes(b))
    return a == b


def _owned(t: Any) -> bool:
    if isinstance(t, np.ndarray):
        return t.flags.owndata and t.flags.c_contiguous
    return (type(t) is torch.Tensor and t.is_contiguous() and t.storage_offset() == 0 and t._base is None
            and t.untyped_storage().nbytes() == t.numel() * t.element_size())


def mixed() -> dict[str, Any]:
    """Small tensors of every dtype fito stores (random bytes: NaNs and odd float8 codes too), 0-dim, empty,
    non-contiguous views, numpy arrays, and big tensors that are never packed."""
    g = torch.Generator().manual_seed(3)
    out: dict[str, Any] = {}
    for name, dtype in DTYPES.items():
        size = dtype.itemsize
        raw = torch.randint(0, 256, (5 * size,), dtype=torch.uint8, generator=g)
        out[name] = raw.view(dtype) if dtype != torch.bool else raw % 2 == 1
    base = torch.randn(6, 8, generator=g)
    out.update({
        "scalar": torch.tensor(2.5), "int_scalar": torch.tensor(-3, dtype=torch.int64), "empty": torch.zeros(0, 4),
        "empty_int": torch.zeros(3, 0, dtype=torch.int16), "transposed": base.t(), "strided": base[::2, 1::3],
        "sliced": base[2:4], "expanded": torch.arange(3.0).expand(4, 3),
        "np": {"f4": np.arange(7, dtype=np.float32), "i8": np.arange(-3, 3, dtype=np.int64).reshape(2, 3),
               "bool": np.array([True, False, True]), "c16": np.array([1 + 2j, -0.5j]), "scalar": np.array(4.25),
               "big_endian": np.arange(4, dtype=">f8"), "empty": np.zeros((0, 2), dtype=np.uint16),
               "big": np.arange(20000, dtype=np.float64)},
        "big": torch.randn(40000, generator=g), "big_half": torch.randn(300, 200, generator=g).half(),
        "many": [torch.full((16,), float(i)) for i in range(300)],
    })
    return out


def _restored(root: Path, target: dict[str, Any] | None = None) -> dict[str, Any]:
    state = target if target is not None else {"mix": None}
    with fito.Checkpointer(root, progress=False) as ck:
        assert ck.restore(state) == 1
    return state


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("pack_bytes", [None, 4096])
def test_small_tensors_of_every_kind_round_trip_bit_exact_through_packs(tmp_path: Path, pack_bytes: int | None) -> None:
    saved = mixed()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 300))  # 300x8 floats: 9,600 B, packed
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    with knobs.override(**({"FITO_PACK_BYTES": pack_bytes} if pack_bytes else {})):
        with fito.Checkpointer(tmp_path, progress=False) as ck:
            ck.save(1, {"mix": saved, "model": model, "optim": opt})
    names = {t["fqn"]: t for t in _manifest(tmp_path)["tensors"]}
    packs = sorted(n for n in names if n.startswith("mix/__pack__/"))
    assert packs and all(names[p]["dtype"] == "uint8" for p in packs)
    if pack_bytes:
        assert len(packs) > 2 and all(names[p]["shape"][0] <= pack_bytes for p in packs)
    else:
        assert packs == ["mix/__pack__/0"]
    assert {"mix/big", "mix/big_half", "mix/np/big"} <= set(names)  # over 64 KiB: items of their own
    assert not {"mix/float32", "mix/scalar", "mix/np/f4", "mix/many/7", "model/0/weight"} & set(names)
    assert "model/__pack__/0" in names and "optim/__pack__/0" in names

    torch.manual_seed(1)
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 300))
    opt2 = torch.optim.AdamW(model2.parameters())
    state = _restored(tmp_path, {"mix": None, "model": model2, "optim": opt2})
    assert _same(saved, state["mix"])
    leaves = [*state["mix"].values(), *state["mix"]["np"].values(), *state["mix"]["many"]]
    assert len(leaves) > 300
    assert all(_owned(t) for t in leaves if not isinstance(t, (dict, list)))
    assert _same(dict(model.state_dict()), dict(model2.state_dict()))
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert _same(dict(opt.state[p]), dict(opt2.state[p2]))
        assert all(_owned(t) for t in opt2.state[p2].values())


def test_packing_off_writes_what_fito_wrote_before_packs(tmp_path: Path) -> None:
    saved = mixed()
    with knobs.override(FITO_PACK_LEAF_BYTES=0):
        with fito.Checkpointer(tmp_path, progress=False) as ck:
            ck.save(1, {"mix": saved})
    names = {t["fqn"] for t in _manifest(tmp_path)["tensors"]}
    assert not [n for n in names if "__pack__" in n] and {"mix/float32", "mix/np/f4", "mix/many/7"} <= names
    assert _same(saved, _restored(tmp_path)["mix"])


def test_a_checkpoint_written_before_packs_still_restores(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    shutil.copytree(HERE / "fixtures" / "pre_packs", root)  # made by fixtures/make_pre_packs.py with main's code
    assert not [t for t in _manifest(root)["tensors"] if "__pack__" in t["fqn"]]
    expected = pre_packs_state()
    torch.manual_seed(9)
    state = {"model": torch.nn.Linear(3, 2), "mix": None}
    _restored(root, state)
    assert _same(expected["mix"], state["mix"])
    assert _same(dict(expected["model"].state_dict()), dict(state["model"].state_dict()))


def test_a_one_tensor_entry_is_not_packed_and_a_tensor_named_like_a_pack_keeps_its_own_item(tmp_path: Path) -> None:
    saved = {"__pack__": [torch.ones(2), torch.zeros(3)], "x": torch.arange(4)}  # user paths __pack__/0, __pack__/1
    with fito.Checkpointer(tmp_path, progress=False) as ck:
        ck.save(1, {"mix": saved, "one": {"w": torch.ones(3)}})
    names = {t["fqn"] for t in _manifest(tmp_path)["tensors"]}
    assert "one/w" in names and "mix/__pack__/0" in names
    assert _same(saved, _restored(tmp_path, {"mix": None, "one": None})["mix"])


# ---------------------------------------------------------------- damage and forgeries
def small_state() -> dict[str, Any]:
    return {"mix": {f"t{i}": torch.full((4,), float(i)) for i in range(8)} | {"n": np.arange(3, dtype=np.int16)}}


def _untouched_after(root: Path, error: type[BaseException]) -> str:
    sentinel = object()
    state = {"mix": sentinel}
    with pytest.raises(error) as info:
        with fito.Checkpointer(root, progress=False) as ck:
            ck.restore(state)
    assert state["mix"] is sentinel
    return str(info.value)


def test_a_flipped_bit_inside_a_pack_is_refused_and_nothing_is_touched(tmp_path: Path) -> None:
    with fito.Checkpointer(tmp_path, progress=False) as ck:
        ck.save(1, small_state())
    m = _manifest(tmp_path)
    (pack,) = [t for t in m["tensors"] if t["fqn"] == "mix/__pack__/0"]
    obj = tmp_path / m["objects"][0]["file"]
    data = bytearray(obj.read_bytes())
    data[pack["chunks"][0]["offset"] + 37] ^= 0x04
    obj.write_bytes(bytes(data))
    message = _untouched_after(tmp_path, fito.CheckpointCorruptError)
    assert "mix/__pack__/0" in message and "block" in message


def _forge_doc(root: Path, edit: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
    """Rewrite entry "mix"'s document with `edit(doc, manifest)`, consistently: the new value appended to the
    object with true block hashes, its piece and the object size in the manifest, the manifest re-vouched in
    the decision log. Only the layout is hostile."""
    path = _manifest_path(root)
    m = json.loads(path.read_bytes())
    (value,) = [v for v in m["values"] if v["fqn"] == "__fito__/mix"]
    obj = root / m["objects"][0]["file"]
    data = bytearray(obj.read_bytes())
    wrapped = json.loads(bytes(data[value["offset"]:value["offset"] + value["length"]]))
    doc = json.loads(wrapped["tree"]["v"])
    edit(doc, m)
    wrapped["tree"]["v"] = json.dumps(doc)
    raw = json.dumps(wrapped).encode()
    data += b"\0" * (-len(data) % ALIGN)
    value.update(offset=len(data), length=len(raw),
                 blocks=[block_digest(m["hash"], raw[b:b + m["block_bytes"]]) for b in range(0, len(raw), m["block_bytes"])])
    data += raw
    obj.write_bytes(bytes(data))
    m["objects"][0]["size"] = len(data)
    text = json.dumps(m).encode()
    path.write_bytes(text)
    with sqlite3.connect(root / "decisions.sqlite") as db:
        (old,) = db.execute("SELECT manifest_hash FROM decisions WHERE outcome = 'commit'").fetchone()
        db.execute("UPDATE decisions SET manifest_hash = ? WHERE outcome = 'commit'", (digest(old.split(":")[0], text),))


def _members(doc: dict[str, Any]) -> list[list[int]]:
    return doc["packs"][0]["members"]


FORGERIES: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "offset past the pack": lambda doc, m: _members(doc)[-1].__setitem__(1, doc["packs"][0]["bytes"]),
    "huge offset": lambda doc, m: _members(doc)[0].__setitem__(1, 1 << 61),
    "overlapping members": lambda doc, m: _members(doc)[1].__setitem__(1, 8),
    "wrong length": lambda doc, m: _members(doc)[2].__setitem__(2, 12),
    "leaf index out of range": lambda doc, m: _members(doc)[0].__setitem__(0, 99),
    "one leaf packed twice": lambda doc, m: _members(doc)[1].__setitem__(0, _members(doc)[0][0]),
    "pack bigger than the manifest's": lambda doc, m: doc["packs"][0].__setitem__("bytes", doc["packs"][0]["bytes"] + 64),
    "a member left out of the pack": lambda doc, m: _members(doc).pop(),
    "an unknown field": lambda doc, m: doc["packs"][0].__setitem__("align", 8),
    "a pack the manifest lacks": lambda doc, m: doc["packs"].append({"bytes": 0, "members": []}),
    "packs in an old-format document": lambda doc, m: doc.__setitem__("format", "fito-entry/1"),
    "an old-format document without its packs": lambda doc, m: (doc.pop("packs"), doc.__setitem__("format", "fito-entry/1")),
    "members not a list": lambda doc, m: doc["packs"][0].__setitem__("members", {"0": [0, 0, 16]}),
    "a negative offset": lambda doc, m: _members(doc)[0].__setitem__(1, -16),
    "a bool for an int": lambda doc, m: _members(doc)[0].__setitem__(0, True),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_pack_layout_is_refused_before_anything_is_read(tmp_path: Path, forgery: str) -> None:
    with fito.Checkpointer(tmp_path, progress=False) as ck:
        ck.save(1, small_state())
    _forge_doc(tmp_path, FORGERIES[forgery])
    _untouched_after(tmp_path, fito.UnsafeCheckpointError)


def test_a_tensor_named_like_a_pack_in_a_packed_document_is_refused(tmp_path: Path) -> None:
    with fito.Checkpointer(tmp_path, progress=False) as ck:
        ck.save(1, {"mix": {"__pack__": [torch.ones(2), torch.zeros(3)], "x": torch.arange(4), "big": torch.zeros(20000)}})

    def rename(doc: dict[str, Any], m: dict[str, Any]) -> None:  # "big" (its own item) renamed to pack 0's name
        doc["keys"][doc["keys"].index("big")] = "__pack__/0"
    _forge_doc(tmp_path, rename)
    _untouched_after(tmp_path, fito.UnsafeCheckpointError)


# ---------------------------------------------------------------- inspect
def test_inspect_lists_what_each_pack_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fito.cli import main
    with fito.Checkpointer(tmp_path, progress=False) as ck:
        ck.save(1, small_state())
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["result"]
    index = row["index"]
    (pack,) = index["packs"]
    assert pack["fqn"] == "mix/__pack__/0" and pack["members"] == 9
    rows = {t["fqn"]: t for t in index["tensors"]}
    assert rows["mix/t3"]["pack"] == "mix/__pack__/0" and rows["mix/t3"]["shape"] == [4] and rows["mix/t3"]["bytes"] == 16
    assert rows["mix/n"]["dtype"] == "numpy <i2"
    assert main(["inspect", str(tmp_path), "--tensors"]) == 0
    text = capsys.readouterr().out
    assert "1 pack of 9 small tensors" in text and "mix/t3" in text


# ---------------------------------------------------------------- two gloo ranks
@pytest.mark.multiproc
@pytest.mark.slow
def test_two_ranks_write_a_replicated_pack_once_and_rank_local_packs_per_rank(tmp_path: Path) -> None:
    env = {"FITO_BLOCK_BYTES": "4096"}
    saved = run_scenarios("pack_ranks", "save", tmp_path, 2, here=HERE, env=env, timeout=300)
    for rank in (0, 1):
        r = saved["save"][rank]
        assert "shared/__pack__/0" in r["tensors"] and f"__rank__/{rank}/mine/__pack__/0" in r["tensors"]
        assert not [t for t in r["tensors"] if t.startswith("shared/") and "__pack__" not in t]
        assert not [t for t in r["tensors"] if t.startswith("__rank__") and "shared" in t]
        assert r["pack_bytes"] == 200 * 256 * 4
        # bytes on disk: the 200 KiB pack once, in one rank's object (the rest, ~60 KB: two RNG states with
        # their documents, the small per-rank packs, headers); written by both it would be over 400 KiB
        assert r["pack_bytes"] < max(r["files"].values()) and sum(r["files"].values()) < 1.5 * r["pack_bytes"], r["files"]
        same = saved["restore_same"][rank]
        assert same["step"] == 1 and same["shared"] and same["mine"] and same["rng"]
    other = run_scenarios("pack_ranks", "restore", tmp_path, 1, here=HERE, env=env, timeout=300)["restore_other"][0]
    assert other["error"].startswith("StateMismatchError") and "'mine'" in other["error"] and other["untouched"]
    assert other["reset"] == {"shared": True, "mine": ["keep"]}
    assert other["mapped"] == {"shared": True, "mine": True}
