"""Values a JSON tree carries without pickle (issue 21, defect 9): opaque bytes (bytes, bytearray, a
torch.save'd io.BytesIO, never unpickled), pathlib paths, torch.dtype, torch.device, datetime values and Enum
members, each back as the same type, through fito.Checkpointer and through fito.dcp (both planners)."""
from __future__ import annotations

import datetime as dt
import enum
import io
import pathlib
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp

import fito
import fito.dcp
from fito.plan.tree import decode, encode
from fito.errors import UnsafeCheckpointError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class Phase(enum.Enum):
    WARMUP = "warmup"
    DECAY = 2


class Level(enum.IntEnum):  # an int too: must come back as the Enum, not as 1
    LOW = 1


def losses() -> io.BytesIO:
    buf = io.BytesIO()
    torch.save([0.5, 0.25], buf)
    buf.seek(3)  # where a reader left it
    return buf


VALUES = {
    "bytes": b"\x00\xff\x80raw", "bytearray": bytearray(b"ab"), "BytesIO": losses(),
    "Path": pathlib.Path("/data/shard-3"), "PurePosixPath": pathlib.PurePosixPath("a/b"),
    "PureWindowsPath": pathlib.PureWindowsPath(r"C:\data"), "dtype": torch.bfloat16, "device": torch.device("cuda", 1),
    "datetime": dt.datetime(2026, 12, 7, 20, 1, 2, 345, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "naive": dt.datetime(2026, 1, 2, 3, 4), "date": dt.date(2026, 1, 2), "time": dt.time(3, 4, 5), "timedelta": dt.timedelta(days=2, seconds=3),
    "Enum": Phase.DECAY, "IntEnum": Level.LOW, "keys": {Phase.WARMUP: 1, torch.float16: 2},
}


def same(a, b) -> bool:
    if isinstance(b, io.BytesIO):
        return type(a) is io.BytesIO and a.getvalue() == b.getvalue() and a.tell() == b.tell()
    return type(a) is type(b) and a == b


def no_unpickling(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("something was unpickled")
    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)


def test_each_value_comes_back_as_the_same_type_through_the_checkpointer(tmp_path, monkeypatch):
    fito.Checkpointer(tmp_path).save(1, {"w": torch.ones(2), "meta": dict(VALUES)})
    no_unpickling(monkeypatch)
    target = {"w": torch.zeros(2), "meta": {}}
    fito.Checkpointer(tmp_path).restore(target)
    for name, value in VALUES.items():
        assert same(target["meta"][name], value), name


@pytest.mark.parametrize("planners", ["fito", "dcp"])
def test_each_value_comes_back_as_the_same_type_through_fito_dcp(tmp_path, monkeypatch, planners):
    save_planner, load_planner = (fito.dcp.SavePlanner(), fito.dcp.LoadPlanner()) if planners == "fito" else (None, None)
    leaves = {k: v for k, v in VALUES.items() if k != "keys"}  # DCP flattens dicts into items itself
    dcp.save({"meta": leaves}, storage_writer=fito.dcp.Writer(tmp_path, 1), planner=save_planner)
    no_unpickling(monkeypatch)
    target = {"meta": {name: None for name in leaves}}
    dcp.load(target, storage_reader=fito.dcp.Reader(tmp_path), planner=load_planner)
    for name, value in leaves.items():
        assert same(target["meta"][name], value), name


@pytest.mark.parametrize("node, says", [
    ({"E": "subprocess:Popen", "name": "x"}, "already imported"),  # never imported, and not an Enum
    ({"E": "builtins:print", "name": "x"}, "already imported"),
    ({"E": f"{__name__}:Phase", "name": "NOPE"}, "a member of"),
    ({"B": "!!notbase64", "k": "bytes"}, "well-formed"),
    ({"B": "YQ==", "k": "pickle"}, "bytes, bytearray or BytesIO"),
    ({"dt": "Tensor"}, "a torch dtype"),
    ({"dev": "warp:9"}, "well-formed"),
    ({"P": "x" * 600, "k": "Path"}, "at most 512"),
    ({"iso": "not a date", "k": "datetime"}, "well-formed"),
    ({"td": [1, "2", 3]}, "timedelta"),
])
def test_malformed_or_unknown_values_are_refused_naming_what_was_expected(node, says):
    with pytest.raises(UnsafeCheckpointError, match=says):
        decode(node, [], "meta/x")


def test_an_enum_whose_module_is_not_imported_is_refused_not_imported():
    import sys
    node = encode(Phase.DECAY, "meta/x", [])
    node["E"] = "fito_never_imported_module:Phase"
    with pytest.raises(UnsafeCheckpointError, match="never imports"):
        decode(node, [], "meta/x")
    assert "fito_never_imported_module" not in sys.modules
