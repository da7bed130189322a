"""The differential test of the commit protocol: the commands a real save emits (dcp.save through
fito.dcp.Writer, recorded at the executor seam with fito.protocol.drive.recording) equal, machine by machine,
the commands the model checker executes on its happy path (fito.model.explorer.happy_path) for the same
number of ranks. Both drive the same machines through the same contract; a rule changed in one executor or
machine and not in the other (the v1 fencing fix once had to be copied into the checker by hand) changes one
sequence and not the other, and this test fails."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

import fito.dcp
from fito.testing.dist import run_ranks
from fito.model.explorer import happy_path
from fito.model.protocols import MUTATIONS, NEXT_EPOCH

HELPERS = Path(__file__).parent / "helpers"
_spec = importlib.util.spec_from_file_location("protocol_trace", HELPERS / "protocol_trace.py")
assert _spec is not None and _spec.loader is not None
trace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trace)

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

PARTICIPANT = ["WriteShard", "Persist", "SendReady"]
COORDINATOR = ["WriteManifest", "Persist", "PublishDecision", "Notify", "CollectGarbage"]


def checker(ranks: int, mutation: str | None = None) -> dict[str, list[Any]]:
    log, w = happy_path("bilateral", ranks, mutation=mutation)
    assert mutation or (NEXT_EPOCH, "a") in w.ghost.committed  # the happy path ends in a commit
    return trace.normalize([trace.record(who, cmd) for who, cmd in log])


def kinds(seq: list[Any]) -> list[str]:
    return [kind for kind, _ in seq]


def assert_same(real: dict[str, list[Any]], model: dict[str, list[Any]]) -> None:
    assert sorted(real) == sorted(model), "machines differ"
    for who in sorted(model):  # the command types first: a readable diff when a rule moved
        assert kinds(real[who]) == kinds(model[who]), f"{who}: real save (left) vs the checker's happy path (right)"
        assert real[who] == model[who], f"{who}: real save (left) vs the checker's happy path (right)"


def test_a_single_process_save_emits_the_checkers_happy_path(tmp_path: Path) -> None:
    log: list[Any] = []
    state = {"w": torch.arange(12.0).reshape(3, 4), "meta": {"lr": 0.1}}
    writer = fito.dcp.Writer(tmp_path, 5, observe=lambda who, cmd: log.append(trace.record(who, cmd)))
    dcp.save(state, storage_writer=writer, planner=fito.dcp.SavePlanner())
    target = {"w": torch.zeros(3, 4), "meta": {"lr": 0.0}}
    reader = fito.dcp.Reader(tmp_path)
    dcp.load(target, storage_reader=reader, planner=fito.dcp.LoadPlanner())
    assert reader.loaded_step == 5 and torch.equal(target["w"], state["w"])  # it really committed
    real = trace.normalize(log)
    assert_same(real, checker(1))
    # pinned on its own too, so a change that moves both sides at once is still seen here
    assert kinds(real["rank0"]) == PARTICIPANT and kinds(real["coord"]) == COORDINATOR
    publish = dict(real["coord"])["PublishDecision"]
    assert publish["fence"] == "<fence>" and publish["outcome"] == "commit"  # the machine carries the fence


def test_a_two_rank_save_emits_the_checkers_happy_path(tmp_path: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH")) if p)}
    results = run_ranks("protocol_trace", [str(tmp_path / "ck"), "5"], 2, env=env, timeout=240)
    log: list[Any] = []
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        log += [json.loads(line) for line in r.stdout.splitlines() if line.startswith("[")]
    real = trace.normalize(log)
    assert sorted(real) == ["coord", "rank0", "rank1"]
    assert_same(real, checker(2))
    ready = [fields for kind, fields in real["coord"] if kind == "WriteManifest"][0]["readies"]
    assert [r["rank"] for r in ready] == [0, 1]


@pytest.mark.parametrize("mutation, machines", [
    ("ready-before-fsync", {"rank0", "rank1"}), ("gc-before-decision", {"coord"}), ("publish-before-all-ready", {"coord"}),
])
def test_a_rule_changed_on_one_side_changes_its_sequence(mutation: str, machines: set[str]) -> None:
    """The comparison is sharp enough: each planted bug (one method of one machine overridden, as a drifted
    copy of a rule would be) yields a happy path that differs from the clean one, in that machine only."""
    # issue 16's planted bugs (recursive-discard, no-coverage-check) act off the happy path: only these three
    # change it
    assert {"ready-before-fsync", "gc-before-decision", "publish-before-all-ready"} <= set(MUTATIONS)
    clean, mutated = checker(2), checker(2, mutation)
    assert {m for m in clean if clean[m] != mutated[m]} == machines
