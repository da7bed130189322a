"""Planted bugs in the bilateral protocol (subclasses that override one method of the library's machines)
must each be caught with a shortest counterexample that replays."""
from __future__ import annotations

import pytest

from fito.cli import main
from fito.model.explorer import explore, replay
from fito.model.explorer_world import Config
from fito.model.protocols import MUTATIONS, GcBeforeDecision, PublishBeforeAllReady, ReadyBeforeFsync
from fito.protocol import Coordinator, Participant

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
    assert set(MUTATIONS) == {"ready-before-fsync", "gc-before-decision", "publish-before-all-ready"}


def test_every_mutation_is_also_caught_with_three_ranks() -> None:
    # No process faults needed: the power failure checked at every state is enough to expose each bug.
    quiet = Config(ranks=3, crashes=False, message_loss=False, timeouts=False)
    assert explore("bilateral", quiet).ok
    for mutation in MUTATIONS:
        result = explore("bilateral", quiet, mutation=mutation, stop_at_first=True)
        assert "CommittedStaysRecoverable" in result.violations, mutation


def test_cli_reports_the_mutation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--mutation", "ready-before-fsync", "--stop-at-first"]) == 1
    out = capsys.readouterr().out
    assert "bilateral+ready-before-fsync" in out and "counterexample to CommittedStaysRecoverable" in out
    assert main(["check", "--protocol", "naive", "--mutation", "ready-before-fsync"]) == 2
