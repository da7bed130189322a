"""Planted bugs in the bilateral protocol (subclasses that override one method of the library's machines)
must each be caught with a shortest counterexample that replays."""
from __future__ import annotations

import pytest

from fito.cli import main
from fito.model.explorer import explore, replay
from fito.model.explorer_world import Config
import dataclasses
from typing import Any

import fito.model.planted as planted
from fito.model.planted import DedupCoordinator, DedupKeepsFirst, NoCoverageCheck, RecursiveDiscard
from fito.model.protocols import (
    BILATERAL, MUTATION_SETTINGS, MUTATIONS, GcBeforeDecision, PublishBeforeAllReady, ReadyBeforeFsync,
)
from fito.protocol import Coordinator, Participant, PublishRejected

CFG = Config(ranks=2)


@pytest.mark.parametrize(
    ("mutation", "steps", "last_step", "loaded"),
    [
        # Steps shrank with Persist (one step per object where FsyncFile + FsyncDir were two): 11 -> 10 (the
        # coordinator's directory fsync), 15 -> 12 (both ranks' and the coordinator's), 10 -> 8 (rank 0's and
        # the coordinator's); the counterexamples are otherwise the same runs.
        # READY vouches for bytes still in the page cache: the commit points at data a power cut loses.
        ("ready-before-fsync", 10, "coord: publish decision commit e2/a (durable, atomic)", "un-fsynced data lost"),
        # epoch 1 is retired and deleted while epoch 2's decision is not yet durable: nothing left to load.
        ("gc-before-decision", 12, "coord: collect garbage (keep 1): retire+delete ['e1/x']", "fails loudly"),
        # commit recorded with rank 1 missing from the manifest: epoch 2 is committed but not loadable.
        ("publish-before-all-ready", 8, "coord: publish decision commit e2/a (durable, atomic)", "loads rank0=e1/x"),
    ],
)
def test_mutation_is_caught(mutation: str, steps: int, last_step: str, loaded: str) -> None:
    result = explore("bilateral", CFG, mutation=mutation, stop_at_first=True)
    assert not result.ok
    cex = result.violations["CommittedStaysRecoverable"]
    assert len(cex.trace) == steps and cex.trace[-1].startswith(last_step)
    assert loaded in cex.detail
    _, violations = replay("bilateral", CFG, cex.trace, mutation=mutation)
    assert "CommittedStaysRecoverable" in {v.property for v in violations}
    # the same trace is harmless under the unmutated protocol (or not even possible there)
    try:
        _, clean = replay("bilateral", CFG, cex.trace)
    except ValueError:
        clean = []
    assert clean == []


def test_mutations_are_one_method_overrides_of_the_library_machines() -> None:
    assert issubclass(ReadyBeforeFsync, Participant)
    assert issubclass(GcBeforeDecision, Coordinator) and issubclass(PublishBeforeAllReady, Coordinator)
    overridden = {name for cls in (GcBeforeDecision, PublishBeforeAllReady) for name in vars(cls) if not name.startswith("_")}
    assert overridden <= {"publish", "on_published", "on_ready"}
    assert {n for n in vars(ReadyBeforeFsync) if not n.startswith("_")} <= {"after_write", "send_ready"}
    assert set(MUTATIONS) == {"ready-before-fsync", "gc-before-decision", "publish-before-all-ready",
                              "recursive-discard", "no-coverage-check", "reader-takes-fence", "fence-per-save",
                              "dedup-keeps-differing"}
    # issue 16's: the library's discard (Coordinator(discard=True)), made recursive; the coverage check, skipped.
    # No model-only discarding coordinator is left: the checker runs the library's machine.
    assert issubclass(RecursiveDiscard, Coordinator) and not hasattr(planted, "DiscardingCoordinator")
    assert {n for n in vars(RecursiveDiscard) if not n.startswith("_")} <= {"handle", "discards"}
    assert {n for n in vars(NoCoverageCheck) if not n.startswith("_")} == {"coverage_problems"}
    # the dedup of replicated copies, without comparing their hashes
    assert issubclass(DedupKeepsFirst, DedupCoordinator) and issubclass(DedupCoordinator, Coordinator)
    assert {n for n in vars(DedupKeepsFirst) if not n.startswith("_")} == {"compares_replicas"}


@pytest.mark.slow
def test_every_mutation_is_also_caught_with_three_ranks() -> None:
    # No process faults needed: the power failure checked at every state is enough to expose each bug.
    quiet = Config(ranks=3, crashes=False, message_loss=False, timeouts=False)
    assert explore("bilateral", quiet).ok
    for mutation in MUTATIONS:
        cfg = dataclasses.replace(quiet, **MUTATION_SETTINGS.get(mutation, {}))
        result = explore("bilateral", cfg, mutation=mutation, stop_at_first=True)
        assert {"CommittedStaysRecoverable", "OnlyANewerWriterFences", "ReplicasAgreeWhenKeptOnce"} & set(
            result.violations), mutation


# Issue 16's rules, each with its planted bug: (mutation, scenario, property, steps, the damaging step).
NEW_RULES = [
    # A zombie coordinator, fenced out (its publish refused), discards its attempt: it finds epochs/2 empty
    # of others, the live job then writes and commits e2/b there, and the zombie's rmtree deletes it.
    ("recursive-discard", Config(ranks=2, attempts=2, zombies=True, discard=True, message_loss=False,
                                 crashes=False, timeouts=False), "CommittedStaysRecoverable", 27,
     "zombie coord: remove epochs/000000000002 recursively"),
    # rank 1's plan missed its chunk; the coordinator writes a manifest without it and commits: e2/a is
    # committed but recovery can only refuse it (the manifest does not cover rank 1) and falls back to e1.
    ("no-coverage-check", Config(ranks=2, short_writes=True), "CommittedStaysRecoverable", 12,
     "coord: publish decision commit e2/a (durable, atomic)"),
    # a read-only opener (inspect, a restore-only Checkpointer) that takes a token fences the live writer
    # out: its decision is refused although no newer writer exists (here its abort after a timeout)
    ("reader-takes-fence", Config(ranks=2, reader=True), "OnlyANewerWriterFences", 4,
     "coord: publish decision abort e2/a: REFUSED, stale fence"),
    # a token per save: the old job (its coordinator survived the restart) begins its next save with a new
    # token and fences the live job out; with one token per life its token stays stale (1 rank: the rule is
    # about coordinators; 2 ranks give the same 8 steps in 2,231 states, the clean space 108,461)
    ("fence-per-save", Config(ranks=1, attempts=2, zombies=True, zombie_saves=True, message_loss=False,
                              crashes=False), "OnlyANewerWriterFences", 8,
     "coord: publish decision abort e2/b: REFUSED, stale fence"),
    # every rank writes a copy of a replicated item; rank 1's holds another value (e.g. an RNG state not
    # broadcast): the coordinator keeps rank 0's copy without comparing and commits; restoring gives rank 1
    # rank 0's value. With the rule the last READY's coverage check sees two hashes and aborts.
    ("dedup-keeps-differing", Config(ranks=2, replicas=True), "ReplicasAgreeWhenKeptOnce", 12,
     "coord: publish decision commit e2/a (durable, atomic)"),
]


@pytest.mark.parametrize(("mutation", "cfg", "prop", "steps", "last_step"), NEW_RULES)
def test_new_rule_planted_bug_is_caught_and_the_rule_holds(mutation: str, cfg: Config, prop: str, steps: int,
                                                            last_step: str) -> None:
    result = explore("bilateral", cfg, mutation=mutation, stop_at_first=True)
    cex = result.violations[prop]
    assert len(cex.trace) == steps and cex.trace[-1] == last_step
    _, violations = replay("bilateral", cfg, cex.trace, mutation=mutation)
    assert prop in {v.property for v in violations}
    # the library's rule (discard by name, directories only if empty; the coverage check) holds on the
    # whole space the bug was found in
    clean = explore("bilateral", cfg)
    assert clean.ok and clean.complete, [c.render() for c in clean.violations.values()]
    try:
        _, after = replay("bilateral", cfg, cex.trace)
    except ValueError:  # the trace is not even possible with the rule: the damaging step is not enabled
        after = []
    assert after == []


def test_discard_runs_plan_discard_and_spares_a_newer_attempt() -> None:
    """The correct discard in the zombie scenario: the zombie's objects go, the live attempt's do not."""
    cfg = NEW_RULES[0][1]
    trace = explore("bilateral", cfg, mutation="recursive-discard", stop_at_first=True).violations[
        "CommittedStaysRecoverable"].trace
    fixed = [s.replace("discard e2/a: objects deleted; e2/ holds nothing else",
                       "discard e2/a (objects by name, directories only if empty)") for s in trace[:-1]]
    world, violations = replay("bilateral", cfg, fixed)
    assert violations == []
    names = {p for p, f in world.disk.files if f.linked}
    assert "epochs/000000000002/b/manifest.json" in names and not any("/a/" in p for p in names if "00002" in p)


def test_the_checker_discards_with_the_library_coordinator() -> None:
    """Config(discard=True) begins the library's own machine, Coordinator(n, discard=True) as
    fito.commit.coordinate does, not a model-only copy; replicas keep the dedup rule and still discard."""
    from fito.model.explorer_model import Model
    from fito.model.protocols import get_variant

    model = Model(get_variant("bilateral"), Config(ranks=2, discard=True))
    coord = model.fresh(2)
    assert type(coord) is Coordinator and coord == Coordinator(2, discard=True)
    both = Model(get_variant("bilateral"), Config(ranks=2, discard=True, replicas=True)).fresh(2)
    assert type(both) is DedupCoordinator and both.discard


@dataclasses.dataclass(frozen=True)
class DiscardsOnUnknownOutcome(Coordinator):
    """Planted: takes every refused publish as definite, so it discards after a commit whose answer was lost."""

    def handle(self, event: Any) -> tuple[Coordinator, list]:
        if isinstance(event, PublishRejected):
            event = PublishRejected(event.reason, definite=True)
        return super().handle(event)


def test_an_unreachable_store_leaves_the_attempt_to_gc() -> None:
    """Config(store_unreachable=True): a publish may not land, or land with its answer lost; the coordinator
    gets PublishRejected(definite=False), as fito.commit.executor.publish_decision gives, and no Discard
    follows a commit. A coordinator that discards anyway deletes a committed attempt's objects."""
    cfg = Config(ranks=2, discard=True, store_unreachable=True, crashes=False, message_loss=False)
    clean = explore("bilateral", cfg)
    assert clean.ok and clean.complete
    # 1,605 states with the fault (it adds the publish's two unknown outcomes, each followed by abort notices)
    assert clean.states == 1605
    bug = explore(dataclasses.replace(BILATERAL, coordinator=DiscardsOnUnknownOutcome), cfg, stop_at_first=True)
    cex = bug.violations["CommittedStaysRecoverable"]
    assert cex.trace[-3:] == ["coord: publish decision commit e2/a (durable, atomic), its answer lost: store unreachable",
                              "coord: notify every rank: abort e2/a",
                              "coord: discard e2/a (objects by name, directories only if empty)"]
    world, after = replay("bilateral", cfg, cex.trace[:-1])  # the library's machine: no discard queued
    assert after == [] and world.pending[2] == ()


def test_cli_reports_the_mutation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--mutation", "ready-before-fsync", "--stop-at-first"]) == 1
    out = capsys.readouterr().out
    assert "bilateral+ready-before-fsync" in out and "counterexample to CommittedStaysRecoverable" in out
    assert main(["check", "--protocol", "naive", "--mutation", "ready-before-fsync"]) == 2
    # a planted bug that needs a scenario gets it: no-coverage-check turns on --short-writes
    assert main(["check", "--mutation", "no-coverage-check", "--stop-at-first"]) == 1
    assert "vouching for none of its chunks" in capsys.readouterr().out
    # dedup-keeps-differing turns on --replicas; with the rule, --replicas holds
    assert main(["check", "--mutation", "dedup-keeps-differing", "--stop-at-first"]) == 1
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "its copy of the replicated item a different value" in out and "ReplicasAgreeWhenKeptOnce" in out
    assert main(["check", "--replicas", "--no-crashes", "--no-loss"]) == 0


def test_dedup_refuses_replicas_that_differ_and_keeps_equal_ones() -> None:
    """The rule behind dedup-keeps-differing: on the last READY the coordinator compares every copy's hash;
    copies that differ abort the save, equal ones are kept once and the save commits."""
    cfg = Config(ranks=2, replicas=True)
    trace = explore("bilateral", cfg, mutation="dedup-keeps-differing", stop_at_first=True).violations[
        "ReplicasAgreeWhenKeptOnce"].trace
    upto = trace.index("net: deliver READY(rank1, e2/a) to coord") + 1
    world, violations = replay("bilateral", cfg, trace[:upto])
    coord = world.machines[2]
    assert isinstance(coord, DedupCoordinator) and coord.phase.value == "aborting" and violations == []
    assert "1 replicated value(s) differ between ranks: 'replica' (2 different copies)" in coord.reason
    equal = [s.replace(", its copy of the replicated item a different value", "") for s in trace]
    world, violations = replay("bilateral", cfg, equal)
    assert violations == [] and (2, "a") in world.ghost.committed
