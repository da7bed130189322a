"""Symmetry reduction (fito.model.symmetry): the reduced search keeps one state per class of states equal up
to a renaming of ranks. It must give the same verdict for every property as the full search, with shortest
counterexamples of the same length that replay, and its key must be exactly canonical: as many keys as
classes (no symmetric pair kept twice) and no key shared by states that are not renamings of each other."""
from __future__ import annotations

import dataclasses
import itertools
from collections import deque

import pytest

from fito.model.explorer import explore, replay
from fito.model.explorer_model import Model
from fito.model.explorer_world import Config
from fito.model.protocols import MUTATION_SETTINGS, MUTATIONS, get_variant
from fito.model.symmetry import Canonicalizer


def _same_verdicts(protocol: str, cfg: Config, mutation: str | None = None) -> tuple[int, int]:
    reduced = explore(protocol, cfg, mutation=mutation)
    full = explore(protocol, dataclasses.replace(cfg, symmetry=False), mutation=mutation)
    assert reduced.complete and full.complete
    assert reduced.verdict == full.verdict
    assert sorted(reduced.violations) == sorted(full.violations)
    assert reduced.max_depth == full.max_depth
    for name, cex in reduced.violations.items():
        assert len(cex.trace) == len(full.violations[name].trace)  # BFS-shortest in both
        _, violations = replay(protocol, cfg, cex.trace, mutation=mutation)
        assert name in {v.property for v in violations}
    return reduced.states, full.states


# (protocol, config, mutation, reduced states, full states). Reduced ~ full / ranks!: a state whose ranks are
# all alike (the start, every quiet state) is its own class, so 2 ranks give 1.8-1.9x, 3 ranks 4.4-5.4x.
CASES_2 = [
    ("naive", Config(ranks=2), None, 97, 172),
    ("paper-literal", Config(ranks=2), None, 1354, 2624),
    ("bilateral", Config(ranks=2), None, 1179, 2225),
    # a job restart settles the dead attempt (Config.settle_dead; tests/model/test_settle_dead.py): one marker
    # for its directory instead of its files. 4,925/9,389 and 6,170/12,200 before, when every state of its
    # objects (which existed, which were durable) was carried into the retry
    ("bilateral", Config(ranks=2, attempts=2, message_loss=False, crashes=False), None, 985, 1755),
    ("paper-literal", Config(ranks=2, attempts=2, message_loss=False, crashes=False), None, 774, 1464),
    # every planted bug, in the scenario that shows it (the zombie one without loss, crashes or timeouts)
    *[("bilateral", dataclasses.replace(Config(ranks=2), **MUTATION_SETTINGS.get(m, {}), **(
        {"message_loss": False, "crashes": False, "timeouts": False}
        if MUTATION_SETTINGS.get(m, {}).get("zombies") else {})),
       m, None, None) for m in MUTATIONS],
]


@pytest.mark.parametrize(("protocol", "cfg", "mutation", "reduced", "full"), CASES_2)
def test_two_ranks_reduced_and_full_search_agree(protocol: str, cfg: Config, mutation: str | None,
                                                 reduced: int | None, full: int | None) -> None:
    got = _same_verdicts(protocol, cfg, mutation)
    if reduced is not None:
        assert got == (reduced, full)


def test_three_ranks_naive_reduced_and_full_agree() -> None:
    assert _same_verdicts("naive", Config(ranks=3)) == (348, 1528)


@pytest.mark.slow
def test_three_ranks_bilateral_reduced_and_full_agree() -> None:
    # 58,693 states in 6 classes of up to 3! = 6 renamings each: 10,939 classes (5.4x)
    assert _same_verdicts("bilateral", Config(ranks=3)) == (10939, 58693)


@pytest.mark.parametrize(("protocol", "ranks", "extra"), [
    ("bilateral", 2, {}), ("paper-literal", 2, {}), ("naive", 3, {}),
    # coverage aborts name ranks in their reasons ("rank1", "rank 1"); a reader adds ghost fields
    ("bilateral", 2, {"short_writes": True, "reader": True}),
    # a zombie coordinator (a second coordinator slot) that discards after it is fenced out
    ("bilateral", 2, {"attempts": 2, "zombies": True, "discard": True, "message_loss": False, "timeouts": False}),
    # replicated copies (their hashes in READYs, the refusal's reason names no rank) and the ghost's copies
    ("bilateral", 2, {"replicas": True}),
])
def test_key_is_exactly_canonical(protocol: str, ranks: int, extra: dict) -> None:
    """Every reachable state, by brute force: its orbit is the set of its encodings under every renaming;
    the canonical key must lie in the orbit (sound: equal keys only for renamings of one another) and
    states of one orbit must share one key (no class explored twice)."""
    model = Model(get_variant(protocol), Config(ranks=ranks, symmetry=False, **extra))
    seen = {model.initial()}
    todo = deque(seen)
    while todo:
        for _, s in model.successors(todo.popleft()):
            if s not in seen:
                seen.add(s)
                todo.append(s)
    canon = Canonicalizer(ranks)
    perms = list(itertools.permutations(range(ranks)))
    keys_of_orbit: dict[frozenset, set] = {}
    for w in seen:
        orbit = frozenset(canon.key_under(w, p) for p in perms)
        key = canon.key(w)
        assert key in orbit
        keys_of_orbit.setdefault(orbit, set()).add(key)
    assert all(len(keys) == 1 for keys in keys_of_orbit.values())
    reduced = explore(protocol, Config(ranks=ranks, **extra))
    assert reduced.states == len(keys_of_orbit)  # the reduced search reaches every class, once


def test_renaming_reaches_hashes_paths_and_reasons() -> None:
    """A renamed state is renamed everywhere a rank is named: unit contents, the hashes a READY and a
    manifest carry (through the content they hash), paths, and reasons like "rank 1 failed"."""
    model = Model(get_variant("bilateral"), Config(ranks=2, symmetry=False))
    w = model.initial()
    for _ in range(3):  # rank 0 writes, persists and sends READY
        _, w = model.execute(w, 0)
    canon = Canonicalizer(2)
    swapped = canon.renamed(w, (1, 0))
    text = repr(swapped)
    assert "rank-00001.fito" in text and "('unit', 1, 2, 'a')" in text and "b2:" not in text
    assert "('unit', 0, 2, 'a')" not in text  # rank 0's new shard is rank 1's now, in content and hash
