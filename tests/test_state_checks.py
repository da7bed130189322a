"""One set of save-side state checks for fito.Checkpointer and fito.dcp (issue 20 item 5): a state nested
1,000 levels deep, or a list that contains itself, is refused by both with StateMismatchError naming the depth
limit (fito.dcp used to raise a bare RecursionError from DCP's flattening); a value over the size a restore
accepts (MAX_VALUE_BYTES) is refused at save, never written to be refused at restore."""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import fito
import fito.dcp
from fito.plan.tree import MAX_DEPTH
from fito.plan.values import MAX_VALUE_BYTES


def _nested(kind: str) -> Any:
    node: Any = 0
    for _ in range(1000):
        node = [node] if kind == "list" else {"k": node}
    if kind == "cycle":
        node = [1]
        node.append(node)
    return node


def _save(via: str, root: str, state: dict[str, Any]) -> BaseException:
    try:
        if via == "ckpt":
            with fito.Checkpointer(root, progress=False) as ck:
                ck.save(1, state)
        elif via == "fito.dcp.save":
            fito.dcp.save(state, storage_writer=fito.dcp.Writer(root, 1))
        else:
            dcp.save(state, storage_writer=fito.dcp.Writer(root, 1), planner=fito.dcp.SavePlanner())
    except CheckpointException as exc:  # plain dcp.save: each rank's exception inside
        (cause,) = exc.failures.values()
        return cause[0] if isinstance(cause, tuple) else cause
    except Exception as exc:  # noqa: BLE001 - returned for the assertions
        return exc
    raise AssertionError("saved")


VIAS = ["ckpt", "fito.dcp.save", "dcp.save"]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("kind", ["list", "dict", "cycle"])
def test_deep_state_is_refused_alike_on_every_save_path(tmp_path, via, kind):
    exc = _save(via, str(tmp_path), {"w": torch.zeros(3), "deep": _nested(kind)})
    assert isinstance(exc, fito.StateMismatchError), repr(exc)[:300]
    assert f"nested deeper than {MAX_DEPTH} levels (the depth limit" in str(exc) and len(str(exc)) < 1000, str(exc)[:300]
    assert not (tmp_path / "epochs").exists() or not any((tmp_path / "epochs").iterdir())


@pytest.mark.parametrize("via", VIAS)
def test_a_value_a_restore_would_refuse_is_refused_at_save(tmp_path, via):
    exc = _save(via, str(tmp_path), {"w": torch.zeros(3), "text": "x" * (MAX_VALUE_BYTES + 1)})
    assert isinstance(exc, fito.StateMismatchError), repr(exc)[:300]
    assert str(MAX_VALUE_BYTES) in str(exc) and "text" in str(exc), str(exc)[:300]
