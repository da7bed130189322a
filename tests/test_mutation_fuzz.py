"""Seeded mutation fuzzer (issue 9): a root with three committed steps, one mutation of one file per seed
(tests/helpers/mutations.py: raw damage, links, decision-log damage, and hostile-but-consistent forgeries
whose hashes are recomputed), then a restore with and without fallback=True into a fresh state.

Every outcome must be exactly one whole committed step (every value equal to what that step saved) or a
FitoError with the caller's state untouched; no other exception, ever; and restoring must leave every
file it did not mutate byte-identical (the other committed steps stay intact). Outcome counts per category
are printed at the end of the module (`pytest -s`)."""
from __future__ import annotations

import collections
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import fito
from fito.ckpt.inspect import open_store
from fito.testing.v1_format import save_v1
from training_state import assert_same, make_state, snapshot, train_steps

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from mutations import DB, MUTATIONS, Root  # noqa: E402
from root_files import decisions as _decisions, digests as _digests  # noqa: E402

STEPS = (1, 2, 3)
SEEDS_PER_MUTATION = 16  # x 17 mutation families, more where a family has more variants
SEEDS = {"forge_manifest": 24, "forge_v2_manifest": 20, "forge_v2_object_header": 10}  # one seed per variant  -> 280 mutated roots, each restored twice
COUNTS: collections.Counter[tuple[str, str]] = collections.Counter()  # (mutation, category) -> restores


# Forgeries that rewrite the per-rank format's manifest and shard layout (fito-manifest/1): they run on a
# root of that format, which Checkpointer.restore still reads; every other family runs on the sharded format.
V1_LAYOUT = {"swapped_units", "zeroed_header_field", "forge_manifest", "forge_header", "forge_state_tree",
             "forge_swapped_entries"}


def _pristine(root: Path, v1: bool) -> tuple[Path, dict[int, str], dict[int, Any]]:
    state, snaps = make_state(0), {}
    with fito.Checkpointer(root) as ck:
        done = 0
        for step in STEPS:
            train_steps(state, step - done)
            done = step
            save_v1(ck, step, state) if v1 else ck.save(step, state)
            snaps[step] = snapshot(state)
    storage, store = open_store(root)
    attempts = {d.epoch: d.attempt for d in store.committed()}
    store.close()
    return root, attempts, snaps


@pytest.fixture(scope="module")
def pristine_v1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str], dict[int, Any]]:
    return _pristine(tmp_path_factory.mktemp("pristine-v1") / "ckpt", v1=True)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str], dict[int, Any]]:
    root, attempts, snaps = _pristine(tmp_path_factory.mktemp("pristine") / "ckpt", v1=False)
    manifests = [json.loads(p.read_bytes()) for p in root.glob("epochs/*/*/manifest.json")]
    assert all(any("/__pack__/" in t["fqn"] for t in m["tensors"]) for m in manifests)  # packs are fuzzed too
    yield root, attempts, snaps
    totals: collections.Counter[str] = collections.Counter()
    for (_, category), n in COUNTS.items():
        totals[category] += n
    roots = sum(SEEDS.get(m, SEEDS_PER_MUTATION) for m in MUTATIONS)
    print(f"\nmutation fuzzer: {sum(totals.values())} restores of {roots} mutated roots")
    for category, n in sorted(totals.items()):
        print(f"  {category:45s} {n}")
    for mutation in sorted(MUTATIONS):
        print(f"  {mutation:26s} " + ", ".join(f"{c} {n}" for (m, c), n in sorted(COUNTS.items()) if m == mutation))


def _restore_once(root: Path, snaps: dict[int, Any], fallback: bool) -> tuple[str, str]:
    """(category, problem): problem is "" when the outcome is one of the allowed ones."""
    target = make_state(7)
    before = snapshot(target)
    try:
        with fito.Checkpointer(root) as ck:
            step = ck.restore(target, fallback=fallback)
    except fito.FitoError as exc:
        try:
            assert_same(before, snapshot(target))
        except AssertionError as where:
            return f"FitoError:{type(exc).__name__}", f"{type(exc).__name__} but the caller's state changed at {where}: {exc}"
        return f"FitoError:{type(exc).__name__}", ""
    except Exception as exc:  # noqa: BLE001 - the property under test: nothing but FitoError, ever
        return f"NOT a FitoError:{type(exc).__name__}", f"{type(exc).__name__}: {str(exc)[:300]}"
    if step not in snaps:
        return "restored an unknown step", f"restore returned step {step}, committed were {sorted(snaps)}"
    try:
        assert_same(snaps[step], snapshot(target))
    except AssertionError as where:
        return "restored WRONG values", f"step {step} restored, but {where} differs from what step {step} saved"
    newest = max(snaps)
    if step == newest:
        return "restored-newest", ""
    return ("restored-older-by-fallback" if fallback else "restored-older-without-fallback"), ""


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_every_outcome_is_one_whole_step_or_a_fito_error(pristine, request, tmp_path, mutation):
    source, attempts, snaps = request.getfixturevalue("pristine_v1") if mutation in V1_LAYOUT else pristine
    problems = []
    for seed in range(SEEDS.get(mutation, SEEDS_PER_MUTATION)):
        rng = random.Random(f"{mutation}-{seed}")
        case = tmp_path / f"{seed}"
        root, outside = case / "ckpt", case / "outside"
        outside.mkdir(parents=True)
        shutil.copytree(source, root, symlinks=True)
        touched = set(MUTATIONS[mutation](rng, Root(root, attempts, outside, seed)))
        files_before, log_before = _digests(root, touched), _decisions(root)
        for fallback in (False, True):
            category, problem = _restore_once(root, snaps, fallback)
            COUNTS[mutation, category] += 1
            if problem:
                problems.append(f"seed {seed} fallback={fallback}: {problem}")
        if _digests(root, touched) != files_before:
            problems.append(f"seed {seed}: restore changed files it should only read")
        if DB not in touched and _decisions(root) != log_before:
            problems.append(f"seed {seed}: restore changed the decision records")
        shutil.rmtree(case)
    assert not problems, f"{mutation}: {len(problems)} bad outcomes:\n" + "\n".join(problems)
