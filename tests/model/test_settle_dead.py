"""Settling a dead attempt at a job restart (Config.settle_dead, fito.model.explorer_model.settle_dead): the
files of an attempt that no process and no coordinator can touch again become one durable marker in its
directory (or nothing, if none has a name), instead of carrying every state of them (which exist, which are
durable) into the retry. Recovery never reads them, and the GC and a discard see the same directories, so
every verdict must be that of the unsettled search, with shortest counterexamples of the same length that
replay; only the number of states shrinks."""
from __future__ import annotations

import dataclasses

import pytest

from fito.model.explorer import explore, replay
from fito.model.explorer_world import Config
from fito.model.protocols import MUTATION_SETTINGS, MUTATIONS

QUIET = {"crashes": False, "message_loss": False, "timeouts": False}


def _same_verdicts(protocol: str, cfg: Config, mutation: str | None = None) -> tuple[int, int]:
    settled = explore(protocol, cfg, mutation=mutation)
    full = explore(protocol, dataclasses.replace(cfg, settle_dead=False), mutation=mutation)
    assert settled.complete and full.complete
    assert settled.verdict == full.verdict and sorted(settled.violations) == sorted(full.violations)
    for name, cex in settled.violations.items():
        assert len(cex.trace) == len(full.violations[name].trace)
        _, violations = replay(protocol, cfg, cex.trace, mutation=mutation)
        assert name in {v.property for v in violations}
    return settled.states, full.states


@pytest.mark.parametrize(("protocol", "cfg", "counts"), [
    # crashes, loss, timeouts and a job restart: the goal scenario's shape at 2 ranks
    pytest.param("bilateral", Config(ranks=2, attempts=2), (5895, 28189), marks=pytest.mark.slow),
    ("paper-literal", Config(ranks=2, attempts=2, **QUIET), None),
    ("naive", Config(ranks=2, attempts=2), None),
    ("bilateral", Config(ranks=2, attempts=2, epochs=2, **QUIET), None),
    # a restart that kills the old coordinator settles; one that leaves it a zombie does not
    ("bilateral", Config(ranks=1, attempts=3, zombies=True, **QUIET), None),
])
def test_settling_dead_attempts_keeps_every_verdict(protocol: str, cfg: Config, counts: tuple | None) -> None:
    got = _same_verdicts(protocol, cfg)
    if counts is not None:
        assert got == counts


@pytest.mark.parametrize("mutation", [m for m in MUTATIONS if not MUTATION_SETTINGS.get(m, {}).get("zombies")])
def test_planted_bugs_are_caught_alike_after_a_restart(mutation: str) -> None:
    cfg = dataclasses.replace(Config(ranks=2, attempts=2, **QUIET), **MUTATION_SETTINGS.get(mutation, {}))
    settled, full = _same_verdicts("bilateral", cfg, mutation)
    assert settled <= full
