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
from fito.coord.sqlite import SqliteDecisionStore
from fito.testing.dist import run_ranks
from fito.model.explorer import happy_path
from fito.model.explorer_model import Model
from fito.model.explorer_world import Config
from fito.model.protocols import MUTATIONS, NEXT_EPOCH, get_variant
from fito.protocol.messages import attempt_dir, manifest_path, shard_path

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


def run_traced(root: Path, step: int, mode: str = "", *, check: bool = True) -> tuple[list[Any], list[str]]:
    """The commands the 2 ranks' machines executed, and each rank's outcome line."""
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH")) if p)}
    results = run_ranks("protocol_trace", [str(root), str(step), *([mode] if mode else [])], 2, env=env, timeout=240)
    log: list[Any] = []
    outcomes: list[str] = []
    for r in results:
        if check:
            assert r.returncode == 0, r.stderr[-3000:]
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("[")]
        outcomes += [line[1] for line in lines if line[0] == "outcome"]
        log += [line for line in lines if line[0] != "outcome"]
    return log, outcomes


def test_a_two_rank_save_emits_the_checkers_happy_path(tmp_path: Path) -> None:
    log, _ = run_traced(tmp_path / "ck", 5)
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


def checker_abort(ranks: int, failure: str) -> dict[str, list[Any]]:
    """The checker's commands when rank 1 fails its write ("rank": its storage refuses the object, and the
    model's driver reports RankFailed, as the library's does) or never answers ("timeout": the coordinator's
    timeout fires once rank 0's READY is in), the coordinator discarding as the library's does."""
    log: list[Any] = []
    model = Model(get_variant("bilateral"), Config(ranks=ranks, crashes=False, message_loss=False,
                                                   timeouts=failure == "timeout", discard=True),
                  observe=lambda who, cmd: log.append(trace.record(who, cmd)))
    w = model.initial()
    while w.pending[0]:  # rank 0 does its whole part first
        _, w = model.execute(w, 0)
    if failure == "rank":  # the simulated storage refuses rank 1's object (it exists): its write fails
        epoch, attempt = w.machines[1].epoch, w.machines[1].attempt
        w = w._replace(disk=w.disk.makedirs(attempt_dir(epoch, attempt)).create(shard_path(epoch, attempt, 1), "x", 99))
        _, w = model.execute(w, 1)
    while w.net:
        _, w = model.deliver(w, 0)
    if failure == "timeout":
        w = dict(model.successors(w))["coord: timeout waiting for READY"]
    while w.pending[ranks]:
        _, w = model.execute(w, ranks)
    return trace.normalize(log)


def checker_coordinator_fails(ranks: int) -> tuple[dict[str, list[Any]], Any]:
    """The checker's commands when the coordinator's own manifest write fails (the simulated storage holds
    a file at the manifest's path), and the world after: its driver feeds RankFailed of the coordinator's
    own rank, as fito.dcp.Writer does, so the machine aborts, publishes the abort and discards."""
    log: list[Any] = []
    model = Model(get_variant("bilateral"), Config(ranks=ranks, crashes=False, message_loss=False, timeouts=False,
                                                   discard=True),
                  observe=lambda who, cmd: log.append(trace.record(who, cmd)))
    w = model.initial()
    for r in range(ranks):
        while w.pending[r]:
            _, w = model.execute(w, r)
    while w.net:
        _, w = model.deliver(w, 0)
    coord = w.machines[ranks]
    w = w._replace(disk=w.disk.create(manifest_path(coord.epoch, coord.attempt), "x", 99))
    while w.pending[ranks]:
        _, w = model.execute(w, ranks)
    while w.net:  # the ranks learn the abort
        _, w = model.deliver(w, 0)
    return trace.normalize(log), w


def test_the_coordinators_own_failure_aborts_through_the_machine_as_the_checker_does(tmp_path: Path) -> None:
    """The manifest write fails (EIO, by fito.testing.faults at the storage seam): the library feeds
    RankFailed of the coordinator's own rank, the abort is published, then discarded; the checker's driver
    does the same with the same commands (before issue 16's checker3 it gave up without publishing)."""
    from fito.errors import SaveAbortedError
    from fito.storage import LocalFS
    from fito.testing.faults import Fault, FaultPlan, FaultyStorage

    root = tmp_path / "ck"
    fito.dcp.save({"shared": torch.arange(6.0)}, storage_writer=fito.dcp.Writer(root, 4))  # committed before
    log: list[Any] = []
    storage = FaultyStorage(LocalFS(root), FaultPlan(0, [Fault("manifest write", "EIO")]))
    with pytest.raises(SaveAbortedError, match="rank 0"):
        fito.dcp.save({"shared": torch.arange(6.0) + 1}, storage_writer=fito.dcp.Writer(
            storage, 5, observe=lambda who, cmd: log.append(trace.record(who, cmd))))
    real = trace.normalize(log)
    model, w = checker_coordinator_fails(1)
    assert_same(real, model)
    assert kinds(real["coord"]) == ["WriteManifest", "PublishDecision", "Notify", "Discard"]
    assert dict(real["coord"])["PublishDecision"]["outcome"] == "abort"
    notify = [r for r in log if r[0] == "coord" and r[1] == "Notify"][0][2]
    assert notify["outcome"] == "abort" and notify["reason"].startswith("rank 0 failed: ")
    # the checker's world agrees: the abort is on record, the attempt's objects are gone, the rank knows
    assert [(r.epoch, r.outcome) for r in w.store][-1] == (NEXT_EPOCH, "abort")
    assert not any(p.startswith(f"epochs/{NEXT_EPOCH:012d}/") and f.linked and f.owner != 99 for p, f in w.disk.files)
    assert w.machines[0].phase.value == "aborted"
    aborted_then_intact(root, 5)


def aborted_then_intact(root: Path, step: int) -> None:
    """The decision record says aborted, the aborted attempt's objects are gone, a restore gets the previous
    step, and a later save of the same step commits."""
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False, readonly=True)
    try:
        assert [(d.epoch, d.outcome) for d in store.decisions()] == [(step - 1, "commit"), (step, "abort")]
    finally:
        store.close()
    target = {"shared": torch.zeros(6)}
    reader = fito.dcp.Reader(root)
    dcp.load(target, storage_reader=reader)
    assert reader.loaded_step == step - 1 and torch.equal(target["shared"], torch.arange(6.0))
    dcp.save({"shared": torch.arange(6.0)}, storage_writer=fito.dcp.Writer(root, step))
    reader = fito.dcp.Reader(root)
    dcp.load(target, storage_reader=reader)
    assert reader.loaded_step == step


@pytest.mark.multiproc
@pytest.mark.slow
def test_a_rank_failing_its_write_aborts_through_the_machine_as_the_checker_does(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    log, outcomes = run_traced(root, 5, "fail-write")
    assert outcomes == ["SaveAbortedError", "SaveAbortedError"]
    real, model = trace.normalize(log), checker_abort(2, "rank")
    assert_same(real, model)
    assert kinds(real["coord"]) == ["PublishDecision", "Notify", "Discard"]  # the abort, published, then discard
    assert kinds(real["rank1"]) == ["WriteShard"]
    notify = [r for r in log if r[0] == "coord" and r[1] == "Notify"][0][2]
    assert notify["outcome"] == "abort" and notify["reason"].startswith("rank 1 failed: ")
    assert not list((root / "epochs" / "000000000005").rglob("*"))  # discarded: rank 0's object too
    aborted_then_intact(root, 5)


@pytest.mark.multiproc
@pytest.mark.slow
def test_a_rank_silent_past_the_timeout_aborts_through_the_machine_as_the_checker_does(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    log, outcomes = run_traced(root, 5, "timeout", check=False)  # rank 1 finds rank 0 gone after its stall
    assert outcomes[:1] == ["SaveAbortedError"]  # rank 0 (rank 1's line may never come)
    real, model = trace.normalize(log), checker_abort(2, "timeout")
    # rank 1 wakes after the abort and writes an object of an aborted attempt (garbage for GC): the model's
    # schedule stops before, so the coordinator and rank 0 are compared
    assert_same({k: real[k] for k in ("coord", "rank0")}, {k: model[k] for k in ("coord", "rank0")})
    assert kinds(real["coord"]) == ["PublishDecision", "Notify", "Discard"]
    notify = [r for r in log if r[0] == "coord" and r[1] == "Notify"][0][2]
    assert notify["outcome"] == "abort" and notify["reason"].startswith("no answer from rank(s) [1]")
    aborted_then_intact(root, 5)
