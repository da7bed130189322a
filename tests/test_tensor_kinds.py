"""Tensors fito cannot save are refused at save, naming the entry, before anything is written; every dtype of
torch 2.13 that users train with round-trips bit-exactly (issue 9, item 14). State trees are bounded and
typed: deep nesting, type confusion and absurd shapes are FitoErrors, never RecursionError/TypeError/KeyError."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import fito
from fito.ckpt.per_rank_read import _array, decode_state, parse_state
from fito.plan.tree import array_specs, decode

NEW_DTYPES = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
              torch.float8_e8m0fnu, torch.float4_e2m1fn_x2, torch.uint16, torch.uint32, torch.uint64, torch.complex32]


def _random(dtype: torch.dtype, shape=(3, 5)) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    n = int(np.prod(shape)) * dtype.itemsize
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g).view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", NEW_DTYPES, ids=str)
def test_new_dtypes_round_trip_bit_exactly(ckdir, dtype):
    warnings.filterwarnings("ignore", "ComplexHalf support is experimental")
    t = _random(dtype)
    ck = fito.Checkpointer(ckdir)
    ck.save(1, {"t": t, "nested": {"x": [t[1]]}})
    out = {"t": torch.zeros(3, 5, dtype=dtype), "nested": None}
    assert ck.restore(out) == 1
    assert out["t"].dtype == dtype and torch.equal(out["t"].view(torch.uint8), t.view(torch.uint8))
    back = out["nested"]["x"][0]
    assert back.dtype == dtype and torch.equal(back.view(torch.uint8), t[1].contiguous().view(torch.uint8))


def test_a_float8_model_round_trips(ckdir):
    model = torch.nn.Linear(4, 4).to(torch.float8_e4m3fn)
    ck = fito.Checkpointer(ckdir)
    ck.save(1, {"model": model})
    fresh = torch.nn.Linear(4, 4).to(torch.float8_e4m3fn)
    ck.restore({"model": fresh})
    assert torch.equal(fresh.weight.view(torch.uint8), model.weight.view(torch.uint8))


def _sparse() -> torch.Tensor:
    return torch.eye(3).to_sparse()


REFUSED = {
    "sparse": (lambda: _sparse(), r"model/0.weight: sparse_coo tensors are not supported; convert with .to_dense\(\)"),
    "sparse-csr": (lambda: torch.eye(3).to_sparse_csr(), r"sparse_csr tensors are not supported; convert with .to_dense"),
    "nested": (lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]), r"nested tensors are not supported"),
    "meta": (lambda: torch.empty(3, device="meta"), r"meta tensors have no data to save"),
    "quantized": (lambda: torch.quantize_per_tensor(torch.zeros(3), 0.1, 0, torch.qint8), r"quantized tensors are not supported"),
    "int4": (lambda: torch.empty(3, dtype=torch.int4), r"tensors of dtype int4 are not supported"),
    "lazy": (lambda: torch.nn.UninitializedParameter(), r"tensor subclass UninitializedParameter is not supported"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_unsupported_tensors_are_refused_at_save_naming_the_entry(ckdir, kind):
    warnings.filterwarnings("ignore", category=UserWarning)
    make, match = REFUSED[kind]
    t = make()
    ck = fito.Checkpointer(ckdir)
    state = {"ok": torch.ones(2), "model": {"0.weight": t}} if kind == "sparse" else {"ok": torch.ones(2), "bad": {"x": [t]}}
    where = "model/0.weight" if kind == "sparse" else "bad/x/0"
    with pytest.raises(fito.StateMismatchError, match=match) as info:
        ck.save(1, state)
    assert str(info.value).startswith(where)
    assert ck.committed() == [] and not (ckdir / "epochs").exists()  # nothing written


def test_a_lazy_module_is_refused_until_it_is_initialized(ckdir):
    with pytest.raises(fito.StateMismatchError, match=r"^model/weight: tensor subclass UninitializedParameter"):
        fito.Checkpointer(ckdir).save(1, {"model": torch.nn.LazyLinear(3)})


def test_conj_and_neg_views_are_resolved_and_restore_their_values(ckdir):
    z = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    conj, neg = z.conj(), z.conj().imag  # a conjugate view and a negative view
    assert conj.is_conj() and neg.is_neg()
    ck = fito.Checkpointer(ckdir)
    ck.save(1, {"conj": conj, "neg": neg})
    out = {"conj": torch.zeros(2, dtype=torch.complex64), "neg": torch.zeros(2)}
    ck.restore(out)
    assert torch.equal(out["conj"], conj.resolve_conj()) and torch.equal(out["neg"], neg.resolve_neg())


def test_numpy_arrays_fito_could_not_read_back_are_refused_at_save(ckdir):
    ck = fito.Checkpointer(ckdir)
    for bad in (np.array([object()]), np.zeros(2, dtype=np.clongdouble), np.zeros(2, dtype="i4,i4")):
        with pytest.raises(fito.StateMismatchError, match=r"^a/0: numpy arrays of dtype"):
            ck.save(1, {"a": [bad]})
    assert ck.committed() == []


def test_deep_or_cyclic_state_is_refused_at_save(ckdir):
    deep: list = []
    node = deep
    for _ in range(150):
        node.append([])
        node = node[0]
    cyclic: list = []
    cyclic.append(cyclic)
    ck = fito.Checkpointer(ckdir)
    for value in (deep, cyclic):
        with pytest.raises(fito.StateMismatchError, match=r"^v/0/0.*nested deeper than 100 levels"):
            ck.save(1, {"v": value})
    ck.save(1, {"v": [[[[1]]]]})  # ordinary nesting is fine


def _deep(tag: str, levels: int) -> dict:
    node: dict = {"v": 1}
    for _ in range(levels):
        node = {tag: [node]} if tag in ("l", "t") else {"d": {"k": node}}
    return node


@pytest.mark.parametrize("tag", ["l", "d"])
def test_a_deep_decoded_tree_is_unsafe_not_a_recursion_error(tag):
    tree = _deep(tag, 5000)
    with pytest.raises(fito.UnsafeCheckpointError, match="levels of nesting"):
        decode(tree, [], "tree")
    with pytest.raises(fito.UnsafeCheckpointError, match="levels of nesting"):
        array_specs(tree, {})


TYPE_CONFUSION = [
    ({"d": [{"v": 1}]}, "a known node tag"),                    # a "d" node that is a list
    ({"m": [[{"l": []}, {"v": 1}]]}, "hashable mapping key"),    # a mapping key that is a list
    ({"m": [[{"d": {}}, {"v": 1}]]}, "hashable mapping key"),
    ({"m": [{"v": 1}]}, r"a \[key, value\] pair"),
    ({"T": True}, "tensor index"),                              # a bool index
    ({"f": ["nan"]}, "inf, -inf or nan"),
    ({"v": {"x": 1}}, "a JSON scalar"),
    ([], "a tagged node"),
]


@pytest.mark.parametrize("node,match", TYPE_CONFUSION)
def test_type_confusion_in_a_decoded_tree_is_unsafe(node, match):
    with pytest.raises(fito.UnsafeCheckpointError, match=match):
        decode(node, [], "tree")


SPECS = [
    ({"T": 0, "dtype": "float32", "shape": [True, 2]}, "a shape of non-negative ints"),
    ({"T": 0, "dtype": "float32", "shape": [2 ** 40, 2 ** 40]}, "elements"),
    ({"T": 0, "dtype": "float32", "shape": [0, 2 ** 70]}, "elements"),
    ({"T": 0, "dtype": ["float32"], "shape": [1]}, "a torch dtype"),
    ({"N": 0, "dtype": "O", "shape": [1]}, "numeric numpy dtype"),
    ({"l": [{"T": 0, "dtype": "float32", "shape": [1]}, {"T": 0, "dtype": "int8", "shape": [4]}]}, "each array index used once"),
]


@pytest.mark.parametrize("node,match", SPECS)
def test_bad_array_specs_are_unsafe_before_any_allocation(node, match):
    with pytest.raises(fito.UnsafeCheckpointError, match=match):
        array_specs(node, {})


def _decode_doc(doc: bytes, payloads: list[bytes]):
    """The read path's decoding steps over in-memory units: parse the tree, size-check and fill each array."""
    where = "rank-00000.fito"
    parsed, specs = parse_state(doc, len(payloads), where=where)
    arrays = []
    for i, (spec, payload) in enumerate(zip(specs, payloads)):
        array, buffer = _array(*spec, len(payload), where=where, unit=f"u{i}")()
        buffer[:] = payload
        arrays.append(array)
    return decode_state(parsed, arrays, where=where)


@pytest.mark.parametrize("doc,payload", [
    (b'{"format":"fito-state/1","tree":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"\0" * 8),  # json.loads recursion
    (json.dumps({"format": "fito-state/1", "tree": _deep("l", 400)}).encode(), b"\0" * 8),
    # 2**31 * 2**31 * 4 elements: 2**64, which an int64 product wraps to 0, matching an empty payload
    (json.dumps({"format": "fito-state/1", "tree": {"d": {"w": {"d": {"kind": {"v": "tensor"}, "data": {
        "T": 0, "dtype": "float32", "shape": [2 ** 31, 2 ** 31, 4]}}}}}}).encode(), b""),
], ids=["json-recursion", "deep-tree", "shape-overflow"])
def test_hostile_state_documents_are_unsafe(doc, payload):
    with pytest.raises(fito.UnsafeCheckpointError):
        _decode_doc(doc, [payload])


def test_hostile_entries_are_unsafe_not_key_or_type_errors(ckdir):
    from fito.ckpt.state import plan_restore
    for saved in ([], {"w": []}, {"w": {"kind": "tensor"}}, {"w": {"kind": "bogus", "data": 1}}):
        with pytest.raises(fito.UnsafeCheckpointError):
            plan_restore({"w": torch.zeros(1)}, saved, where="m.json")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    for data in ({"state": [], "param_groups": [{"params": [0]}]}, {"state": {0: 1}, "param_groups": [{"params": [0]}]},
                 {"state": {}, "param_groups": [{"params": [True]}]}):
        with pytest.raises(fito.FitoError):
            plan_restore({"o": opt}, {"o": {"kind": "optimizer", "data": data}}, where="m.json")
